"""The output stage of the int8 kernels: scale an int32 accumulator, add the output zero point, clamp to the
fused activation's quantized bounds. TFLite's reference kernels do this per element after the loop; XNNPACK
fuses it into its GEMM microkernels; both are one `requantize` call here, with the rule choosing how.
"""

from __future__ import annotations

import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from ..rules import Rule
from .int8_registry import LIMITS, check_rounding

# The real interval each fused activation clamps to (None: unbounded on that side).
ACTIVATION_RANGE = {None: (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}


def _quantize_bound(value: float, scale: np.float32, zero_point: int, kernels: str, dtype: str, node=None) -> int:
    """One bound in `dtype`. onnxruntime's kernels have no fused activation: the ONNX writer clamps with an int8
    Clip whose bounds it computes as TFLite does (formats.onnx.opmap), so "onnxruntime" takes TFLite's."""
    if kernels == "xnnpack":  # xnn_qs8_quantize: lrintf(clamp(v / s + zp)), ties to even
        q = np.float32(value) / scale + np.float32(zero_point)
        return int(np.rint(np.clip(q, *(np.float32(v) for v in LIMITS[dtype]))))
    # TFLite's CalculateActivationRangeQuantized: zp + round(v / s) in float32, ties away from zero
    q = fp.round_half_away(np.float32(value) / scale)
    if kernels == "tflite" and node is not None and not -2.0 ** 31 <= q <= 2.0 ** 31:
        # its Prepare checks no_integer_overflow_from_quantization and fails the model (found by
        # benchmarks/fuzz_rules.py: relu6 at an output scale of 1.8e-9); XNNPACK's delegate takes it
        raise MccError(f"{node.op}: fused {node.attrs['activation']} bound {value} / output scale {float(scale)} "
                       "overflows int32; TFLite's kernels refuse such a model (no_integer_overflow_from_quantization)"
                       ": give the output a larger scale", node=node.name)
    return zero_point + int(q)


def clamp_bounds(lo: float | None, hi: float | None, scale: np.float32, zero_point: int,
                 kernels: str, dtype: str = "int8", node=None) -> tuple[int, int]:
    """The `dtype` interval for the real interval [lo, hi] (None: unbounded), quantized as `kernels` does it; with
    `node`, a bound that TFLite refuses raises."""
    low, high = LIMITS[dtype]
    qlo = low if lo is None else max(low, _quantize_bound(lo, scale, zero_point, kernels, dtype, node))
    qhi = high if hi is None else min(high, _quantize_bound(hi, scale, zero_point, kernels, dtype, node))
    return qlo, qhi


def activation_bounds(activation: str | None, scale: np.float32, zero_point: int, kernels: str,
                      dtype: str = "int8", node=None) -> tuple[int, int]:
    """The interval a fused activation of `node` clamps to, quantized the way the kernel library does it (TFLite's
    CalculateActivationRangeQuantized takes the output type's limits, int8 or int16)."""
    return clamp_bounds(*ACTIVATION_RANGE[activation], scale, zero_point, kernels, dtype, node)


def output_stage(scaled, zero_point: int, bounds: tuple[int, int], dtype: str = "int8") -> np.ndarray:
    """zp + scaled, clamped to the activation bounds, as `dtype`."""
    return np.clip(np.asarray(scaled, np.int64) + zero_point, *bounds).astype(dtype)


def product_scale(s_in: np.float32, s_w: np.ndarray, s_out: np.float32, rule: Rule) -> np.ndarray:
    """s_in * s_w / s_out per output channel, computed as the library's Prepare does: TFLite in float64
    (PopulateConvolutionQuantizationParams), XNNPACK and onnxruntime (QLinearConv, QGemm) in float32, as
    (s_in * s_w) / s_out."""
    if rule.kernels in ("xnnpack", "onnxruntime"):
        return ((np.float32(s_in) * np.asarray(s_w, np.float32)) / np.float32(s_out)).astype(np.float64)
    return np.float64(s_in) * np.asarray(s_w, np.float64) / np.float64(s_out)


def requantize(acc, real, rule: Rule, node) -> np.ndarray:
    """acc (int64, last axis = channels) times the real factor `real` (per channel or scalar), rounded by
    `rule.rounding`; returns int64 before the zero point is added."""
    check_rounding(node, rule, "double_rounding", "float64_round_half_away", "float32_ties_even",
                   "reduced_multiplier_half_up")
    if rule.rounding == "reduced_multiplier_half_up":
        return fp.multiply_by_reduced_multiplier(acc, *fp.quantize_multiplier(real))
    if rule.rounding == "double_rounding":
        multiplier, shift = fp.quantize_multiplier(real)
        return fp.multiply_by_quantized_multiplier(acc, multiplier, shift)
    if rule.rounding == "float64_round_half_away":
        return fp.scale_round_half_away(acc, real)
    return fp.scale_float32_ties_even(acc, np.asarray(real, np.float32))
