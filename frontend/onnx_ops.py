"""The ONNX -> IR lowering table: one small function per ONNX op (default domain, opsets 13 to 21).

Each function receives the lowering context `cx` (frontend.onnx_lowering.Lowering) and the node's inputs: an IR
Tensor for a value computed at run time, a Const for a value known at compile time, None for an absent optional
input. It reads attributes with cx.attr and returns the IR tensor (a list, for several outputs; None for an output
mcc does not compute) that stands for each of the node's outputs; returning an input unchanged removes the node.
Nodes whose inputs are all constants never get here: the walker folds them with onnx's reference evaluator, so
shape logic (Shape, Gather, Equal, Where, ConstantOfShape, Range, Cast, Unsqueeze, Concat on shapes) costs nothing.
An If whose condition folds is inlined by the walker (Lowering._inline_if); Loop and Scan are refused.
Equal, Where and the other comparisons on run-time tensors are refused: the IR holds float32 activations only (no
bool tensors), and a mask computed from data is control flow mcc does not compile.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..ir.ops import POW_FOLDS, broadcast_ones
from .normalization import group_normalize, normalize
from .onnx_lowering import Const, node_label
from .recurrent import Cell, note, select, stack, time_steps, unroll

LOWERINGS: dict = {}

# Ops whose result depends only on their input's static shape: the lowering returns a Const.
SHAPE_OF = frozenset({"Shape", "Size"})


def lowers(*ops):
    def register(fn):
        for name in ops:
            LOWERINGS[name] = fn
        return fn
    return register


def _rank(cx, x) -> int:
    return len(cx.shape(x))


# ---- static shapes --------------------------------------------------------------------------------------------
@lowers("Shape")
def shape(cx, x):
    dims = np.array(cx.shape(x), np.int64)
    start, end = cx.attr("start", 0), cx.attr("end", len(dims))
    return cx.const(dims[start:end], dtype=np.int64)


@lowers("Size")
def size(cx, x):
    return cx.const(np.prod(cx.shape(x), dtype=np.int64), dtype=np.int64)


# ---- convolution and matrix products --------------------------------------------------------------------------
def _auto_padding(cx, sizes, kernel, stride, dilation) -> list[int]:
    """Explicit [top, left, bottom, right] from `pads` or `auto_pad` (SAME_* puts the odd pixel after, or before)."""
    auto = cx.attr("auto_pad", "NOTSET")
    if auto == "NOTSET":
        return [int(p) for p in cx.attr("pads", [0, 0, 0, 0])]  # ONNX's [x1_begin, x2_begin, x1_end, x2_end]
    if auto == "VALID":
        return [0, 0, 0, 0]
    before, after = [], []
    for size, k, s, d in zip(sizes, kernel, stride, dilation):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        before.append(large if auto == "SAME_LOWER" else small)
        after.append(small if auto == "SAME_LOWER" else large)
    return before + after


def _require_2d(cx, x, what: str):
    if _rank(cx, x) != 4:
        cx.fail(f"only 2-D {what} (a 4-D NCHW input) is supported; the input has shape {cx.shape(x)}")


@lowers("Conv")
def conv(cx, x, weight, bias=None):
    _require_2d(cx, x, "convolution")
    weight = cx.require_const(weight, "weight")
    inputs = [x, weight] + ([cx.require_const(bias, "bias")] if bias is not None else [])
    stride, dilation = cx.attr("strides", [1, 1]), cx.attr("dilations", [1, 1])
    padding = _auto_padding(cx, cx.shape(x)[2:], weight.value.shape[2:], stride, dilation)
    attrs = {"stride": list(stride), "padding": padding, "dilation": list(dilation)}
    groups, in_channels, out_channels = cx.attr("group", 1), cx.shape(x)[1], weight.value.shape[0]
    # A 1-input-channel conv stays conv2d: "depthwise" is for the per-channel filters of a grouped layer.
    if groups == in_channels > 1:
        return cx.emit("depthwise_conv2d", inputs, multiplier=out_channels // in_channels, **attrs)
    return cx.emit("conv2d", inputs, groups=groups, **attrs)


@lowers("ConvTranspose")
def conv_transpose(cx, x, weight, bias=None):
    """Crop (pads) and output_padding from `pads`, `output_shape` or `auto_pad` as onnxruntime resolves them:
    total = stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - out, its odd half at the start for
    SAME_UPPER and at the end otherwise (the ONNX spec's rule); a negative end crop is more output padding."""
    _require_2d(cx, x, "transposed convolution")
    weight = cx.require_const(weight, "weight")
    inputs = [x, weight] + ([cx.require_const(bias, "bias")] if bias is not None else [])
    kernel = weight.value.shape[2:]
    stride, dilation = list(cx.attr("strides", [1, 1])), list(cx.attr("dilations", [1, 1]))
    extra = list(cx.attr("output_padding", [0, 0]))
    auto, wanted = cx.attr("auto_pad", "NOTSET"), cx.attr("output_shape")
    sizes = cx.shape(x)[2:]
    if wanted is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        wanted = [size * s for size, s in zip(sizes, stride)]
    if wanted is not None:
        begin, end = [], []
        for size, k, s, d, o, out in zip(sizes, kernel, stride, dilation, extra, list(wanted)[-2:]):
            total = s * (size - 1) + o + (k - 1) * d + 1 - out
            head = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(head)
            end.append(total - head)
    elif auto == "VALID":
        begin, end = [0, 0], [0, 0]
    else:
        pads = [int(p) for p in cx.attr("pads", [0, 0, 0, 0])]
        begin, end = pads[:2], pads[2:]
    if min(begin) < 0:
        cx.fail(f"output_shape {list(wanted)} is larger than the transposed convolution's output plus "
                "output_padding; mcc extends only at the end (give output_padding instead)")
    extra = [o + max(-e, 0) for o, e in zip(extra, end)]
    return cx.emit("transpose_conv2d", inputs, stride=stride, dilation=dilation, groups=cx.attr("group", 1),
                   padding=begin + [max(e, 0) for e in end], output_padding=extra)


@lowers("Gemm")
def gemm(cx, a, b, c=None):
    """alpha * A' @ B' + beta * C as fully_connected (weight [N, K] = alpha * B'^T); C becomes its bias when it
    is one value per output (or one for all), else a constant added after."""
    if isinstance(a, Const) or _rank(cx, a) != 2:
        cx.fail("mcc lowers Gemm with a 2-D run-time A and a constant B (a fully connected layer) only")
    b = cx.require_const(b, "B (a weight)")
    if cx.attr("transA", 0):
        a = cx.emit("transpose", [a], perm=[1, 0])
    b_t = b.value if cx.attr("transB", 0) else b.value.T
    weight = cx.const(b_t * np.float32(cx.attr("alpha", 1.0)), like=b)
    if c is None:
        return cx.emit("fully_connected", [a, weight])
    c = cx.require_const(c, "C (a bias)")
    scaled = cx.const(c.value * np.float32(cx.attr("beta", 1.0)), like=c)
    n, shape = weight.value.shape[0], scaled.value.shape
    if all(d == 1 for d in shape[:-1]) and shape[-1:] in ((), (1,), (n,)):  # one row, broadcast down the batch
        bias = cx.const(np.broadcast_to(scaled.value.reshape(-1), (n,)), like=c)
        return cx.emit("fully_connected", [a, weight, bias])
    return cx.emit("add", [cx.emit("fully_connected", [a, weight]), scaled])


@lowers("MatMul")
def matmul(cx, a, b):
    """A run-time A by a constant 2-D B is a fully connected layer; anything else of rank >= 2 (attention's
    activations by activations, a constant B of rank > 2) a batch_matmul."""
    if min(_rank(cx, a), _rank(cx, b)) < 2:
        cx.fail(f"MatMul of shapes {cx.shape(a)} and {cx.shape(b)}: mcc lowers operands of rank 2 or more only "
                "(reshape a vector operand to a matrix)")
    if not isinstance(a, Const) and isinstance(b, Const) and b.value.ndim == 2:
        return cx.emit("fully_connected", [a, cx.const(b.value.T, like=b)])
    return cx.emit("batch_matmul", [a, b])


@lowers("BatchNormalization")
def batch_norm(cx, x, scale, bias, mean, var):
    if cx.attr("training_mode", 0):
        cx.fail("training_mode=1 computes batch statistics; export the model in eval mode")
    stats = [cx.require_const(v, "statistic") for v in (mean, var, scale, bias)]
    return cx.emit("batch_norm", [x, *stats], eps=float(cx.attr("epsilon", 1e-5)))


# ---- activations ----------------------------------------------------------------------------------------------
def _unary(op):
    return lambda cx, x: cx.emit(op, [x])


for _onnx, _op in (("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("HardSwish", "hardswish")):
    lowers(_onnx)(_unary(_op))


@lowers("LeakyRelu")
def leaky_relu(cx, x):
    return cx.emit("leaky_relu", [x], alpha=float(cx.attr("alpha", 0.01)))


@lowers("HardSigmoid")
def hard_sigmoid(cx, x):
    """max(0, min(1, alpha * x + beta)): the IR's hardsigmoid when alpha and beta are torch's 1/6 and 1/2 (as
    float32), else a multiply, an add and a clip."""
    alpha, beta = np.float32(cx.attr("alpha", 0.2)), np.float32(cx.attr("beta", 0.5))
    if alpha == np.float32(1 / 6) and beta == np.float32(0.5):
        return cx.emit("hardsigmoid", [x])
    y = cx.emit("add", [cx.emit("mul", [x, cx.const(alpha)]), cx.const(beta)])
    return cx.emit("clip", [y], min=0.0, max=1.0)


@lowers("PRelu")
def prelu(cx, x, slope):
    return cx.emit("prelu", [x, cx.require_const(slope, "slope")])


@lowers("Clip")
def clip(cx, x, lo=None, hi=None):
    """relu and relu6 when the bounds say so; a one-sided bound is a maximum/minimum with a constant."""
    lo = None if lo is None else cx.scalar(lo, "min")
    hi = None if hi is None else cx.scalar(hi, "max")
    if lo == 0 and hi in (None, 6):
        return cx.emit("relu" if hi is None else "relu6", [x])
    if lo is None and hi is None:
        return x
    if hi is None:
        return cx.emit("maximum", [x, cx.const(lo)])
    if lo is None:
        return cx.emit("minimum", [x, cx.const(hi)])
    return cx.emit("clip", [x], min=lo, max=hi)


@lowers("Softmax")
def softmax(cx, x):
    return cx.emit("softmax", [x], axis=cx.attr("axis", -1) % _rank(cx, x))


@lowers("LogSoftmax")
def log_softmax(cx, x):
    """x - max - log(sum(exp(x - max))) over `axis`, as torch and the TFLite converter compute it (log of a softmax
    would reach -inf where the exact value is finite)."""
    axes = [cx.attr("axis", -1) % _rank(cx, x)]
    shifted = cx.emit("sub", [x, cx.emit("reduce_max", [x], axes=axes, keepdims=True)])
    total = cx.emit("sum", [cx.emit("exp", [shifted])], axes=axes, keepdims=True)
    return cx.emit("sub", [shifted, cx.emit("log", [total])])


# ---- elementwise arithmetic -----------------------------------------------------------------------------------
def _binary(op):
    return lambda cx, a, b: cx.emit(op, [a, b])


for _onnx, _op in (("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div")):
    lowers(_onnx)(_binary(_op))


def _variadic(op):
    def lower(cx, first, *rest):
        for other in rest:
            first = cx.emit(op, [first, other])
        return first
    return lower


lowers("Max")(_variadic("maximum"))
lowers("Min")(_variadic("minimum"))


@lowers("Identity")
def identity(cx, x):
    return x


@lowers("Dropout")
def dropout(cx, x, ratio=None, training_mode=None):
    if training_mode is not None and bool(np.asarray(cx.require_const(training_mode, "training_mode").value)):
        cx.fail("training_mode=True drops values at random; export the model in eval mode")
    return x, None


def _float_cast(cx, x, to: int):
    """A cast of a run-time tensor is nothing when it is float32 to float32; mcc computes in float32 otherwise."""
    if to != onnx.TensorProto.FLOAT or x.dtype != "float32":
        cx.fail(f"casts a run-time {x.dtype} tensor to {onnx.TensorProto.DataType.Name(to)}; mcc computes "
                "activations in float32")
    return x


@lowers("Cast")
def cast(cx, x):
    return _float_cast(cx, x, cx.attr("to"))


@lowers("CastLike")
def cast_like(cx, x, like):
    dtype = like.value.dtype if isinstance(like, Const) else np.dtype(like.dtype)
    if isinstance(x, Const):  # a constant cast like a run-time tensor (the expanded functions' CastLike(1.0, x))
        return cx.const(np.asarray(x.value).astype(dtype), like=x, dtype=dtype)
    return _float_cast(cx, x, onnx.helper.np_dtype_to_tensor_dtype(dtype))


# ---- pooling and reductions -----------------------------------------------------------------------------------
def _pool_window(cx, x):
    """kernel, stride, the model's [top, left, bottom, right] padding and that padding with ceil_mode's extension.

    ceil_mode adds a last window only if it starts inside the input or its leading padding (onnxruntime's rule,
    as torch's); the extra bottom/right padding is what makes the floor formula produce that window. ONNX's shape
    inference keeps a window that starts in the trailing padding; where it does, mcc computes what onnxruntime
    computes and does not check the output's shape against the inferred one.
    """
    _require_2d(cx, x, "pooling")
    kernel, stride = list(cx.attr("kernel_shape")), list(cx.attr("strides", [1, 1]))
    if list(cx.attr("dilations", [1, 1])) != [1, 1]:
        cx.fail("dilated pooling is not supported")
    pads = _auto_padding(cx, cx.shape(x)[2:], kernel, stride, [1, 1])
    extra = []
    for i, (size, k, s) in enumerate(zip(cx.shape(x)[2:], kernel, stride)):
        before, after = pads[i], pads[i + 2]
        out = (size + before + after - k) // s + 1
        if cx.attr("ceil_mode", 0):
            out = -(-(size + before + after - k) // s) + 1
            if (out - 1) * s >= size + before:
                out -= 1
                cx.inferred.pop(cx.node.output[0], None)
        extra.append(max(0, (out - 1) * s + k - (size + before + after)))
    return kernel, stride, pads, [pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1]]


@lowers("MaxPool")
def max_pool(cx, x):
    kernel, stride, _, padding = _pool_window(cx, x)
    return cx.emit("max_pool2d", [x], kernel=kernel, stride=stride, padding=padding), None


@lowers("AveragePool")
def average_pool(cx, x):
    kernel, stride, pads, padding = _pool_window(cx, x)
    include = bool(cx.attr("count_include_pad", 0)) and any(pads)
    # The IR divides by the whole window or by the real elements; padding counted but ceil overhang not is neither.
    if include and padding != pads:
        cx.fail("AveragePool with padding, ceil_mode and count_include_pad=1 is not supported; use "
                "count_include_pad=0 or ceil_mode=0")
    return cx.emit("avg_pool2d", [x], kernel=kernel, stride=stride, padding=padding, count_include_pad=include)


@lowers("GlobalAveragePool")
def global_average_pool(cx, x):
    return cx.emit("mean", [x], axes=list(range(2, _rank(cx, x))), keepdims=True)


@lowers("ReduceMean")
def reduce_mean(cx, x, axes=None):
    """Axes are an attribute before opset 18 and an input from 18; no axes means all (or none, with
    noop_with_empty_axes)."""
    axes = cx.attr("axes") if cx.opset < 18 else (cx.ints(axes, "axes") if axes is not None else None)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return x
        axes = range(_rank(cx, x))
    return cx.emit("mean", [x], axes=sorted(a % _rank(cx, x) for a in axes), keepdims=bool(cx.attr("keepdims", 1)))


# ---- shapes and data movement ---------------------------------------------------------------------------------
@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(cx, x, *shape_args):
    """Every reshaping op is a reshape to the shape ONNX shape inference computed (static shapes make that exact)."""
    out = cx.out_shape()
    return x if out == cx.shape(x) else cx.emit("reshape", [x], shape=list(out))


@lowers("Expand")
def expand(cx, x, shape):
    """Broadcast to the static shape ONNX computes: a reshape when only leading 1s are added, else a multiply by
    ir.ops.broadcast_ones."""
    out, src = cx.out_shape(), cx.shape(x)
    if out == src:
        return x
    if int(np.prod(out)) == int(np.prod(src)):
        return cx.emit("reshape", [x], shape=list(out))
    return cx.emit("mul", [x, cx.const(broadcast_ones(src, out))])


@lowers("Transpose")
def transpose(cx, x):
    perm = [p % _rank(cx, x) for p in cx.attr("perm", list(range(_rank(cx, x)))[::-1])]
    return x if perm == sorted(perm) else cx.emit("transpose", [x], perm=perm)


@lowers("Concat")
def concat(cx, *tensors):
    return cx.emit("concat", list(tensors), axis=cx.attr("axis") % _rank(cx, tensors[0]))


@lowers("Split")
def split(cx, x, sizes=None):
    """Sizes from the `split` input, else num_outputs (opset 18: parts of ceil(dim / n), the last smaller), else
    equal parts, one per output."""
    axis = cx.attr("axis", 0) % _rank(cx, x)
    dim, parts = cx.shape(x)[axis], len(cx.node.output)
    if sizes is not None:
        sizes = cx.ints(sizes, "split")
    elif cx.attr("num_outputs") is not None:
        chunk = -(-dim // cx.attr("num_outputs"))
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    elif dim % parts:
        cx.fail(f"cannot split axis {axis} of size {dim} into {parts} equal parts")
    else:
        sizes = [dim // parts] * parts
    if len(sizes) == 1:
        return x
    return cx.emit("split", [x], n_outputs=len(sizes), axis=axis, sizes=sizes)


def _slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX's clamping: negative indices count from the end; a negative step runs from at most dim - 1 down to
    end -1 (through element 0)."""
    start, end = (v + dim if v < 0 else v for v in (start, end))
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


@lowers("Slice")
def slice_(cx, x, starts, ends, axes=None, steps=None):
    rank = _rank(cx, x)
    starts, ends = cx.ints(starts, "starts"), cx.ints(ends, "ends")
    axes = [a % rank for a in cx.ints(axes, "axes")] if axes is not None else list(range(len(starts)))
    steps = cx.ints(steps, "steps") if steps is not None else [1] * len(starts)
    kept = {"starts": [], "ends": [], "axes": [], "steps": []}
    for axis, start, end, step in zip(axes, starts, ends, steps):
        if step == 0:
            cx.fail("a step of 0 is invalid")
        dim = cx.shape(x)[axis]
        start, end = _slice_bounds(start, end, step, dim)
        if not len(range(start, end, step)):
            cx.fail(f"slices nothing from axis {axis} (size {dim}); mcc does not compile empty tensors")
        if (start, end, step) != (0, dim, 1):
            for key, v in zip(kept, (start, end, axis, step)):
                kept[key].append(v)
    return cx.emit("slice", [x], **kept) if kept["axes"] else x


@lowers("Pad")
def pad(cx, x, pads, value=None, axes=None):
    mode = cx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        cx.fail(f"mode '{mode}' is not supported (constant, reflect and edge are)")
    rank, pads = _rank(cx, x), cx.ints(pads, "pads")
    axes = [a % rank for a in cx.ints(axes, "axes")] if axes is not None else list(range(rank))
    if any(p < 0 for p in pads):
        cx.fail("negative padding (cropping) is not supported")
    pairs = [[0, 0] for _ in range(rank)]
    for i, axis in enumerate(axes):  # ONNX lists all begins, then all ends
        pairs[axis] = [pads[i], pads[i + len(axes)]]
    if not any(p for pair in pairs for p in pair):
        return x
    fill = 0.0 if value is None or mode != "constant" else cx.scalar(value, "constant_value")
    return cx.emit("pad", [x], pads=[p for pair in pairs for p in pair], value=fill, mode=mode)


# ---- resampling -----------------------------------------------------------------------------------------------
@lowers("Resize")
def resize(cx, x, roi=None, scales=None, sizes=None):
    """Nearest and (bi)linear resizing of H and W by output size. The coordinate modes the IR's resize has are
    kept; pytorch_half_pixel is half_pixel for sizes above 1 and asymmetric (coordinate 0) for size 1. A scale is
    accepted when it is exactly out / in, the ratio the IR's resize (and TFLite's) computes with."""
    mode = {"nearest": "nearest", "linear": "bilinear"}.get(cx.attr("mode", "nearest"))
    if mode is None:
        cx.fail(f"mode '{cx.attr('mode')}' is not supported (nearest and linear are)")
    _require_2d(cx, x, "resizing")
    if mode == "bilinear" and cx.attr("antialias", 0):
        cx.fail("antialias=1 is not supported")
    if cx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        cx.fail("keep_aspect_ratio_policy other than 'stretch' is not supported")
    out, shape = cx.out_shape(), cx.shape(x)
    if out[:2] != shape[:2]:
        cx.fail(f"resizes the batch or channel axis ({shape} -> {out}); only H and W can be resized")
    if out == shape:
        return x
    coordinates = cx.attr("coordinate_transformation_mode", "half_pixel")
    if coordinates == "pytorch_half_pixel":
        wanted = {"half_pixel" if o > 1 else "asymmetric" for o, i in zip(out[2:], shape[2:]) if (o, i) != (1, 1)}
        if len(wanted) > 1:
            cx.fail("pytorch_half_pixel with one output size 1 and the other larger is not supported")
        coordinates = wanted.pop()
    if coordinates not in ("half_pixel", "align_corners", "asymmetric"):
        cx.fail(f"coordinate_transformation_mode '{coordinates}' is not supported")
    if scales is not None and cx.shape(scales) != (0,) and coordinates != "align_corners":
        given = np.asarray(cx.require_const(scales, "scales").value, np.float32).reshape(-1)
        axes = cx.attr("axes", list(range(4)))
        for axis, s in zip(axes, given):
            axis %= 4
            if axis >= 2 and s != np.float32(out[axis]) / np.float32(shape[axis]):
                cx.fail(f"scale {s:g} maps axis {axis}'s {shape[axis]} to {out[axis]}, a ratio of "
                        f"{out[axis] / shape[axis]:g} that onnxruntime does not use; give sizes instead of scales")
    rounding = {"nearest_mode": cx.attr("nearest_mode", "round_prefer_floor")} if mode == "nearest" else {}
    return cx.emit("resize", [x], mode=mode, size=list(out[2:]), coordinate_transformation_mode=coordinates,
                   **rounding)


# ---- math (issue 14, ops-math) --------------------------------------------------------------------------------
for _onnx, _op in (("Neg", "neg"), ("Abs", "abs"), ("Sqrt", "sqrt"), ("Exp", "exp"), ("Log", "log"), ("Erf", "erf")):
    lowers(_onnx)(_unary(_op))


@lowers("Reciprocal")
def reciprocal(cx, x):
    return cx.emit("div", [cx.const(1.0), x])


@lowers("Gelu")
def gelu(cx, x):
    return cx.emit("gelu", [x], approximate=cx.attr("approximate", "none"))


@lowers("Pow")
def pow_(cx, x, exponent):
    """A constant one-value exponent of 2, 0.5, -0.5 or 1 folds into square, sqrt, rsqrt or nothing (POW_FOLDS)."""
    if isinstance(exponent, Const) and exponent.value.size == 1:
        value = float(exponent.value.reshape(-1)[0])
        if value in POW_FOLDS:
            return x if POW_FOLDS[value] is None else cx.emit(POW_FOLDS[value], [x])
    return cx.emit("pow", [x, exponent])


def _reduce_axes(cx, x, axes, input_since: int):
    """The sorted non-negative axes of a Reduce* node: an attribute before opset `input_since`, an input from it;
    None when the node reduces nothing (no axes with noop_with_empty_axes)."""
    axes = cx.attr("axes") if cx.opset < input_since else (cx.ints(axes, "axes") if axes is not None else None)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return None
        axes = range(_rank(cx, x))
    return sorted(a % _rank(cx, x) for a in axes)


def _reduction(op: str, input_since: int, before: str | None = None, after: str | None = None):
    """Reduce* as the IR reduction `op`, with an elementwise op before (ReduceSumSquare's square) or after
    (ReduceL2's sqrt)."""
    def lower(cx, x, axes=None):
        axes = _reduce_axes(cx, x, axes, input_since)
        if axes is None:  # noop_with_empty_axes: "equivalent to the input tensor"
            return x
        if before is not None:
            x = cx.emit(before, [x])
        y = cx.emit(op, [x], axes=axes, keepdims=bool(cx.attr("keepdims", 1)))
        return y if after is None else cx.emit(after, [y])
    return lower


lowers("ReduceSum")(_reduction("sum", 13))
lowers("ReduceMax")(_reduction("reduce_max", 18))
lowers("ReduceMin")(_reduction("reduce_min", 18))
lowers("ReduceSumSquare")(_reduction("sum", 18, before="square"))
lowers("ReduceL2")(_reduction("sum", 18, before="square", after="sqrt"))
lowers("Sum")(_variadic("add"))


@lowers("Mean")
def mean_of(cx, *tensors):
    """The variadic Mean: a chain of adds, then a multiply by 1 / n."""
    total = _variadic("add")(cx, *tensors)
    return total if len(tensors) == 1 else cx.emit("mul", [total, cx.const(1.0 / len(tensors))])


@lowers("LRN")
def lrn(cx, x):
    _require_2d(cx, x, "local response normalization")
    from ..formats.onnx.opmap import f32  # ONNX float attributes are float32: their shortest decimal

    return cx.emit("lrn", [x], size=int(cx.attr("size")), alpha=f32(cx.attr("alpha", 1e-4)),
                   beta=f32(cx.attr("beta", 0.75)), bias=f32(cx.attr("bias", 1.0)))


# ---- recurrent layers (unrolled by frontend.recurrent) --------------------------------------------------------
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_TORCH_GATE_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}  # ONNX's (i, o, f, c) and (z, r, h) blocks


def _gates(a: np.ndarray, kind: str) -> np.ndarray:
    """Gate blocks (along axis 0) in torch's order, the one frontend.recurrent takes."""
    order = _TORCH_GATE_ORDER[kind]
    return a.reshape(len(order), -1, *a.shape[1:])[order].reshape(a.shape).astype(np.float32)


def _state(v):
    """An initial state as recurrent.select takes it: a run-time tensor, a numpy array, or None (zeros)."""
    return np.asarray(v.value, np.float32) if isinstance(v, Const) else v


@lowers("LSTM", "GRU")
def recurrent(cx, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, peepholes=None):
    """Unrolled over the static sequence length; every direction, both layouts, GRU's linear_before_reset 0 and 1.
    Refused: activations other than the defaults, clip, input_forget, peepholes, and sequence_lens shorter than
    the sequence (which would need per-batch masking)."""
    kind, label = cx.node.op_type, node_label(cx.node)
    direction = cx.attr("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    acts = cx.attr("activations")
    if acts is not None and list(acts) != _DEFAULT_ACTIVATIONS[kind] * dirs:
        cx.fail(f"activations {list(acts)} are not supported; mcc unrolls {kind} with its default activations "
                f"{_DEFAULT_ACTIVATIONS[kind]} only")
    for name in ("activation_alpha", "activation_beta", "clip", "input_forget"):
        if cx.attr(name):
            cx.fail(f"attribute '{name}' is not supported; export the layer without it")
    if peepholes is not None and (not isinstance(peepholes, Const) or np.any(peepholes.value)):
        cx.fail("peephole connections (input P) are not supported")
    layout = cx.attr("layout", 0)
    time_axis, state_axis = (0, 0) if layout == 0 else (1, 1)
    steps_n, batch = cx.shape(x)[time_axis], cx.shape(x)[1 - time_axis]
    if sequence_lens is not None and any(n != steps_n for n in cx.ints(sequence_lens, "sequence_lens")):
        cx.fail(f"sequence_lens shorter than the sequence ({steps_n} steps) is not supported; mcc unrolls every "
                "batch entry over the whole sequence")
    w, r = (cx.require_const(v, what).value for v, what in ((w, "W"), (r, "R")))
    hidden = r.shape[-1]
    gates = w.shape[1]
    b = cx.require_const(b, "B").value if b is not None else np.zeros((dirs, 2 * gates), np.float32)
    steps = time_steps(cx, x, time_axis)
    h0, c0 = _state(initial_h), _state(initial_c)
    ys, hs, cs = [], [], []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        cell = Cell(_gates(w[d], kind), _gates(r[d], kind), _gates(b[d, :gates], kind), _gates(b[d, gates:], kind),
                    name=f"{label}.{'reverse' if reverse else 'forward'}")
        seq, h, c = unroll(cx, kind, steps, cell, select(cx, h0, state_axis, d), select(cx, c0, state_axis, d),
                           reverse, bool(cx.attr("linear_before_reset", 0)) if kind == "GRU" else True)
        ys.append(seq)
        hs.append(h)
        cs.append(c)
    note(cx, kind, label, steps_n)
    wanted = [bool(name) for name in cx.node.output] + [False] * 3
    y_shape = (steps_n, dirs, batch, hidden) if layout == 0 else (batch, steps_n, dirs, hidden)
    state_shape = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    y = stack(cx, [ys[d][t] for t in range(steps_n) for d in range(dirs)], layout, y_shape) if wanted[0] else None
    y_h = stack(cx, hs, layout, state_shape) if wanted[1] else None
    y_c = stack(cx, cs, layout, state_shape) if wanted[2] and kind == "LSTM" else None
    return y, y_h, y_c


# ---- data movement (issue 14, ops-math) ------------------------------------------------------------------------
@lowers("Gather")
def gather(cx, data, indices):
    """Constant indices (negative ones counted from the end) picking from a run-time tensor, as int32 (TFLite's
    GATHER index type), or a constant table looked up at the model's integer input (an embedding)."""
    from ..ir import Tensor

    if isinstance(data, Const):
        if isinstance(indices, Const):
            cx.fail("Gather of constants should have been folded")
        table = Tensor(cx._unique(data.name), data=np.asarray(data.value))
        return cx.emit("gather", [table, indices], axis=cx.attr("axis", 0) % len(table.shape))
    if not isinstance(indices, Const):
        cx.fail("mcc lowers Gather of a run-time tensor at constant indices, or of a constant table at run-time ids")
    axis = cx.attr("axis", 0) % _rank(cx, data)
    dim = cx.shape(data)[axis]
    index = np.asarray(indices.value).astype(np.int64)
    if index.size and not (-dim <= index.min() and index.max() < dim):
        cx.fail(f"indices outside [-{dim}, {dim}) of axis {axis}")
    t = Tensor(cx._unique(indices.name), data=(index % dim).astype(np.int32))  # keeps a 0-d index 0-d
    return cx.emit("gather", [data, t], axis=axis)


@lowers("Tile")
def tile(cx, x, repeats):
    multiples = cx.ints(repeats, "repeats")
    return x if all(m == 1 for m in multiples) else cx.emit("tile", [x], multiples=multiples)


@lowers("DepthToSpace")
def depth_to_space(cx, x):
    _require_2d(cx, x, "DepthToSpace")
    return cx.emit("depth_to_space", [x], block_size=int(cx.attr("blocksize")), mode=cx.attr("mode", "DCR"))


@lowers("SpaceToDepth")
def space_to_depth(cx, x):
    _require_2d(cx, x, "SpaceToDepth")
    return cx.emit("space_to_depth", [x], block_size=int(cx.attr("blocksize")))


# ---- 1-D convolution and pooling ------------------------------------------------------------------------------
_LIFTED = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_shape": 1, "output_padding": 0}


class _Lifted:
    """The lowering context as a 2-D lowering over [N, C, 1, L] sees a 1-D op: window attributes get a leading
    axis of size 1 (kernel 1, stride 1, no padding); everything else is the context's."""

    def __init__(self, cx):
        self._cx = cx

    def __getattr__(self, name):
        return getattr(self._cx, name)

    def attr(self, name: str, default=None):
        value = self._cx.attr(name)
        if value is None:
            return default
        if name == "pads":
            return [0, value[0], 0, value[1]]
        return [_LIFTED[name], *value] if name in _LIFTED else value


def _one_d(lower):
    """A Conv, ConvTranspose or pool lowering that also takes a 3-D [N, C, L] input: it runs as the 2-D op over
    [N, C, 1, L] between two reshapes; the weight gets its axis of size 1 at compile time. (onnx2tf does the same
    with EXPAND_DIMS / SQUEEZE.) Under NHWC the reshapes move only the size-1 axis, so the layout pass turns them
    into reshapes and adds no transpose."""
    def lowering(cx, x, *rest):
        if _rank(cx, x) != 3:
            return lower(cx, x, *rest)
        n, c, length = cx.shape(x)
        x4 = cx.emit("reshape", [x], shape=[n, c, 1, length])
        rest = [cx.const(r.value[:, :, None, :], like=r) if isinstance(r, Const) and r.value.ndim == 3 else r
                for r in rest]
        result = lower(_Lifted(cx), x4, *rest)
        y = result[0] if isinstance(result, tuple) else result
        n, c, _, length = y.shape
        y = cx.emit("reshape", [y], shape=[n, c, length])
        return (y, *result[1:]) if isinstance(result, tuple) else y
    return lowering


for _name in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
    LOWERINGS[_name] = _one_d(LOWERINGS[_name])


# ---- normalization (issue 14, idioms; decomposed by frontend.normalization) ------------------------------------
def _affine_params(cx, *values):
    return [None if v is None else cx.require_const(v, "scale or bias") for v in values]


@lowers("LayerNormalization")
def layer_normalization(cx, x, scale, bias=None):
    """Over the axes from `axis` on; the Mean and InvStdDev outputs are not computed (a model that reads them is
    refused where it does)."""
    rank = _rank(cx, x)
    axis = cx.attr("axis", -1) % rank
    y = normalize(cx, x, list(range(axis, rank)), cx.attr("epsilon", 1e-5), *_affine_params(cx, scale, bias))
    return y, None, None


@lowers("InstanceNormalization")
def instance_normalization(cx, x, scale, bias):
    return group_normalize(cx, x, cx.shape(x)[1], cx.attr("epsilon", 1e-5), *_affine_params(cx, scale, bias))


@lowers("GroupNormalization")
def group_normalization(cx, x, scale, bias):
    """Opset 18's scale and bias hold one value per group (opset 21's one per channel): repeated per channel."""
    groups, channels = int(cx.attr("num_groups")), cx.shape(x)[1]
    scale, bias = _affine_params(cx, scale, bias)
    if scale.value.size == groups != channels:
        scale, bias = (cx.const(np.repeat(v.value, channels // groups), like=v) for v in (scale, bias))
    return group_normalize(cx, x, groups, cx.attr("epsilon", 1e-5), scale, bias)
