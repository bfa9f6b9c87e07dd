"""int8 resize: TFLite's RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR on int8, after each kernel set's arithmetic.

Both kernels interpolate the stored integers and never requantize, so input and output must share scale and
zero point (the int8 spec says so; XNNPACK refuses to prepare a model where they differ, and TFLite's reference
kernel would silently reinterpret the bytes). What differs between kernel sets is where each output pixel reads
and how the bilinear blend is rounded, measured on LiteRT 2.3.0 (see runtime.rules):

- nearest, reference kernel: the source index in float32, floor((o + offset) * scale) (align_corners: rounded
  half away from zero), scale = in / out or (in - 1) / (out - 1), offset 0.5 with half_pixel_centers;
- nearest, optimized kernel (the default resolver; XNNPACK does not take it): without flags, 16.16 fixed point,
  (o * ((in << 16) // out + 1)) >> 16, which picks another row than the float formula for a few sizes (2 -> 82);
  with a flag, the reference formula;
- bilinear, reference kernel (ResizeBilinearInteger): the scale as a rounded 10-bit fixed-point integer s, the
  coordinate o * s (half_pixel_centers: + s / 2 - 512) in 1/1024 units, the four products summed in 1/2**20
  units and rounded half away from zero by C's truncating division;
- bilinear, XNNPACK: the coordinate in float32 (half pixel: clamped to [0, in - 1]), each neighbour's weight
  rint(2048 * fraction), the sum in 1/2**22 units, (sum + 2**21) >> 22 (ties upward).

TFLite's two flags give three coordinate modes, and for nearest one rounding each (TFLITE_NEAREST); another
combination has no TFLite kernel, which legalize_tflite resolves before quantization.

TFLite and XNNPACK each build one of these arithmetics into their library, and TFLite's own kernel tests compare
its optimized nearest kernel with the reference one only at sizes where their indices agree. mcc keeps all of
them, picked by the rule set, so the runtime predicts either library's integers, sizes where they part included.
"""

from __future__ import annotations

import numpy as np

from ...errors import MccError
from ..fixed_point import round_half_away
from .int8_registry import check_rounding, int8_kernel, require_same_quant
from ...formats.tflite.opmap import TFLITE_FLAGS, TFLITE_NEAREST
from .layout import from_nhwc, to_nhwc
from .resize import xnnpack_coordinates


def tflite_nearest_indices(out_size: int, in_size: int, coordinates: str, fixed_point: bool = False) -> np.ndarray:
    """The input index each output position of TFLite's RESIZE_NEAREST_NEIGHBOR reads along one axis."""
    align, half = TFLITE_FLAGS[coordinates]
    o = np.arange(out_size, dtype=np.int64)
    if fixed_point and not (align or half):
        return np.minimum((o * ((in_size << 16) // out_size + 1)) >> 16, in_size - 1)
    f = np.float32
    scale = f(in_size - 1) / f(out_size - 1) if align and out_size > 1 else f(in_size) / f(out_size)
    v = (o.astype(f) + f(0.5 if half else 0.0)) * scale
    index = round_half_away(v) if align else np.floor(v).astype(np.int64)
    return np.clip(index, 0, in_size - 1)


def _fixed_point10(out_size: int, in_size: int, coordinates: str):
    """Reference kernel: lower and upper neighbour and the upper one's weight in 1/1024, per output position."""
    if coordinates == "align_corners" and out_size > 1:
        scale = (((in_size - 1) << 10) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = ((in_size << 10) + out_size // 2) // out_size
    v = np.arange(out_size, dtype=np.int64) * scale
    if coordinates == "half_pixel":
        v = v + scale // 2 - (1 << 9)
    lower = np.maximum(_c_divide(v, 1024), 0)
    return lower, np.minimum(_c_divide(v + 1023, 1024), in_size - 1), v - 1024 * lower


def _c_divide(a: np.ndarray, b: int) -> np.ndarray:
    """C's integer division, which truncates toward zero (half-pixel coordinates start below 0)."""
    return np.sign(a) * (np.abs(a) // b)


def _q11(out_size: int, in_size: int, coordinates: str):
    """XNNPACK: lower and upper neighbour and the upper one's weight in 1/2048, per output position."""
    lower, upper, fraction = xnnpack_coordinates(out_size, in_size, coordinates)
    return lower, upper, np.rint(fraction * np.float32(2048)).astype(np.int64)


def _blend(x: np.ndarray, rows, cols, one: int) -> np.ndarray:
    """Sum of the four neighbours of each output pixel weighted in units of 1/one per axis (int64)."""
    (y0, y1, wy), (x0, x1, wx) = rows, cols
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    top, bottom = x[:, y0], x[:, y1]
    return ((top[:, :, x0] * (one - wx) + top[:, :, x1] * wx) * (one - wy)
            + (bottom[:, :, x0] * (one - wx) + bottom[:, :, x1] * wx) * wy)


@int8_kernel("resize")
def resize(node, inputs, rules):
    x_t, a = node.inputs[0], node.attrs
    require_same_quant(node, x_t, node.outputs[0])
    mode, coordinates = a["mode"], a["coordinate_transformation_mode"]
    rule = rules.rule(f"resize_{mode}", node.name)
    x = to_nhwc(inputs[0], x_t.layout)
    (_, h, w, _), (out_h, out_w) = x.shape, a["size"]
    if mode == "nearest":
        if a["nearest_mode"] != TFLITE_NEAREST[coordinates]:
            raise MccError(f"int8 nearest resize with {coordinates} coordinates rounds {TFLITE_NEAREST[coordinates]} "
                           f"in TFLite, not {a['nearest_mode']}; run the legalize_tflite pass before quantizing",
                           node=node.name)
        check_rounding(node, rule, "nearest_float32_index", "nearest_fixed_point16_index")
        fixed = rule.rounding == "nearest_fixed_point16_index"
        rows, cols = (tflite_nearest_indices(o, i, coordinates, fixed) for o, i in ((out_h, h), (out_w, w)))
        y = x[:, rows][:, :, cols]
    else:
        check_rounding(node, rule, "bilinear_fixed_point10_half_away", "bilinear_q11_half_up")
        x = x.astype(np.int64)
        if rule.rounding == "bilinear_fixed_point10_half_away":
            acc = _blend(x, _fixed_point10(out_h, h, coordinates), _fixed_point10(out_w, w, coordinates), 1 << 10)
            y = _c_divide(acc + np.where(acc > 0, 1 << 19, -(1 << 19)), 1 << 20)
        else:
            acc = _blend(x, _q11(out_h, h, coordinates), _q11(out_w, w, coordinates), 1 << 11)
            y = (acc + (1 << 21)) >> 22
    return [from_nhwc(np.ascontiguousarray(y, dtype=np.int8), x_t.layout)]
