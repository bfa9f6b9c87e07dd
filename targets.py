"""Targets: an ISA and a number format, which pick the pass pipeline and the backend (DESIGN.md §4).

As in TVM Relax, a target is nothing but data: a pipeline of registered pass names plus a backend name. Adding a
target is adding a row here, never a conditional in a pass or a backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MccError

CANONICALIZE = ("fold_constants", "eliminate_dead", "fold_batchnorm", "fold_constants")
TFLITE_TAIL = ("to_nhwc", "legalize_tflite", "fuse_activations", "fold_constants", "eliminate_dead")


@dataclass(frozen=True)
class Target:
    name: str
    isa: str
    number_format: str
    backend: str
    pipeline: tuple[str, ...]
    description: str
    needs_calibration: bool = False


TARGETS = {t.name: t for t in [
    Target("arm-fp32", "arm64", "float32", "tflite", CANONICALIZE + TFLITE_TAIL,
           "float32 TFLite for ARM CPUs (LiteRT with XNNPACK); also runs on x86"),
    Target("arm-int8", "arm64", "int8", "tflite",
           CANONICALIZE + TFLITE_TAIL + ("cross_layer_equalization", "quantize_int8", "eliminate_dead"),
           "full-integer int8 TFLite (per-channel weights, asymmetric activations); needs --calib",
           needs_calibration=True),
]}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise MccError(f"unknown target '{name}'; known targets: {', '.join(sorted(TARGETS))} (see `mcc targets`)")
    return TARGETS[name]
