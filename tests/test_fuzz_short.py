"""A short seeded run of each reader's fuzzer (tests/fuzz): every input gives MccError or reads, none crashes or hangs.

The long run is `python -m tests.fuzz --minutes 30`; this one replays the first inputs of seed 0 (the same inputs
every time) in one worker process, a few seconds per reader. The .pt2 fuzzer runs fewer: an archive that survives
its mutations is lowered through torch's decompositions, a quarter of a second each.
"""

import pytest
from fuzz import reader
from fuzz.runner import run_reader

INPUTS = {"onnx": 400, "tflite": 300, "pt2": 24, "npz": 400}

# Crashes the fuzzer found in the ONNX loader (frontend/onnx_loader.py, onnx_lowering.py), which another change owns;
# tests/test_fuzz_regressions.py lists them. Remove this mark when they are fixed.
ONNX_OPEN = pytest.mark.xfail(reason="ONNX loader crashes found by the fuzzer are being fixed in the ONNX frontend",
                              strict=False)


@pytest.mark.parametrize("name", [pytest.param("onnx", marks=ONNX_OPEN), "tflite", "pt2", "npz"])
def test_short_fuzz_run(name, tmp_path):
    r = run_reader(reader(name), seed=0, inputs=INPUTS[name], jobs=1, timeout=20, crash_dir=tmp_path)
    assert r.inputs == INPUTS[name]
    assert not r.generator_errors, r.generator_tracebacks
    found = "\n".join(f"{f.signature} ({f.count}x): {f.message}" for f in r.findings.values())
    assert r.crashes == 0 and r.hangs == 0, f"{name}: {r.crashes} crashes, {r.hangs} hangs:\n{found}"
