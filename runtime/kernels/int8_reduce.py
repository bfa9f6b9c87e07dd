"""int8 mean over axes: an exact int64 sum of the reduced elements, then one of two requantizations.

TFLite's reference MEAN (QuantizedMeanOrSum) subtracts n * zp_in from the sum and folds 1/n into the
quantized multiplier of s_in / s_out: it shifts the multiplier left by floor(log2 n) and divides it by n in
integers, then applies gemmlowp double rounding. XNNPACK's MEAN converts the raw int32 sum to float32 and
computes rint(sum * scale + zp') with scale = (s_in / s_out) * (1 / n) and the input zero point folded into
zp', all in float32. onnxruntime's QLinearGlobalAveragePool (MLAS qlgavgpool.cpp) subtracts n * zp_in in
integers and computes rint(float32(sum) * scale) + zp_out with scale = s_in / (s_out * n) in float32, refusing
a scale outside [2**-32, 256).
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from .int8_registry import check_rounding, int8_kernel, per_tensor, require_same_quant, saturate_int8
from .registry import KERNELS


def _tflite_mean(total, n, s_in, zp_in, s_out):
    multiplier, shift = fp.quantize_multiplier(np.float64(s_in) / np.float64(s_out))
    fold = min(n.bit_length() - 1, 32, 31 + int(shift))
    multiplier = (np.int64(multiplier) << fold) // n
    return fp.multiply_by_quantized_multiplier(total - zp_in * n, multiplier, int(shift) - fold)


def _xnnpack_mean(total, n, s_in, zp_in, s_out, zp_out):
    scale = (s_in / s_out) * (np.float32(1) / np.float32(n))
    zero_point = np.float32(zp_out) - np.float32(n * zp_in) * scale
    return np.rint(total.astype(np.float32) * scale + zero_point).astype(np.int64)


def ort_global_average(total, n, s_in, zp_in, s_out, zp_out, node):
    """MlasQLinearGlobalAveragePool's requantization of window sums `total` over n elements."""
    scale = s_in / (s_out * np.float32(n))
    if not 2.0 ** -32 <= scale < 256:
        raise MccError(f"onnxruntime's QLinearGlobalAveragePool refuses s_in / (s_out * n) = {scale} (outside "
                       "[2**-32, 256)); requantize the output to a scale closer to the input's", node=node.name)
    return np.rint((total - zp_in * n).astype(np.float32) * scale).astype(np.int64) + zp_out


def int64_sum(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """The exact int64 sum of integer `x` over sorted `axes`, as numpy's astype(int64).sum gives it. A consecutive run
    of axes (H and W of a squeeze-excitation block's mean) is the middle of an [outer, reduced, inner] view, summed
    in one compiled pass (_sum_middle) without the int64 copy: 133 vs 742 us on [1, 112, 112, 96]; other axes go
    through numpy's sum, which widens in chunks. Bias correction sums its chunks' samples (axis 0) with it."""
    if not axes or x.size == 0 or axes != tuple(range(axes[0], axes[-1] + 1)):
        return x.sum(axis=axes, dtype=np.int64, keepdims=keepdims)
    before, after = x.shape[:axes[0]], x.shape[axes[-1] + 1:]
    out = np.empty((int(np.prod(before)), int(np.prod(after))), np.int64)
    _sum_middle(np.ascontiguousarray(x).reshape(out.shape[0], -1, out.shape[1]), out)
    return out.reshape(before + (1,) * len(axes) * keepdims + after)


@numba.njit(cache=True, nogil=True)
def _sum_middle(x, out):
    """out[o, i] = the sum of x[o, :, i] in int64, rows of the inner axis at a time (they vectorise)."""
    for o in range(x.shape[0]):
        total = out[o]
        total[:] = 0
        for m in range(x.shape[1]):
            row = x[o, m]
            for i in range(row.size):
                total[i] += row[i]


@int8_kernel("mean")
def mean(node, inputs, rules):
    x = inputs[0]
    s_in, zp_in = per_tensor(node, node.inputs[0], "input")
    s_out, zp_out = per_tensor(node, node.outputs[0], "output")
    axes = tuple(sorted(a % x.ndim for a in node.attrs["axes"]))
    n = int(np.prod([x.shape[a] for a in axes]))
    total = int64_sum(x, axes, node.attrs["keepdims"])
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "mean_shifted_multiplier", "mean_float32_ties_even", "mean_float32_scale_ties_even")
    if rule.rounding == "mean_shifted_multiplier":
        y = _tflite_mean(total, n, s_in, zp_in, s_out) + zp_out
    elif rule.rounding == "mean_float32_scale_ties_even":
        y = ort_global_average(total, n, s_in, zp_in, s_out, zp_out, node)
    else:
        y = _xnnpack_mean(total, n, s_in, zp_in, s_out, zp_out)
    return [saturate_int8(y)]


@int8_kernel("reduce_max", "reduce_min", "gather", "tile", "depth_to_space", "space_to_depth")
def pick_codes(node, inputs, rules):
    """int8 REDUCE_MAX / REDUCE_MIN pick a stored code, GATHER, TILE, DEPTH_TO_SPACE and SPACE_TO_DEPTH move them:
    TFLite requires (or, moving bytes, assumes) the output's parameters to be the input's, and so does mcc (the
    quantizer shares them), so the integer result is the float kernel's on the codes."""
    check_rounding(node, rules.rule(node.op, node.name), "exact")
    require_same_quant(node, node.inputs[0], node.outputs[0])
    return KERNELS[node.op](node, inputs)
