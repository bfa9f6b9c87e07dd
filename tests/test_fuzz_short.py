"""A short seeded run of each reader's fuzzer (tests/fuzz): every input gives MccError or reads, none crashes or hangs.

The long run is `python -m tests.fuzz --minutes 30`; this one replays the first inputs of seed 0 (the same inputs
every time) in one worker process, a few seconds per reader. The .pt2 fuzzer runs fewer: an archive that survives
its mutations is lowered through torch's decompositions, a quarter of a second each.
"""

import os
import signal
import time

import pytest
from fuzz import reader
from fuzz.runner import Reader, input_rng, run_reader

from mcc.errors import MccError

INPUTS = {"onnx": 400, "tflite": 300, "pt2": 24, "npz": 400}


@pytest.mark.parametrize("name", ["onnx", "tflite", "pt2", "npz"])
def test_short_fuzz_run(name, tmp_path):
    r = run_reader(reader(name), seed=0, inputs=INPUTS[name], jobs=1, timeout=20, crash_dir=tmp_path)
    assert r.inputs == INPUTS[name]
    assert not r.generator_errors, r.generator_tracebacks
    found = "\n".join(f"{f.signature} ({f.count}x): {f.message}" for f in r.findings.values())
    assert r.crashes == 0 and r.hangs == 0, f"{name}: {r.crashes} crashes, {r.hangs} hangs:\n{found}"


# ---- the runner itself: what it counts as a crash or a hang -------------------------------------------------
def _kind(seeds, rng):
    return bytes([rng.choice([0, 0, 0, 1, 1, 2, 3, 4])])


def _fake_target(data, path):
    """0: reads, 1: MccError, 2: a crash (ValueError), 3: a hang, 4: a hard crash (the worker segfaults)."""
    if path.read_bytes() != data:
        raise AssertionError("the input was not written where the target reads it")
    if data == b"\x01":
        raise MccError("bad input", path=path)
    if data == b"\x02":
        raise ValueError("not an MccError")
    if data == b"\x03":
        time.sleep(60)
    if data == b"\x04":
        os.kill(os.getpid(), signal.SIGSEGV)


def test_runner_counts_crashes_hangs_and_dead_workers(tmp_path):
    """Each kind of outcome is counted under its signature, one input saved per signature, and a worker that hangs
    or dies is replaced without losing the inputs after it."""
    n = 16
    kinds = [_kind(None, input_rng("fake", 3, i))[0] for i in range(n)]
    assert {2, 3, 4} <= set(kinds)
    reader = Reader("fake", ".bin", lambda: None, _kind, (("target", _fake_target),))
    r = run_reader(reader, seed=3, inputs=n, jobs=2, timeout=1, crash_dir=tmp_path)
    assert r.inputs == n and r.hangs == kinds.count(3) and r.crashes == kinds.count(2) + kinds.count(4)
    sigs = {f.signature: f.count for f in r.findings.values()}
    assert sigs == {"target: ValueError at (no mcc frame)": kinds.count(2),
                    "fake: hang over 1 s at (no mcc frame)": kinds.count(3),
                    "fake: worker died (signal SIGSEGV) at (no mcc frame)": kinds.count(4)}
    saved = sorted(p.read_bytes() for p in (tmp_path / "fake").glob("*.bin"))
    assert saved == [b"\x02", b"\x03", b"\x04"]
