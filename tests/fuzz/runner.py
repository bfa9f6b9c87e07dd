"""Running one reader's fuzzer: seeded inputs in forked worker processes, crashes and hangs recorded by signature.

Input `i` of a run is a pure function of (reader, seed, i): its generator gets `random.Random("reader:seed:i")`, so
the same seed gives the same inputs whatever the number of workers or their speed, and the parent can rebuild an
input a worker was killed on. Workers are forked (they share the seeds the parent built, and the imports), take
the indices `slot, slot + jobs, ...`, and publish in shared memory the index they are on and whether they are
making it or running it; the parent times that on its own clock. It kills a worker that spends longer than the
per-input timeout running one input (a hang; SIGUSR1 first, so faulthandler writes where it was), restarts a
worker that died (a segfault or an abort: a crash), and each new worker continues after the input that stopped
the last one. A worker's address space is capped, so an input that makes a reader allocate without bound fails
with MemoryError (a crash) instead of taking the shared machine down.

A crash is any exception other than MccError. Its signature is the exception type and the innermost frame in mcc
itself (file:line), prefixed with the target that raised it; one input per signature is saved.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing as mp
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable

import mcc
from mcc.errors import MccError

MCC_ROOT = Path(mcc.__file__).resolve().parent
TESTS_ROOT = MCC_ROOT / "tests"
MEMORY_HEADROOM = 4 << 30   # bytes a worker may map beyond what it had when forked
GENERATOR_STALL = 120.0     # seconds after which making or writing one input counts as a fuzzer bug


@dataclass
class Reader:
    """A fuzzer: `build()` makes the seeds once in the parent; `generate(seeds, rng)` one input's bytes; input `i`
    runs through `targets[i % len(targets)]`, called as target(data, path) with the bytes already written at path."""
    name: str
    suffix: str
    build: Callable[[], object]
    generate: Callable[[object, random.Random], bytes]
    targets: tuple[tuple[str, Callable[[bytes, Path], object]], ...]
    prepare: Callable[[Path, object], None] | None = None   # side files a worker's folder needs, from the seeds


@dataclass
class Finding:
    signature: str
    kind: str            # "crash" or "hang"
    message: str
    first_index: int
    count: int = 0
    saved: str | None = None


@dataclass
class Result:
    reader: str
    seed: int
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    generator_errors: int = 0
    seconds: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)
    generator_tracebacks: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


# ---- mutation helpers shared by the fuzzers ------------------------------------------------------------------
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095, 4096, 32767, 32768,
               65535, 65536, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


def interesting_int(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi]: a boundary value (0, powers of two and their neighbours, lo, hi, +-1) or any."""
    pool = [v for v in INTERESTING if lo <= v <= hi] + [v for v in (-1, -2, lo, hi, lo + 1, hi - 1) if lo <= v <= hi]
    return rng.choice(pool) if rng.random() < 0.8 else rng.randint(lo, hi)


def flip_bytes(data: bytes, rng: random.Random, *, keep: int = 0) -> bytes:
    """A few random byte edits (flip a bit, set a byte, set a 4-byte word to a boundary value, drop or insert
    bytes), leaving the first `keep` bytes alone."""
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        if len(out) <= keep:
            break
        k = rng.randrange(keep, len(out))
        choice = rng.randrange(5)
        if choice == 0:
            out[k] ^= 1 << rng.randrange(8)
        elif choice == 1:
            out[k] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif choice == 2:
            out[k:k + 4] = interesting_int(rng, 0, (1 << 32) - 1).to_bytes(4, "little")
        elif choice == 3:
            del out[k:k + rng.randrange(1, 16)]
        else:
            out[k:k] = rng.randbytes(rng.randrange(1, 16))
    return bytes(out)


def input_rng(reader: str, seed: int, index: int) -> random.Random:
    """The generator of input `index`: seeded from a string (hashed with SHA-512, the same in every process)."""
    return random.Random(f"{reader}:{seed}:{index}")


def _in_mcc(filename: str) -> bool:
    p = Path(filename)
    return p.is_relative_to(MCC_ROOT) and not p.is_relative_to(TESTS_ROOT)


def _where(filename: str, line) -> str:
    return f"{Path(filename).relative_to(MCC_ROOT)}:{line}"


def signature(e: BaseException) -> str:
    """Exception type + innermost mcc frame: what tells one bug from another across inputs."""
    frames = traceback.extract_tb(e.__traceback__)
    inner = next((f for f in reversed(frames) if _in_mcc(f.filename)), None)
    return f"{type(e).__name__} at {_where(inner.filename, inner.lineno) if inner else '(no mcc frame)'}"


def _read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


_DUMP_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _dump_signature(log: Path, what: str) -> str:
    """`what` + the innermost mcc frame of the last faulthandler dump in a worker's log (most recent call first)."""
    text = _read(log)
    start = text.rfind("most recent call first")
    for m in _DUMP_FRAME.finditer(text[start:] if start >= 0 else ""):
        if _in_mcc(m.group(1)):
            return f"{what} at {_where(m.group(1), m.group(2))}"
    return f"{what} at (no mcc frame)"


