"""The runtime's threads: numba's for the compiled loops, numpy's BLAS (the int8 and float GEMMs) on one, and
samples run side by side on worker threads (in_order).

OpenBLAS keeps its own pthread pool, which spins between calls. Beside numba's OpenMP workers and, in any compile,
torch's OpenMP pool in the same process, the pools fight for the cores: on the 2-core benchmark machine the int8
MobileNetV2 took 144 ms at 2 numba + 2 BLAS threads with torch loaded, 19 ms with BLAS on one (numba's workers do
the parallel part, benchmarks/bench_runtime.py). onnxruntime and XNNPACK likewise run one thread pool of their own.
The limit is set for the length of one run or node evaluation, through threadpoolctl (a few microseconds), so
the caller's numpy keeps its threads.

Many samples (calibration, bias correction, the fidelity guard, validate) are better spread over the cores a sample
each than a layer each: a layer's parallel region forks and joins for every op, and MobileNetV2's 7x7 and 14x14
layers give two threads too little work each (float MobileNetV2 at 224x224 ran 15.4 ms a sample on one thread,
14.0 on two numba threads, 8.6 on two samples side by side, one numba thread each). The compiled kernels release
the GIL (nogil), so Python threads run them at once; each worker runs numba's loops on one thread, and every
sample's bits are those of a run of its own, whichever worker ran it. onnxruntime's and XNNPACK's sessions
parallelise within an op only; a batch of samples is their caller's to split.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import numba

_BLAS = None  # threadpoolctl's controller of the BLAS libraries numpy loaded, made on first use
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0  # runs inside blas_on_one_thread now, on any thread: the first sets the limit, the last lifts it
_BLAS_LIMIT = None


@contextlib.contextmanager
def blas_on_one_thread():
    """BLAS on one thread while any thread is inside: threadpoolctl's limit is process-wide, so nested and
    concurrent runs share one limit, lifted by the last to leave (two limits restoring each other's saved thread
    counts out of order would leave numpy's BLAS on one thread for good)."""
    global _BLAS, _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController().select(user_api="blas")
        if _BLAS_USERS == 0:
            _BLAS_LIMIT = _BLAS.limit(limits=1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMIT.restore_original_limits()
                _BLAS_LIMIT = None


def sample_workers() -> int:
    """How many samples to run at once: numba's thread count (NUMBA_NUM_THREADS, numba.set_num_threads), or 1
    where numba's threading layer is workqueue, which aborts the process when two threads enter parallel loops
    at once (omp and tbb are thread-safe). Asking for the layer starts it, as the first parallel loop would."""
    threads = numba.get_num_threads()
    if threads == 1:
        return 1
    if _layer() == "workqueue":
        return 1
    return threads


def _layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel loop has run yet: run one, which loads the layer numba picks
        _start_layer(1)
        return numba.threading_layer()


@numba.njit(parallel=True, cache=True)
def _start_layer(n):
    total = 0
    for i in numba.prange(n):
        total += i
    return total


T = TypeVar("T")
R = TypeVar("R")


class Workers:
    """Worker threads kept for several in_order calls in a row (bias correction steps its chunks ~50 times, once
    per corrected layer): the threads, and numba's per-thread state in each, start once, not per call. A context
    manager; `count` (default sample_workers()) of 1 starts none, and the jobs run in the caller's thread."""

    def __init__(self, count: int | None = None):
        self.count = sample_workers() if count is None else count
        self.pool = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Workers":
        if self.count > 1:
            self._stack.enter_context(blas_on_one_thread())
            self.pool = self._stack.enter_context(ThreadPoolExecutor(self.count, thread_name_prefix="mcc-sample"))
        return self

    def __exit__(self, *exc):
        self.pool = None
        return self._stack.__exit__(*exc)


def in_order(fn: Callable[[T], R], jobs: Iterable[T], workers: "int | Workers | None" = None) -> Iterator[R]:
    """fn(job) for each job, yielded in the jobs' order, `workers` (default sample_workers(); or the threads of a
    Workers) at a time on worker threads whose numba loops run on one thread; with one worker, in the caller's
    thread as it is. At most two jobs per worker run ahead of the one the caller waits for, so results (a chunk's
    activations) do not pile up. BLAS stays on one thread throughout (blas_on_one_thread)."""
    if not isinstance(workers, Workers):
        with Workers(workers) as own:
            yield from in_order(fn, jobs, own)
        return
    if workers.pool is None:
        yield from map(fn, jobs)
        return

    def one_thread(job):
        numba.set_num_threads(1)  # numba's thread count is per calling thread
        return fn(job)

    pending: collections.deque = collections.deque()
    try:
        for job in jobs:
            pending.append(workers.pool.submit(one_thread, job))
            if len(pending) > 2 * workers.count:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
