"""The CPU numba compiles the kernels for. Its features set the width of the float register tiles (conv.py) and
whether int8 products run on VNNI dot products (int8_vnni.py), so a kernel choice never depends on anything but
the compile target: a numba cache made for one CPU is never run with choices made for another."""

from __future__ import annotations

import llvmlite.binding as llvm
import numba


def target_features() -> set[str]:
    """LLVM's feature flags ("+avx512f", ...) of the CPU numba compiles for: NUMBA_CPU_FEATURES, else the host's,
    else (a NUMBA_CPU_NAME without features, as for a portable cache) none beyond the baseline."""
    config = numba.config
    if config.CPU_FEATURES:
        features = config.CPU_FEATURES
    else:
        features = "" if config.CPU_NAME not in (None, "host") else llvm.get_host_cpu_features().flatten()
    return set(features.split(","))
