"""Targets: an ISA and a number format, which pick the pass pipeline and the backend (DESIGN.md §4).

As in TVM Relax, a target is nothing but data: a pipeline of registered pass names plus a backend name. Adding a
target is adding a row here, never a conditional in a pass or a backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MccError

CANONICALIZE = ("fold_constants", "eliminate_dead", "fold_batchnorm", "fold_constants")
# Compression rewrites of the float graph (issue 18; no-ops unless their options are given): after batch norms are
# folded, so they split the folded weights, and before anything target-specific. Depthwise-separable replacement
# comes first, so that low_rank can still split the pointwise convs it makes.
COMPRESS = ("depthwise_separable", "low_rank")
TFLITE_TAIL = ("to_nhwc", "legalize_tflite", "fuse_activations", "fold_constants", "eliminate_dead")
ARM_FP32 = CANONICALIZE + COMPRESS + TFLITE_TAIL
# int8 only: transposed convolution as conv2d over the zero-upsampled input (passes/transpose_conv_to_conv.py).
ARM_INT8 = CANONICALIZE + COMPRESS + ("transpose_conv_to_conv",) + TFLITE_TAIL + (
    "cross_layer_equalization", "quantize_int8", "eliminate_dead")
# The x86 targets run the arm pipelines unchanged, then move the graph to ONNX's NCHW: one set of integers.
ONNX_TAIL = ("to_nchw", "legalize_onnx")
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}


@dataclass(frozen=True)
class Target:
    name: str
    isa: str
    number_format: str
    backend: str
    pipeline: tuple[str, ...]
    description: str
    needs_calibration: bool = False

    @property
    def suffix(self) -> str:
        """The file suffix of what the target's backend writes."""
        return SUFFIX[self.backend]


TARGETS = {t.name: t for t in [
    Target("arm-fp32", "arm64", "float32", "tflite", ARM_FP32,
           "float32 TFLite for ARM CPUs (LiteRT with XNNPACK); also runs on x86"),
    Target("arm-int8", "arm64", "int8", "tflite", ARM_INT8,
           "full-integer int8 TFLite (per-channel weights, asymmetric activations); needs --calib",
           needs_calibration=True),
    Target("x86-fp32", "x86-64", "float32", "onnx", ARM_FP32 + ONNX_TAIL,
           "float32 ONNX (opset 21) for onnxruntime on x86 CPUs; the arm-fp32 graph in NCHW"),
    Target("x86-int8", "x86-64", "int8", "onnx", ARM_INT8 + ONNX_TAIL,
           "int8 ONNX in onnxruntime's integer operators (QLinearConv, QGemm, ...) with arm-int8's weights, "
           "scales and zero points; needs --calib", needs_calibration=True),
]}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise MccError(f"unknown target '{name}'; known targets: {', '.join(sorted(TARGETS))} (see `mcc targets`)")
    return TARGETS[name]
