"""NCHW <-> NHWC moves for the spatial kernels, which are written once, for NHWC (TFLite's order); constant padding."""

from __future__ import annotations

import numpy as np


def to_nhwc(x: np.ndarray, layout: str | None) -> np.ndarray:
    """A C-contiguous NHWC copy of a 4-D activation (or OIHW weight, giving OHWI) held in `layout`."""
    return np.ascontiguousarray(x if layout == "NHWC" else x.transpose(0, 2, 3, 1))


def from_nhwc(y: np.ndarray, layout: str | None) -> np.ndarray:
    """An NHWC result moved back to `layout`."""
    return y if layout == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def window_output_hw(x_nhwc: np.ndarray, node, kh: int, kw: int) -> tuple[int, int]:
    """Output rows and columns of a sliding window over `x_nhwc`, from the data rather than the IR's shapes,
    so that the interpreter's comparison with the IR's inferred shape is an independent check."""
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs.get("dilation", [1, 1])
    top, left, bottom, right = node.attrs["padding"]
    _, h, w, _ = x_nhwc.shape
    return (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1


def pad_constant(x: np.ndarray, widths, value) -> np.ndarray:
    """`x` padded with `value` by (before, after) per axis: the border filled slab by slab and the interior copied,
    so each output byte is written once (a filled array and a copy write the interior twice; np.pad pads axis by
    axis, several times slower on MobileNet's NHWC pads)."""
    y = np.empty([n + a + b for n, (a, b) in zip(x.shape, widths)], x.dtype)
    for axis, (before, after) in enumerate(widths):
        lead = (slice(None),) * axis
        if before:
            y[lead + (slice(0, before),)] = value
        if after:
            y[lead + (slice(y.shape[axis] - after, None),)] = value
    y[tuple(slice(a, a + n) for n, (a, _) in zip(x.shape, widths))] = x
    return y
