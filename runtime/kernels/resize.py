"""resize (nearest and bilinear) in float32 numpy: nearest with ONNX Resize's coordinates, bilinear as the rule
set's peer computes it.

The input coordinate of each output row and column (`source_coordinates`, the IR's definition) is computed in
float32 in onnxruntime's order of operations (divide by the scale out/in; multiply before dividing for
align_corners), because nearest rounding decides ties on exactly that value.

A bilinear blend is rounding noise in a float model, but in a float island of an int8 model (onnxruntime has no
integer bilinear Resize that matches TFLite's, so x86-int8 dequantizes around it) the QUANTIZE after it turns a
last-bit difference at a tie into another code. So the kernel takes the run's rule set (registry.RULED) and
blends as that peer does (runtime.rules, op "resize"), each peer with its own coordinates, weights and order of
the four products; measured bit for bit by tests/test_resize_float_rules.py. onnx2tf and the TFLite converter
leave that to the runtime; mcc claims exactness against each one.
"""

from __future__ import annotations

import numpy as np

from ..rules import rule_set
from .int8_registry import check_rounding
from .layout import from_nhwc, to_nhwc
from .registry import kernel, require_float32

f32 = np.float32


def source_coordinates(out_size: int, in_size: int, mode: str) -> np.ndarray:
    """The input coordinate (float32, unclamped) that each of `out_size` output positions reads."""
    o = np.arange(out_size, dtype=np.float32)
    if mode == "align_corners":
        if out_size == 1:
            return np.zeros(1, np.float32)
        return o * np.float32(in_size - 1) / np.float32(out_size - 1)
    scale = np.float32(out_size) / np.float32(in_size)
    if mode == "half_pixel":
        return (o + np.float32(0.5)) / scale - np.float32(0.5)
    return o / scale


def nearest_indices(coords: np.ndarray, in_size: int, nearest_mode: str) -> np.ndarray:
    floor = np.floor(coords)
    if nearest_mode == "floor":
        idx = floor
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    else:
        away = np.sign(coords) * np.floor(np.abs(coords) + np.float32(0.5))  # C's round: ties away from zero
        idx = np.where(coords - floor == np.float32(0.5), floor, away) if nearest_mode == "round_prefer_floor" else away
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def xnnpack_coordinates(out_size: int, in_size: int, mode: str):
    """XNNPACK's resize-bilinear indirection: lower and upper neighbour and the upper one's float32 weight per
    output position; o * scale (+ (0.5 * scale - 0.5), clamped, for half pixel), scale = in / out or, with aligned
    corners, (in - 1) / (out - 1). The int8 kernel rounds the same weight to 1/2048."""
    adjust = int(mode == "align_corners" and out_size != 1)
    scale = f32(in_size - adjust) / f32(out_size - adjust)
    v = np.arange(out_size, dtype=np.int64).astype(f32) * scale
    if mode == "half_pixel":
        v = np.clip(v + (f32(0.5) * scale - f32(0.5)), f32(0), f32(in_size - 1))
    lower = v.astype(np.int64)
    return lower, np.minimum(lower + 1, in_size - 1), (v - lower.astype(f32)).astype(f32)


def _tflite_coordinates(out_size: int, in_size: int, mode: str):
    """TFLite's reference RESIZE_BILINEAR: (o + 0.5) * scale - 0.5 or o * scale, not clamped (a half-pixel
    coordinate below 0 weighs row 0 by more than 1 and by less than 0); lower max(floor, 0), upper min(ceil, in - 1)."""
    o = np.arange(out_size, dtype=np.int64).astype(f32)
    aligned = mode == "align_corners" and out_size > 1
    scale = f32(in_size - 1) / f32(out_size - 1) if aligned else f32(in_size) / f32(out_size)
    v = (o + f32(0.5)) * scale - f32(0.5) if mode == "half_pixel" else o * scale
    lower = np.maximum(np.floor(v).astype(np.int64), 0)
    return lower, np.minimum(np.ceil(v).astype(np.int64), in_size - 1), (v - lower.astype(f32)).astype(f32)


