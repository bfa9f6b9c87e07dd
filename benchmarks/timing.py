"""The one way benchmarks time a call: one warm-up (numba compilation, XNNPACK weight packing), then the median."""

import statistics
import timeit


def median_seconds(fn, repeat: int) -> float:
    fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))