GENERATING, RUNNING, IDLE = 1, 2, 0


class _Shared:
    """Per worker slot: the index it is on, what it is doing with it (GENERATING or writing the input, RUNNING the
    target, IDLE) and how many inputs it finished. Only integers cross processes: the parent times each
    (index, phase) pair on its own clock."""

    def __init__(self, ctx, jobs: int):
        self.current = ctx.RawArray("q", jobs)
        self.phase = ctx.RawArray("i", jobs)
        self.done = ctx.RawArray("q", jobs)


def _quiet_worker(log: Path) -> None:
    """Library chatter (C++ prints, warnings, log records) goes to the worker's log, not the terminal."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    faulthandler.enable(file=sys.stderr, all_threads=False)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=False)


def _limit_memory() -> None:
    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = mapped + MEMORY_HEADROOM
        if hard == resource.RLIM_INFINITY or cap < hard:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        pass


def _work(reader: Reader, seeds, seed: int, slot: int, jobs: int, start: int, limit: int, deadline: float,
          shared: _Shared, conn, folder: Path) -> None:
    _quiet_worker(folder / "log.txt")
    _limit_memory()
    if reader.prepare is not None:
        reader.prepare(folder, seeds)
    path = folder / f"input{reader.suffix}"
    sent: set[str] = set()
    i = start
    while i < limit and time.monotonic() < deadline:
        shared.phase[slot] = GENERATING
        shared.current[slot] = i
        try:
            data = reader.generate(seeds, input_rng(reader.name, seed, i))
        except Exception:
            conn.send(("generator", i, traceback.format_exc()))
            data = None
        if data is not None:
            name, target = reader.targets[i % len(reader.targets)]
            path.write_bytes(data)
            shared.phase[slot] = RUNNING
            try:
                target(data, path)
            except MccError:
                pass
            except (Exception, SystemExit) as e:  # noqa: BLE001 -- anything but MccError breaks the promise
                sig = f"{name}: {signature(e)}"
                new = sig not in sent
                sent.add(sig)
                message = f"{type(e).__name__}: {e}"[:800]
                conn.send(("crash", i, sig, message, traceback.format_exc() if new else None, data if new else None))
        shared.phase[slot] = IDLE
        shared.done[slot] += 1
        i += jobs
    conn.send(("end", i))
    conn.close()


def git_commit() -> str:
    """The mcc commit the run tested, marked when the working tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=MCC_ROOT, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=MCC_ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if head and dirty else head or "unknown"