def _onnxruntime_coordinates(out_size: int, in_size: int, mode: str):
    """onnxruntime's SetupUpsampleBilinear: the IR's coordinate c clamped to [0, in - 1], lower = its integer part;
    the upper neighbour's weight |c - lower|, the lower one's |c - upper| (both 0.5 where lower == upper)."""
    c = np.clip(source_coordinates(out_size, in_size, mode), f32(0), f32(in_size - 1))
    lower = c.astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    d1, d2 = np.abs(c - lower.astype(f32)), np.abs(c - upper.astype(f32))
    same = lower == upper
    return lower, upper, np.where(same, f32(0.5), d1).astype(f32), np.where(same, f32(0.5), d2).astype(f32)


def _corners(x, rows, cols):
    """The four neighbours of every output pixel of NHWC `x`: (top-left, top-right, bottom-left, bottom-right)."""
    top, bottom = x[:, rows[0]], x[:, rows[1]]
    return top[:, :, cols[0]], top[:, :, cols[1]], bottom[:, :, cols[0]], bottom[:, :, cols[1]]


def _bilinear_tflite(x, size, mode):
    """v * (1 - wy) * (1 - wx) per corner, left to right, the four summed in order (reference_ops::ResizeBilinear)."""
    ys, xs = _tflite_coordinates(size[0], x.shape[1], mode), _tflite_coordinates(size[1], x.shape[2], mode)
    tl, tr, bl, br = _corners(x, ys, xs)
    wy, wx = ys[2][None, :, None, None], xs[2][None, None, :, None]
    return ((tl * (1 - wy) * (1 - wx) + bl * wy * (1 - wx)) + tr * (1 - wy) * wx) + br * wy * wx


def _bilinear_xnnpack(x, size, mode):
    """Two horizontal lerps t = tl + (tr - tl) * ax, then t + (b - t) * ay, unfused (XNNPACK's f32-ibilinear)."""
    ys, xs = xnnpack_coordinates(size[0], x.shape[1], mode), xnnpack_coordinates(size[1], x.shape[2], mode)
    tl, tr, bl, br = _corners(x, ys, xs)
    ay, ax = ys[2][None, :, None, None], xs[2][None, None, :, None]
    top, bottom = tl + (tr - tl) * ax, bl + (br - bl) * ax
    return top + (bottom - top) * ay


def _bilinear_onnxruntime(x, size, mode):
    """(dx * dy) * v per corner, summed left to right, unfused (UpsampleBilinear, the NCHW loop)."""
    (y1, y2, dy1, dy2), (x1, x2, dx1, dx2) = (_onnxruntime_coordinates(o, i, mode)
                                              for o, i in ((size[0], x.shape[1]), (size[1], x.shape[2])))
    tl, tr, bl, br = _corners(x, (y1, y2), (x1, x2))
    dy1, dy2 = dy1[None, :, None, None], dy2[None, :, None, None]
    dx1, dx2 = dx1[None, None, :, None], dx2[None, None, :, None]
    return (((dx2 * dy2) * tl + (dx1 * dy2) * tr) + (dx2 * dy1) * bl) + (dx1 * dy1) * br


BILINEAR = {"bilinear_float32_corner_products": _bilinear_tflite, "bilinear_float32_lerp": _bilinear_xnnpack,
            "bilinear_float32_weight_products": _bilinear_onnxruntime}


@kernel("resize", ruled=True)
def resize(node, inputs, rules=None):
    x, a = inputs[0], node.attrs
    require_float32(node, x)
    layout = node.inputs[0].layout
    x = to_nhwc(x, layout)
    (_, h, w, _), size = x.shape, a["size"]
    if a["mode"] == "nearest":
        ys, xs = (source_coordinates(o, n, a["coordinate_transformation_mode"]) for o, n in zip(size, (h, w)))
        y = x[:, nearest_indices(ys, h, a["nearest_mode"])][:, :, nearest_indices(xs, w, a["nearest_mode"])]
    else:
        rule = rule_set(rules).rule("resize", node.name)
        check_rounding(node, rule, *BILINEAR)
        y = BILINEAR[rule.rounding](x, size, a["coordinate_transformation_mode"])
    return [from_nhwc(np.ascontiguousarray(y, dtype=np.float32), layout)]
