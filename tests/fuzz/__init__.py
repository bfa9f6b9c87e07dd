"""Fuzzers for mcc's readers: every bad input must give an MccError, never another exception, a hang or a crash.

One module per reader (onnx_fuzz, tflite_fuzz, pt2_fuzz, npz_fuzz), each with a `READER`: the seeds it builds
(small valid files, made in code), a structure-aware mutator (fields of the format, not only bytes) and the
function(s) it feeds the result to. runner.py runs a reader in worker processes and writes the summary.
`python -m tests.fuzz --minutes 30` runs them all; tests/test_fuzz_short.py runs a few hundred inputs each.
"""

from __future__ import annotations

import importlib

NAMES = ("onnx", "tflite", "pt2", "npz")


def reader(name: str):
    """The `READER` of one fuzzer module (imported on demand: each pulls in its own framework)."""
    return importlib.import_module(f"{__name__}.{name}_fuzz").READER
