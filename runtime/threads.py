"""The runtime's threads: numba's for the compiled loops, and numpy's BLAS (the int8 and float GEMMs) on one.

OpenBLAS keeps its own pthread pool, which spins between calls. Beside numba's OpenMP workers and, in any compile,
torch's OpenMP pool in the same process, the pools fight for the cores: on the 2-core benchmark machine the int8
MobileNetV2 took 144 ms at 2 numba + 2 BLAS threads with torch loaded, 19 ms with BLAS on one (numba's workers do
the parallel part, benchmarks/bench_runtime.py). onnxruntime and XNNPACK likewise run one thread pool of their own.
The limit is set for the length of one run or node evaluation, through threadpoolctl (a few microseconds), so
the caller's numpy keeps its threads.
"""

from __future__ import annotations

import contextlib

_BLAS = None  # threadpoolctl's controller of the BLAS libraries numpy loaded, made on first use


@contextlib.contextmanager
def blas_on_one_thread():
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController().select(user_api="blas")
    with _BLAS.limit(limits=1):
        yield