def _slug(sig: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", sig).strip("_")[:120]


class _Run:
    def __init__(self, reader: Reader, seeds, seed: int, crash_dir: Path | None, result: Result):
        self.reader, self.seeds, self.seed, self.result = reader, seeds, seed, result
        self.crash_dir = Path(crash_dir) / reader.name if crash_dir is not None else None

    def record(self, kind: str, index: int, sig: str, message: str, details: str | None, data: bytes | None):
        r = self.result
        if kind == "hang":
            r.hangs += 1
        else:
            r.crashes += 1
        f = r.findings.get(sig)
        if f is None:
            f = r.findings[sig] = Finding(sig, kind, message, index)
        f.count += 1
        if f.saved is None and self.crash_dir is not None:
            if data is None:   # killed worker: rebuild its input from the seed
                data = self.reader.generate(self.seeds, input_rng(self.reader.name, self.seed, index))
            self.crash_dir.mkdir(parents=True, exist_ok=True)
            base = self.crash_dir / _slug(sig)
            (base.parent / (base.name + self.reader.suffix)).write_bytes(data)
            (base.parent / (base.name + ".txt")).write_text(
                f"reader {self.reader.name}, seed {self.seed}, input {index}\n{sig}\n{message}\n\n{details or ''}")
            f.saved = str(base.parent / (base.name + self.reader.suffix))


def run_reader(reader: Reader, *, seed: int = 0, minutes: float | None = None, inputs: int | None = None,
               jobs: int = 2, timeout: float = 10.0, crash_dir: Path | None = None, seeds=None) -> Result:
    """Run `reader`'s fuzzer until `inputs` inputs ran or `minutes` passed (whichever first)."""
    if minutes is None and inputs is None:
        raise ValueError("give minutes or inputs")
    if seeds is None:
        seeds = reader.build()
    result = Result(reader.name, seed)
    run = _Run(reader, seeds, seed, crash_dir, result)
    ctx = mp.get_context("fork")
    shared = _Shared(ctx, jobs)
    limit = inputs if inputs is not None else sys.maxsize
    t0 = time.monotonic()
    deadline = t0 + minutes * 60 if minutes is not None else float("inf")
    killed = 0   # inputs in flight when their worker was killed or died
    # Inputs are written to memory (tmpfs) where there is one: a busy disk can stall an open() for seconds.
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=f"mcc-fuzz-{reader.name}-", dir=shm) as tmp:
        folders = [Path(tmp) / f"worker{slot}" for slot in range(jobs)]
        for folder in folders:
            folder.mkdir()
        workers: dict[int, tuple] = {}

        def start(slot: int, first: int) -> None:
            if first >= limit or time.monotonic() >= deadline:
                return
            parent_end, child_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_work, args=(reader, seeds, seed, slot, jobs, first, limit, deadline, shared,
                                                child_end, folders[slot]), daemon=True)
            shared.phase[slot] = IDLE
            p.start()
            child_end.close()
            workers[slot] = (p, parent_end)

        def handle(conn) -> bool:
            """Record a worker's messages; True once it said it ended."""
            ended = False
            try:
                while conn.poll():
                    msg = conn.recv()
                    if msg[0] == "crash":
                        _, index, sig, message, tb, data = msg
                        run.record("crash", index, sig, message, tb, data)
                    elif msg[0] == "generator":
                        result.generator_errors += 1
                        if len(result.generator_tracebacks) < 5:
                            result.generator_tracebacks.append(f"input {msg[1]}:\n{msg[2]}")
                    elif msg[0] == "end":
                        ended = True
            except (EOFError, OSError):
                pass
            return ended

        def stop(slot: int, kind: str) -> None:
            """Record what stopped the worker's input (a hang or a hard crash) and start a successor after it."""
            nonlocal killed
            p, conn = workers.pop(slot)
            index = shared.current[slot]
            log = folders[slot] / "log.txt"
            if kind in ("hang", "stall"):
                os.kill(p.pid, signal.SIGUSR1)   # faulthandler writes the stack to the log
                time.sleep(0.5)
                p.kill()
            p.join()
            handle(conn)
            conn.close()
            if kind == "stall":
                result.generator_errors += 1
                result.generator_tracebacks.append(f"input {index}: making or writing it took over "
                                                   f"{GENERATOR_STALL:g} s\n{_read(log)[-4000:]}")
                log.write_text("")
                start(slot, index + jobs)
                return
            if kind == "hang":
                sig = _dump_signature(log, f"hang over {timeout:g} s")
                message = f"input {index} ran over {timeout:g} s"
            else:
                code = p.exitcode
                what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                sig = _dump_signature(log, f"worker died ({what})")
                message = f"the worker died ({what}) on input {index}"
            tail = _read(log)[-4000:]
            log.write_text("")
            run.record("hang" if kind == "hang" else "crash", index, f"{reader.name}: {sig}", message, tail, None)
            killed += 1
            start(slot, index + jobs)

        for slot in range(jobs):
            start(slot, slot)
        seen = [(-1, IDLE, 0.0)] * jobs   # per slot: (index, phase) last observed and since when
        while workers:
            wait([c for _, c in workers.values()] + [p.sentinel for p, _ in workers.values()], timeout=0.25)
            for slot in list(workers):
                now, key = time.monotonic(), (shared.current[slot], shared.phase[slot])
                if key != seen[slot][:2]:
                    seen[slot] = (*key, now)
                phase, since = seen[slot][1:]
                p, conn = workers[slot]
                if handle(conn) or (not p.is_alive() and handle(conn)):
                    p.join()
                    conn.close()
                    del workers[slot]
                elif not p.is_alive():
                    stop(slot, "died")
                elif phase == RUNNING and now - since > timeout:
                    stop(slot, "hang")
                elif phase == GENERATING and now - since > GENERATOR_STALL:
                    stop(slot, "stall")
    result.inputs = sum(shared.done) + killed
    result.seconds = time.monotonic() - t0
    return result


def summary(results: list[Result], *, command: str, commit: str, timeout: float, jobs: int) -> str:
    """The Markdown summary of a run: one row per reader, then every signature found."""
    lines = ["# Fuzzing mcc's readers", "",
             f"`{command}` at mcc commit {commit}, {time.strftime('%Y-%m-%d %H:%M %Z')}: {jobs} worker process(es), "
             f"a hang is an input running over {timeout:g} s. A crash is any exception other than MccError "
             "(signature: the type and the innermost mcc frame).", "",
             "| reader | inputs run | crashes | hangs | distinct signatures | inputs/s | seed | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.reader} | {r.inputs:,} | {r.crashes:,} | {r.hangs:,} | {len(r.findings)} | "
                     f"{r.rate:,.0f} | {r.seed} | {r.seconds:,.0f} |")
    for r in results:
        if r.findings or r.generator_errors:
            lines += ["", f"## {r.reader}", ""]
            if r.generator_errors:
                lines.append(f"- fuzzer bug: {r.generator_errors} input(s) could not be generated")
            for f in sorted(r.findings.values(), key=lambda f: -f.count):
                saved = f", saved as {f.saved}" if f.saved else ""
                lines.append(f"- `{f.signature}` ({f.kind}, {f.count} input(s), first input {f.first_index}{saved}): "
                             f"{f.message.splitlines()[0] if f.message else ''}")
    return "\n".join(lines) + "\n"
