# find_package(mcc) entry point: `cmake -Dmcc_DIR="$(mcc --cmake-dir)"` (or include() mcc.cmake directly).
include("${CMAKE_CURRENT_LIST_DIR}/mcc.cmake")
set(mcc_FOUND TRUE)
