"""Targets: an ISA and a number format, which pick the pass pipeline and the backend (DESIGN.md §4).

As in TVM Relax, a target is nothing but data: a pipeline of registered pass names plus a backend name. Adding a
target is adding a row here, never a conditional in a pass or a backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MccError

CANONICALIZE = ("fold_constants", "eliminate_dead", "fold_batchnorm", "fold_constants")
# Compression rewrites of the float graph (issues 17, 18; each a no-op unless its options are given): after batch
# norms are folded, so they work on the folded weights, and before anything target-specific. Structured pruning
# (passes/prune.py) first, as it decides which channels exist; depthwise-separable replacement before low_rank, so
# that low_rank can still split the pointwise convs it makes; "finetune" last, training what the others left
# against the uncompressed model (passes/finetune.py).
COMPRESS = ("prune", "depthwise_separable", "low_rank", "finetune")
TFLITE_TAIL = ("to_nhwc", "legalize_tflite", "fuse_activations", "fold_constants", "eliminate_dead")
ARM_FP32 = CANONICALIZE + COMPRESS + TFLITE_TAIL
# int8 only: transposed convolution as conv2d over the zero-upsampled input (passes/transpose_conv_to_conv.py).
ARM_INT8 = CANONICALIZE + COMPRESS + ("transpose_conv_to_conv",) + TFLITE_TAIL + (
    "cross_layer_equalization", "quantize_int8", "eliminate_dead")
# binary weights (issue 18): arm-int8 with the inner layers' weights binarized after the structural compression and
# before fine-tuning (which trains them through a straight-through sign) and the int8 quantizer (which stores them
# as codes +-127; passes/binarize.py)
_TUNE = ARM_INT8.index("finetune")
ARM_BINARY = ARM_INT8[:_TUNE] + ("binarize",) + ARM_INT8[_TUNE:]
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
    Target("arm-binary", "arm64", "int8", "tflite", ARM_BINARY,
           "arm-int8 with binary weights ({-a, +a} per output channel, stored as int8 codes +-127) in every conv "
           "and fully connected layer but the first and last; needs --calib", needs_calibration=True),
    Target("x86-binary", "x86-64", "int8", "onnx", ARM_BINARY + ONNX_TAIL,
           "arm-binary's graph as int8 ONNX for onnxruntime; needs --calib", needs_calibration=True),
]}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise MccError(f"unknown target '{name}'; known targets: {', '.join(sorted(TARGETS))} (see `mcc targets`)")
    return TARGETS[name]
