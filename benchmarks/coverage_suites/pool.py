"""Run cases in worker processes, `jobs` at a time, so that a hang or a crash is one recorded result.

Each worker runs one case at a time and sends each cell as soon as it is judged; a worker that sends nothing for
`timeout` seconds is killed (the case's remaining cells record the timeout), one that dies (a segfault in a
native library, the out-of-memory killer) records how it died, and a fresh worker takes its place. Workers are
spawned, not forked: the parent has imported onnx (and maybe torch), whose threads a fork would not carry along.
They run with one thread each (torch, numba, onnxruntime's default pool aside) and their stdout and stderr go to
/dev/null, so the parent's progress lines stay readable.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait

from .common import COLUMNS, Case, Cell


def _worker(conn) -> None:
    os.environ["NUMBA_NUM_THREADS"] = "1"
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    import warnings

    warnings.simplefilter("ignore")
    from mcc.errors import quiet_libraries

    from . import SUITES

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    with quiet_libraries():
        while True:
            case = conn.recv()
            if case is None:
                return
            for column, cell in SUITES[case.suite].run(case):
                conn.send((column, cell))
            conn.send(None)


class _Worker:
    def __init__(self, context):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.case: Case | None = None
        self.cells: dict[str, Cell] = {}
        self.deadline = 0.0

    def give(self, case: Case, timeout: float) -> None:
        self.case, self.cells, self.deadline = case, {}, time.monotonic() + timeout
        self.conn.send(case)

    def finish(self, why: str) -> dict[str, Cell]:
        """The case's cells, those it did not send recorded as crashed with `why`."""
        return {c: self.cells.get(c, Cell("crash", why)) for c in COLUMNS}

    def stop(self, grace: float = 0.0) -> None:
        """End the worker: after `grace` seconds to exit by itself, by SIGKILL."""
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"worker killed by signal {signal.Signals(-code).name}"
    return f"worker exited with code {code}"


def run_cases(cases: list[Case], jobs: int, timeout: float, report=None) -> dict[tuple[str, str], dict[str, Cell]]:
    """{(suite, case name): {column: cell}} for every case; `report(done, total, case, cells)` after each."""
    context = multiprocessing.get_context("spawn")
    pending = list(reversed(cases))
    workers = [_Worker(context) for _ in range(min(jobs, len(cases)))]
    results: dict[tuple[str, str], dict[str, Cell]] = {}

    def record(worker: _Worker, cells: dict[str, Cell]) -> None:
        results[(worker.case.suite, worker.case.name)] = cells
        if report:
            report(len(results), len(cases), worker.case, cells)
        worker.case = None

    try:
        for w in workers:
            if pending:
                w.give(pending.pop(), timeout)
        while any(w.case is not None for w in workers):
            busy = [w for w in workers if w.case is not None]
            ready = wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - time.monotonic()))
            for i, w in enumerate(workers):
                if w.case is None:
                    continue
                replace = None
                if w.conn in ready:
                    try:
                        message = w.conn.recv()
                    except (EOFError, OSError):
                        w.process.join(5)
                        replace = _death(w.process)
                    else:
                        if message is None:
                            record(w, w.finish("no result"))
                        else:
                            w.cells[message[0]] = message[1]
                            w.deadline = time.monotonic() + timeout
                elif time.monotonic() >= w.deadline:
                    replace = f"timeout: no result within {timeout:g} s"
                if replace is not None:
                    record(w, w.finish(replace))
                    w.stop()
                    w = workers[i] = _Worker(context)
                if w.case is None and pending:
                    w.give(pending.pop(), timeout)
        for w in workers:
            w.conn.send(None)
    finally:
        for w in workers:
            w.stop(grace=10)
    return results
