"""resize (nearest and bilinear) in float32 numpy, with ONNX Resize's coordinate arithmetic.

The input coordinate of each output row and column is computed in float32 in onnxruntime's order of operations
(divide by the scale out/in; multiply before dividing for align_corners), because nearest rounding decides ties
on exactly that value.
"""

from __future__ import annotations

import numpy as np

from .layout import from_nhwc, to_nhwc
from .registry import kernel, require_float32


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


def _linear(coords: np.ndarray, in_size: int):
    """Lower and upper neighbour and the upper one's weight of each clamped coordinate."""
    c = np.clip(coords, np.float32(0), np.float32(in_size - 1))
    lo = np.floor(c).astype(np.int64)
    return lo, np.minimum(lo + 1, in_size - 1), (c - lo).astype(np.float32)


@kernel("resize")
def resize(node, inputs):
    x, a = inputs[0], node.attrs
    require_float32(node, x)
    layout = node.inputs[0].layout
    x = to_nhwc(x, layout)
    (_, h, w, _), (out_h, out_w) = x.shape, a["size"]
    ys = source_coordinates(out_h, h, a["coordinate_transformation_mode"])
    xs = source_coordinates(out_w, w, a["coordinate_transformation_mode"])
    if a["mode"] == "nearest":
        y = x[:, nearest_indices(ys, h, a["nearest_mode"])][:, :, nearest_indices(xs, w, a["nearest_mode"])]
    else:
        (y0, y1, wy), (x0, x1, wx) = _linear(ys, h), _linear(xs, w)
        wy, wx = wy[None, :, None, None], wx[None, None, :, None]
        rows = [x[:, r] for r in (y0, y1)]
        top, bottom = ((r[:, :, x0] * (1 - wx) + r[:, :, x1] * wx) for r in rows)
        y = top * (1 - wy) + bottom * wy
    return [from_nhwc(np.ascontiguousarray(y, dtype=np.float32), layout)]
