"""The suites of benchmarks/coverage.py: each lists its cases and runs one case into its four cells.

`cases(quick)` returns the suite's cases (with --quick, a small sample that still touches every kind of case);
`run(case)` yields (column, Cell) for the four target columns of common.COLUMNS, one at a time, so that the pool
keeps what a case produced before a hang or a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import onnx_suites, torch_suites


@dataclass(frozen=True)
class Suite:
    cases: Callable
    run: Callable
    description: str


SUITES = {
    "onnx-node": Suite(onnx_suites.node_cases, onnx_suites.run_node_case,
                       "onnx.backend.test.case.node.collect_testcases(None), through mcc.onnx_backend"),
    "onnx-models": Suite(onnx_suites.model_cases, onnx_suites.run_model_case,
                         "onnx/backend/test/data: light, pytorch-converted, pytorch-operator, simple"),
    "pytorchcv": Suite(torch_suites.pytorchcv_cases,
                       lambda case: torch_suites.run_torch_case(case, torch_suites.build_pytorchcv),
                       "CNN families of pytorchcv 0.0.74, random weights, exported with torch.export"),
    "handwritten": Suite(torch_suites.handwritten_cases,
                         lambda case: torch_suites.run_torch_case(case, torch_suites.build_handwritten),
                         "tests/handwritten_models.py's MODELS, exported with torch.export"),
}


def available() -> list[str]:
    """The suites a default run includes: handwritten only when tests/handwritten_models.py exists."""
    return [name for name in SUITES if name != "handwritten" or torch_suites.HANDWRITTEN.exists()]
