"""The core-ATen -> IR lowering table: one small function per aten op, registered under the op's full name.

Each function receives the lowering context `cx` (frontend.torch_export._Lowering) and the node's arguments,
already mapped: an IR Tensor for a value computed at run time, a Const for a value known at compile time, plain
Python values otherwise. A function returns the IR tensor (or a tuple, for multi-output ops) that stands for the
node's result; returning its input unchanged removes the node. Nodes whose inputs are all constants never get
here: the walker folds them in torch.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..ir import Tensor
from ..ir.ops import NEAREST_MODES, POW_FOLDS, RESIZE_COORDINATES, broadcast_ones
from ..runtime.kernels.resize import nearest_indices, source_coordinates
from . import normalization, recurrent

LOWERINGS: dict = {}
# Training-IR op -> fn(node) giving the FX names of the core-ATen nodes run_decompositions would turn that node into
# and the index of the one that stands for its result, or None where it would make something else (see the end).
CORE_FORMS: dict = {}
IN_PLACE_FORMS: set = set()  # the CORE_FORMS ops whose in-place variant (relu6_) decomposes as they do, renamed

# Nodes that compute nothing a compiled model needs (torch's own runtime checks).
SKIPPED = frozenset({"aten._assert_tensor_metadata.default"})


def lowers(*names):
    def register(fn):
        for name in names:
            LOWERINGS[f"aten.{name}"] = fn
        return fn
    return register


def _pair(v) -> list[int]:
    v = [int(i) for i in (v if isinstance(v, (list, tuple)) else [v])]
    return v * 2 if len(v) == 1 else v


def _axis(cx, x, dim: int) -> int:
    return dim % len(cx.shape(x))


# ---- convolution and matrix products ------------------------------------------------------------------
@lowers("convolution.default")
def convolution(cx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """2-D convolutions, and 1-D ones as the 2-D op over [N, C, 1, L] between two reshapes (torch.export's
    decomposition already does so for 1-D pooling), which the layout pass keeps transpose-free."""
    if len(cx.shape(x)) == 3:
        n, c, length = cx.shape(x)
        x4 = cx.emit("reshape", [x], shape=[n, c, 1, length])
        weight = cx.require_const(weight, "weight")
        weight = cx.const(weight.value.unsqueeze(2), like=weight)
        lift = lambda v, first: [first] + [int(i) for i in (v if isinstance(v, (list, tuple)) else [v])]  # noqa: E731
        y = convolution(cx, x4, weight, bias, lift(stride, 1), lift(padding, 0), lift(dilation, 1), transposed,
                        lift(output_padding, 0), groups)
        return cx.emit("reshape", [y], shape=list(cx.out_shape()))
    if len(cx.shape(x)) != 4:
        cx.fail(f"only 1-D and 2-D convolution is supported (input has shape {cx.shape(x)})")
    weight = cx.require_const(weight, "weight")
    inputs = [x, weight] + ([cx.require_const(bias, "bias")] if bias is not None else [])
    ph, pw = _pair(padding)
    attrs = {"stride": _pair(stride), "padding": [ph, pw, ph, pw], "dilation": _pair(dilation)}
    if transposed:  # torch's padding crops the output; its weight is [C_in, C_out / groups, kh, kw], as the IR's
        return cx.emit("transpose_conv2d", inputs, groups=int(groups), output_padding=_pair(output_padding),
                       **attrs)
    in_channels, out_channels = cx.shape(x)[1], cx.shape(weight)[0]
    # A 1-input-channel conv stays conv2d: "depthwise" is for the per-channel filters of a grouped layer.
    if groups == in_channels > 1:
        return cx.emit("depthwise_conv2d", inputs, multiplier=out_channels // in_channels, **attrs)
    return cx.emit("conv2d", inputs, groups=int(groups), **attrs)


def _fully_connected(cx, x, weight_t, bias):
    """x @ weight_t + bias as fully_connected, whose weight is [out, in]."""
    if len(cx.shape(x)) != 2:
        cx.fail(f"matrix products are lowered for 2-D inputs only (got {cx.shape(x)})")
    weight = cx.const(weight_t.value.T, like=weight_t)
    return cx.emit("fully_connected", [x, weight] + ([bias] if bias is not None else []))


@lowers("addmm.default")
def addmm(cx, bias, x, weight_t, *, beta=1, alpha=1):
    weight_t = cx.require_const(weight_t, "weight")
    bias = cx.require_const(bias, "bias")
    out_features = cx.shape(weight_t)[1]
    if bias.value.numel() != out_features:
        cx.fail(f"bias of shape {cx.shape(bias)} does not have one value per output feature ({out_features})")
    weight_t = cx.const(weight_t.value * alpha, like=weight_t)
    return _fully_connected(cx, x, weight_t, cx.const(bias.value.reshape(-1) * beta, like=bias))


@lowers("mm.default")
def mm(cx, x, weight_t):
    """x @ W with a constant W is a fully connected layer; a run-time right-hand side, a batch_matmul."""
    if isinstance(x, Tensor) and not isinstance(weight_t, Tensor):
        return _fully_connected(cx, x, weight_t, None)
    return cx.emit("batch_matmul", [x, weight_t])


@lowers("bmm.default")
def bmm(cx, a, b):
    """A constant right-hand side that is one matrix repeated over the batch (torch.export's decomposition of
    nn.Linear on a non-contiguous input: expand, then bmm) makes one fully connected layer over all rows, which
    int8 keeps integer; any other product is a batch_matmul."""
    if isinstance(a, Tensor) and not isinstance(b, Tensor) and bool((b.value == b.value[:1]).all()):
        n, m, k = cx.shape(a)
        y = _fully_connected(cx, cx.emit("reshape", [a], shape=[n * m, k]), cx.const(b.value[0], like=b), None)
        return cx.emit("reshape", [y], shape=[n, m, cx.shape(b)[2]])
    return cx.emit("batch_matmul", [a, b])


@lowers("expand.default")
def expand(cx, x, size, *, implicit=False):
    """torch.export's matmul decomposition expands both operands to common batch axes before its bmm; where the
    sizes do not change that is a reshape. A real broadcast is a multiply by ir.ops.broadcast_ones, as ONNX's
    Expand."""
    shape = cx.out_shape()
    if int(np.prod(shape)) == int(np.prod(cx.shape(x))):
        return reshape(cx, x)
    return cx.emit("mul", [x, cx.const(broadcast_ones(cx.shape(x), shape))])


@lowers("_native_batch_norm_legit_no_training.default")
def batch_norm(cx, x, weight, bias, mean, var, momentum, eps):
    """A BatchNorm without affine parameters gets ones and zeros, named like the parameters it lacks."""
    mean = cx.require_const(mean, "running mean")
    channels, layer = cx.shape(mean)[0], mean.name.rsplit(".", 1)[0]
    weight = weight if weight is not None else cx.const(torch.ones(channels), name=f"{layer}.weight")
    bias = bias if bias is not None else cx.const(torch.zeros(channels), name=f"{layer}.bias")
    stats = [cx.require_const(v, "statistic") for v in (mean, var, weight, bias)]
    return cx.emit("batch_norm", [x, *stats], eps=float(eps)), None, None


# ---- activations --------------------------------------------------------------------------------------
def _clamp(cx, x, lo, hi):
    """relu and relu6 when the bounds say so; a one-sided bound is a maximum/minimum with a constant."""
    if lo == 0 and hi in (None, 6):
        return cx.emit("relu" if hi is None else "relu6", [x])
    if hi is None:
        return cx.emit("maximum", [x, cx.const(float(lo))])
    if lo is None:
        return cx.emit("minimum", [x, cx.const(float(hi))])
    return cx.emit("clip", [x], min=float(lo), max=float(hi))


@lowers("clamp.default")
def clamp(cx, x, min=None, max=None):
    return _clamp(cx, x, min, max)


@lowers("hardtanh.default")
def hardtanh(cx, x, min_val=-1.0, max_val=1.0):
    return _clamp(cx, x, min_val, max_val)


def _unary(op):
    return lambda cx, x: cx.emit(op, [x])


for _op in ("relu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid"):
    lowers(f"{_op}.default")(_unary(_op))


@lowers("leaky_relu.default")
def leaky_relu(cx, x, negative_slope=0.01):
    return cx.emit("leaky_relu", [x], alpha=float(negative_slope))


@lowers("prelu.default")
def prelu(cx, x, weight):
    """torch's weight is one slope per channel (axis 1); the IR's alpha broadcasts like numpy, so align it."""
    weight = cx.require_const(weight, "slope")
    rank = len(cx.shape(x))
    shape = [-1] + [1] * (rank - 2) if rank >= 2 and weight.value.numel() > 1 else [-1]
    return cx.emit("prelu", [x, cx.const(weight.value.reshape(shape), like=weight)])


@lowers("_softmax.default")
def softmax(cx, x, dim, half_to_float):
    return cx.emit("softmax", [x], axis=_axis(cx, x, dim))


# ---- elementwise arithmetic ---------------------------------------------------------------------------
def _operand(cx, v):
    """A Python number operand becomes a 0-d constant, which broadcasts like torch's scalar."""
    return v if not isinstance(v, (int, float)) else cx.const(float(v))


def _scaled(cx, v, alpha):
    """alpha * v for add/sub's `alpha`, folded when v is constant."""
    if alpha == 1:
        return _operand(cx, v)
    if isinstance(v, Tensor):
        return cx.emit("mul", [v, cx.const(float(alpha))])
    v = _operand(cx, v)
    return cx.const(v.value * alpha, like=v)


@lowers("add.Tensor", "add.Scalar")
def add(cx, a, b, *, alpha=1):
    return cx.emit("add", [_operand(cx, a), _scaled(cx, b, alpha)])


@lowers("sub.Tensor", "sub.Scalar")
def sub(cx, a, b, *, alpha=1):
    return cx.emit("sub", [_operand(cx, a), _scaled(cx, b, alpha)])


@lowers("mul.Tensor", "mul.Scalar")
def mul(cx, a, b):
    return cx.emit("mul", [_operand(cx, a), _operand(cx, b)])


@lowers("div.Tensor", "div.Scalar")
def div(cx, a, b):
    return cx.emit("div", [_operand(cx, a), _operand(cx, b)])


@lowers("reciprocal.default")
def reciprocal(cx, x):
    return cx.emit("div", [cx.const(1.0), x])


# ---- pooling and reductions ---------------------------------------------------------------------------
def _pool_padding(cx, x, kernel, stride, padding, ceil_mode) -> tuple[list[int], bool]:
    """[top, left, bottom, right] padding; ceil_mode becomes extra bottom/right padding.

    torch's ceil_mode adds a last window only if it starts inside the input or its left padding; the extra
    padding is exactly what makes the floor formula produce that window. Returns also whether any was added.
    """
    pads, extra = [], []
    for size, k, s, p in zip(cx.shape(x)[2:], kernel, stride, padding):
        out = (size + 2 * p - k) // s + 1
        if ceil_mode:
            out = -(-(size + 2 * p - k) // s) + 1
            if (out - 1) * s >= size + p:
                out -= 1
        pads.append(p)
        extra.append(max(0, (out - 1) * s + k - (size + 2 * p)))
    return [pads[0], pads[1], pads[0] + extra[0], pads[1] + extra[1]], any(extra)


def _pool_args(cx, x, kernel, stride, padding):
    if len(cx.shape(x)) != 4:
        cx.fail(f"only 2-D pooling of NCHW tensors is supported (input has shape {cx.shape(x)})")
    kernel = _pair(kernel)
    return kernel, _pair(stride) if stride else kernel, _pair(padding)


@lowers("max_pool2d_with_indices.default")
def max_pool2d(cx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    kernel, stride, padding = _pool_args(cx, x, kernel_size, stride, padding)
    if _pair(dilation) != [1, 1]:
        cx.fail("dilated max pooling is not supported")
    pads, _ = _pool_padding(cx, x, kernel, stride, padding, ceil_mode)
    return cx.emit("max_pool2d", [x], kernel=kernel, stride=stride, padding=pads), None


@lowers("avg_pool2d.default")
def avg_pool2d(cx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    kernel, stride, padding = _pool_args(cx, x, kernel_size, stride, padding)
    if divisor_override is not None:
        cx.fail("avg_pool2d with divisor_override is not supported")
    pads, extended = _pool_padding(cx, x, kernel, stride, padding, ceil_mode)
    # torch counts the user's padding but never the ceil_mode overhang. Without user padding that is the
    # count of real elements (the IR's default); with both, no single IR rule matches.
    if count_include_pad and any(padding) and extended:
        cx.fail("avg_pool2d with padding, ceil_mode and count_include_pad=True is not supported; "
                "use count_include_pad=False or ceil_mode=False")
    return cx.emit("avg_pool2d", [x], kernel=kernel, stride=stride, padding=pads,
                   count_include_pad=bool(count_include_pad and any(padding)))


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows along one axis: window i spans [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_pool(cx, x, output_size, pool: str):
    """Adaptive pooling as one `pool` (kernel = stride) when both sizes divide; otherwise axis by axis: a pool
    with a one-wide kernel along an axis that divides, and along one that does not (its windows overlap and
    differ in length, which no single TFLite or ONNX pool expresses) a slice and a one-window pool per window,
    concatenated. Max is separable exactly; a mean of row means equals the window's mean because every row
    holds as many elements. Pools rather than mean/reduce_max, because onnxruntime has integer pools but no
    integer mean over H alone. torch.onnx's exporter refuses these sizes."""
    if len(cx.shape(x)) != 4:
        cx.fail(f"only 2-D adaptive pooling of NCHW tensors is supported (input has shape {cx.shape(x)})")
    sizes, out = cx.shape(x)[2:], _pair(output_size)
    if list(sizes) == out:
        return x
    if all(s % o == 0 for s, o in zip(sizes, out)):
        kernel = [s // o for s, o in zip(sizes, out)]
        return cx.emit(pool, [x], kernel=kernel, stride=kernel)
    for axis, (size, n) in enumerate(zip(sizes, out), start=2):
        along = lambda k: [k if a == axis else 1 for a in (2, 3)]  # noqa: E731
        if size % n == 0:
            if size != n:
                x = cx.emit(pool, [x], kernel=along(size // n), stride=along(size // n))
            continue
        parts = []
        for start, end in _adaptive_windows(size, n):
            part = slice_(cx, x, axis, start, end)
            parts.append(part if end - start == 1 else cx.emit(pool, [part], kernel=along(end - start),
                                                                stride=along(end - start)))
        x = cx.emit("concat", parts, axis=axis)
    return x


@lowers("_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(cx, x, output_size):
    if _pair(output_size) == [1, 1] and cx.shape(x)[2:] != (1, 1):
        return cx.emit("mean", [x], axes=[2, 3], keepdims=True)
    return _adaptive_pool(cx, x, output_size, "avg_pool2d")


@lowers("adaptive_max_pool2d.default")
def adaptive_max_pool2d(cx, x, output_size):
    """Max pooling as adaptive_avg_pool2d (the indices output is not computed)."""
    return _adaptive_pool(cx, x, output_size, "max_pool2d"), None


@lowers("mean.dim", "mean.default")
def mean(cx, x, dim=None, keepdim=False, *, dtype=None):
    axes = sorted(_axis(cx, x, d) for d in dim) if dim else list(range(len(cx.shape(x))))
    return cx.emit("mean", [x], axes=axes, keepdims=bool(keepdim))


# ---- shapes -------------------------------------------------------------------------------------------
@lowers("view.default", "_unsafe_view.default", "squeeze.default", "squeeze.dim", "squeeze.dims",
        "unsqueeze.default")
def reshape(cx, x, *shape_args):
    """Every view-like op is a reshape to the shape torch computed (static shapes make that exact)."""
    shape = cx.out_shape()
    return x if shape == cx.shape(x) else cx.emit("reshape", [x], shape=list(shape))


@lowers("permute.default")
def permute(cx, x, dims):
    perm = [_axis(cx, x, d) for d in dims]
    return x if perm == sorted(perm) else cx.emit("transpose", [x], perm=perm)


@lowers("cat.default")
def cat(cx, tensors, dim=0):
    return cx.emit("concat", list(tensors), axis=_axis(cx, tensors[0], dim))


@lowers("constant_pad_nd.default")
def constant_pad(cx, x, pad, value=0.0):
    """torch lists (before, after) pairs from the last axis backwards; the IR lists them from axis 0."""
    if any(p < 0 for p in pad):
        cx.fail("negative padding (cropping) is not supported")
    return cx.emit("pad", [x], pads=_torch_pads(cx, x, pad), value=float(value))


def _torch_pads(cx, x, pad) -> list[int]:
    rank = len(cx.shape(x))
    pairs = [[0, 0]] * (rank - len(pad) // 2) + [list(pad[i:i + 2]) for i in range(len(pad) - 2, -1, -2)]
    return [int(p) for pair in pairs for p in pair]


@lowers("clone.default", "alias.default")
def identity(cx, x, **_):
    return x


# ---- slicing and resampling ---------------------------------------------------------------------------
def _slice_bounds(cx, x, dim, start, end, step) -> tuple[int, int, int, int]:
    """(axis, start, end, step) with torch's bounds (None, negative, past the end) clamped into the IR's form."""
    axis = _axis(cx, x, dim)
    size = cx.shape(x)[axis]
    start, end = (v + size if v < 0 else v for v in (0 if start is None else start, size if end is None else end))
    start, end = min(max(start, 0), size), min(max(end, 0), size)
    if start >= end:
        cx.fail(f"slices nothing from axis {axis} (size {size}); mcc does not compile empty tensors")
    return axis, start, end, int(step)


@lowers("slice.Tensor")
def slice_(cx, x, dim=0, start=None, end=None, step=1):
    axis, start, end, step = _slice_bounds(cx, x, dim, start, end, step)
    if (start, end, step) == (0, cx.shape(x)[axis], 1):
        return x
    return cx.emit("slice", [x], starts=[start], ends=[end], axes=[axis], steps=[step])


@lowers("select.int")
def select(cx, x, dim, index):
    """x[..., i, ...] is a one-element slice whose axis a reshape then drops."""
    return reshape(cx, slice_(cx, x, dim, index, index + 1 if index != -1 else None))


@lowers("split_with_sizes.default")
def split(cx, x, split_sizes, dim=0):
    sizes = [int(s) for s in split_sizes]
    if len(sizes) == 1:
        return (x,)
    return cx.emit("split", [x], n_outputs=len(sizes), axis=_axis(cx, x, dim), sizes=sizes)


def _resampled_coordinates(cx, x, *args) -> tuple[np.ndarray, np.ndarray]:
    """The input row and column that each output row and column of torch's resize reads, found by running the
    node's own aten op on ramps (linear resampling of a ramp returns its clamped coordinate), so torch's
    scale_factor arithmetic and special cases are the reference, not a transcription of them."""
    h, w = cx.shape(x)[2:]
    rows = torch.arange(h, dtype=torch.float32).reshape(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).reshape(1, w).expand(h, w)
    with torch.no_grad():
        out = cx.node.target(torch.stack([rows, cols]).unsqueeze(1), *args)
    return out[0, 0, :, 0].numpy(), out[1, 0, 0, :].numpy()


def _resize(cx, x, args, mode: str, coordinates: str, rounding: str | None = None):
    """A resize of H and W that reads what torch's reads: bilinear the same coordinates up to float rounding,
    nearest the same rows and columns. torch multiplies by in / out where the IR (like ONNX) divides by out / in,
    so at a few sizes (nearest 14 -> 2) the IR spelling of torch's mode rounds differently and another spelling
    that reads the same rows is taken. torch scales by 1 / scale_factor when given one, so a scale_factor that is
    not out / in (6 * 1.7 -> 10) is refused."""
    if len(cx.shape(x)) != 4:
        cx.fail(f"only 2-D resizing of NCHW tensors is supported (input has shape {cx.shape(x)})")
    (h, w), size = cx.shape(x)[2:], list(cx.out_shape()[2:])
    axes = list(zip(("row", "column"), _resampled_coordinates(cx, x, *args), (h, w), size))
    if mode == "nearest":
        spellings = [(coordinates, rounding)] + [s for s in itertools.product(RESIZE_COORDINATES, NEAREST_MODES)
                                                 if s != (coordinates, rounding)]
        reads = lambda s, n, out: nearest_indices(source_coordinates(out, n, s[0]), n, s[1])  # noqa: E731
        same = np.array_equal
    else:
        spellings = [(coordinates, None)]
        reads = lambda s, n, out: np.clip(source_coordinates(out, n, s[0]), 0, n - 1)  # noqa: E731
        same = lambda a, b: np.allclose(a, b, rtol=0, atol=1e-4)  # noqa: E731
    spelling = next((s for s in spellings if all(same(reads(s, n, out), got) for _, got, n, out in axes)), None)
    if spelling is None:
        axis, got, n, out = next(a for a in axes if not same(reads(spellings[0], a[2], a[3]), a[1]))
        ours = reads(spellings[0], n, out)
        o = int(np.argmax(np.abs(ours - got)))
        advice = ("pass size=(out_h, out_w) instead of scale_factor" if args[-1] is not None
                  else "resize to another size or bilinearly")
        cx.fail(f"resizing {n} {axis}s to {out}, torch reads input {axis} {got[o]:g} at output {axis} {o} where "
                f"mcc's resize by {out}/{n} reads {ours[o]:g}; {advice}")
    if size == [h, w]:
        return x
    rounding = {"nearest_mode": spelling[1]} if mode == "nearest" else {}
    return cx.emit("resize", [x], mode=mode, size=size, coordinate_transformation_mode=spelling[0], **rounding)


@lowers("upsample_nearest2d.vec")
def upsample_nearest(cx, x, output_size, scale_factors):
    """torch's nearest reads floor(o * in / out)."""
    return _resize(cx, x, (output_size, scale_factors), "nearest", "asymmetric", "floor")


@lowers("_upsample_nearest_exact2d.vec")
def upsample_nearest_exact(cx, x, output_size, scale_factors):
    """torch's nearest-exact reads floor((o + 0.5) * in / out): half-pixel centres rounded half up."""
    return _resize(cx, x, (output_size, scale_factors), "nearest", "half_pixel", "round_prefer_ceil")


@lowers("upsample_bilinear2d.vec")
def upsample_bilinear(cx, x, output_size, align_corners, scale_factors):
    coordinates = "align_corners" if align_corners else "half_pixel"
    return _resize(cx, x, (output_size, align_corners, scale_factors), "bilinear", coordinates)


# ---- math (issue 14, ops-math) ------------------------------------------------------------------------
for _op in ("neg", "abs", "sqrt", "rsqrt", "exp", "log", "erf"):
    lowers(f"{_op}.default")(_unary(_op))


@lowers("gelu.default")
def gelu(cx, x, *, approximate="none"):
    return cx.emit("gelu", [x], approximate=approximate)


@lowers("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def pow_(cx, x, exponent):
    """A constant exponent of 2, 0.5, -0.5 or 1 folds into square, sqrt, rsqrt or nothing (POW_FOLDS)."""
    if isinstance(exponent, (int, float)) and float(exponent) in POW_FOLDS and isinstance(x, Tensor):
        fold = POW_FOLDS[float(exponent)]
        return x if fold is None else cx.emit(fold, [x])
    return cx.emit("pow", [_operand(cx, x), _operand(cx, exponent)])


def _reduce(cx, op, x, dim, keepdim):
    """A reduction over `dim` (all axes when empty or None), as mean.dim."""
    if isinstance(dim, int):
        dim = [dim]
    axes = sorted(_axis(cx, x, d) for d in dim) if dim else list(range(len(cx.shape(x))))
    return cx.emit(op, [x], axes=axes, keepdims=bool(keepdim))


@lowers("sum.dim_IntList", "sum.default")
def sum_(cx, x, dim=None, keepdim=False, *, dtype=None):
    return _reduce(cx, "sum", x, dim, keepdim)


@lowers("amax.default")
def amax(cx, x, dim=(), keepdim=False):
    return _reduce(cx, "reduce_max", x, dim, keepdim)


@lowers("amin.default")
def amin(cx, x, dim=(), keepdim=False):
    return _reduce(cx, "reduce_min", x, dim, keepdim)


@lowers("max.dim")
def max_dim(cx, x, dim, keepdim=False):
    """The values of max over one axis; the indices are not computed (a model that reads them is refused)."""
    return _reduce(cx, "reduce_max", x, dim, keepdim), None


@lowers("min.dim")
def min_dim(cx, x, dim, keepdim=False):
    return _reduce(cx, "reduce_min", x, dim, keepdim), None


@lowers("max.default")
def max_all(cx, x):
    return _reduce(cx, "reduce_max", x, None, False)


@lowers("min.default")
def min_all(cx, x):
    return _reduce(cx, "reduce_min", x, None, False)
# ---- recurrent layers (unrolled by frontend.recurrent) -------------------------------------------------
def _recurrent(cx, kind, x, states, params, has_biases, num_layers, bidirectional, batch_first):
    """nn.LSTM / nn.GRU, kept whole by torch_export (KEEP_WHOLE): every layer and direction unrolled over the
    static sequence, torch's GRU being ONNX's linear_before_reset=1. Refused: proj_size (LSTM projections)."""
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per:
        cx.fail(f"{kind} with projections (proj_size > 0) is not supported")
    params = [cx.require_const(p, "weight").value.detach().numpy().astype(np.float32) for p in params]
    states = [s if isinstance(s, Tensor) else s.value.detach().numpy().astype(np.float32) for s in states]
    label, time_axis = cx.layer_name(), 1 if batch_first else 0
    steps = recurrent.time_steps(cx, x, time_axis)
    last_h, last_c = [], []
    for layer in range(num_layers):
        outputs = []
        for d in range(dirs):
            k = layer * dirs + d
            w_ih, w_hh, *biases = params[k * per:(k + 1) * per]
            b_ih, b_hh = biases or (np.zeros(len(w_ih), np.float32),) * 2
            cell = recurrent.Cell(w_ih, w_hh, b_ih, b_hh, name=f"{label}.l{layer}{'_reverse' if d else ''}")
            h0, c0 = (recurrent.select(cx, s, 0, k) for s in states + [None] * (2 - len(states)))
            seq, h, c = recurrent.unroll(cx, kind, steps, cell, h0, c0, reverse=d == 1)
            outputs.append(seq)
            last_h.append(h)
            last_c.append(c)
        steps = outputs[0] if dirs == 1 else [cx.emit("concat", list(pair), axis=1) for pair in zip(*outputs)]
    recurrent.note(cx, kind, label, len(steps))
    y_shape, state_shape = (tuple(v.shape) for v in cx.node.meta["val"][:2])
    y = recurrent.stack(cx, steps, time_axis, y_shape)
    h_n = recurrent.stack(cx, last_h, 0, state_shape)
    return (y, h_n, recurrent.stack(cx, last_c, 0, state_shape)) if kind == "LSTM" else (y, h_n)


@lowers("lstm.input")
def lstm(cx, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    return _recurrent(cx, "LSTM", x, list(hx), params, has_biases, num_layers, bidirectional, batch_first)


@lowers("gru.input")
def gru(cx, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    return _recurrent(cx, "GRU", x, [hx], params, has_biases, num_layers, bidirectional, batch_first)





# ---- data movement -------------------------------------------------------------------------------------
@lowers("index_select.default")
def index_select(cx, x, dim, index):
    """x picked along `dim` at constant indices (int32, TFLite's GATHER index type)."""
    index = cx.require_const(index, "index").value.to(torch.int64).numpy()
    axis = _axis(cx, x, dim)
    index = (index % cx.shape(x)[axis]).astype(np.int32)
    t = Tensor(cx._unique(f"{cx.node_name}.index"), data=index)
    return cx.emit("gather", [x, t], axis=axis)


@lowers("embedding.default")
def embedding(cx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """nn.Embedding: the constant table looked up at the model's integer input (token ids)."""
    return cx.emit("gather", [cx.require_const(weight, "weight"), indices], axis=0)


@lowers("repeat.default")
def repeat(cx, x, repeats):
    """torch's repeat may add leading axes: a reshape adds them first."""
    repeats = [int(r) for r in repeats]
    shape = list(cx.shape(x))
    if len(repeats) > len(shape):
        shape = [1] * (len(repeats) - len(shape)) + shape
        x = cx.emit("reshape", [x], shape=shape)
    return x if all(r == 1 for r in repeats) else cx.emit("tile", [x], multiples=repeats)


@lowers("pixel_shuffle.default")
def pixel_shuffle(cx, x, upscale_factor):
    return cx.emit("depth_to_space", [x], block_size=int(upscale_factor), mode="CRD")



@lowers("reflection_pad1d.default", "reflection_pad2d.default", "replication_pad1d.default",
        "replication_pad2d.default")
def mirror_pad(cx, x, padding):
    if any(p < 0 for p in padding):
        cx.fail("negative padding (cropping) is not supported")
    mode = "reflect" if "reflection" in str(cx.node.target) else "edge"
    return cx.emit("pad", [x], pads=_torch_pads(cx, x, padding), mode=mode)


# ---- normalization (issue 14, idioms; decomposed by frontend.normalization) ----------------------------
@lowers("native_layer_norm.default")
def layer_norm(cx, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The mean and rstd outputs are not computed (a model that reads them is refused)."""
    axes = list(range(len(cx.shape(x)) - len(normalized_shape), len(cx.shape(x))))
    return normalization.normalize(cx, x, axes, eps, *_optional_consts(cx, weight, bias)), None, None


@lowers("native_group_norm.default")
def group_norm(cx, x, weight, bias, n, c, hw, group, eps):
    return normalization.group_normalize(cx, x, int(group), eps, *_optional_consts(cx, weight, bias)), None, None


@lowers("_native_batch_norm_legit.no_stats")
def batch_norm_no_stats(cx, x, weight, bias, training, momentum, eps):
    """Batch statistics over every axis but the channels: how torch.export writes InstanceNorm (over a
    [1, N * C, H, W] view) and a BatchNorm without running statistics."""
    rank = len(cx.shape(x))
    weight, bias = (None if v is None else cx.const(v.value.reshape([-1] + [1] * (rank - 2)), like=v)
                    for v in _optional_consts(cx, weight, bias))
    axes = [0] + list(range(2, rank))
    return normalization.normalize(cx, x, axes, eps, weight, bias), None, None


def _optional_consts(cx, *values):
    return [None if v is None else cx.require_const(v, "affine parameter") for v in values]


# ---- strided views (issue 14, idioms) -----------------------------------------------------------------
def _view_sources(cx, x, args) -> np.ndarray:
    """For each element of the current view node's output, the C-order index of the element of `x` it reads
    (-1: memory that `x` does not hold). Found by running the node's own op on a ramp; as_strided addresses
    storage, not elements, so its ramp is laid into a storage with the strides torch gave `x`."""
    src = cx.node.args[0].meta["val"]
    ramp = np.arange(src.numel()).reshape(src.shape)
    if cx.node.target is not torch.ops.aten.as_strided.default:
        return cx.node.target(torch.from_numpy(ramp), *args).numpy()
    out = cx.node.meta["val"]
    last = [t.storage_offset() + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) for t in (src, out)]
    storage = np.full(max(last) + 1, -1, dtype=np.int64)
    strides = [s * storage.itemsize for s in src.stride()]
    np.lib.stride_tricks.as_strided(storage[src.storage_offset():], src.shape, strides)[...] = ramp
    return torch.from_numpy(storage).as_strided(out.shape, out.stride(), out.storage_offset()).numpy()


@lowers("as_strided.default", "unfold.default", "diagonal.default")
def strided_view(cx, x, *args):
    """A view that picks elements of its input by strides, lowered by what it reads: the input in order is a
    reshape; a strided box of it is a slice and a reshape; anything else (overlapping windows, diagonals,
    transposing strides) a gather of the flattened input at constant indices, which is how torch.onnx exports
    every as_strided."""
    sources = _view_sources(cx, x, args)
    shape, flat = cx.shape(x), sources.ravel()
    if (flat < 0).any():
        cx.fail("reads memory outside its input tensor (in the storage of the tensor that input is a view of); mcc "
                "lowers views of their input's own elements only: take the view of that tensor instead")
    if np.array_equal(flat, np.arange(flat.size)) and flat.size == np.prod(shape):
        return reshape(cx, x)
    picked = [np.unique(c) for c in np.unravel_index(flat, shape)]
    steps = [int(p[1] - p[0]) if p.size > 1 else 1 for p in picked]
    ramp = np.arange(int(np.prod(shape))).reshape(shape)
    if all(np.all(np.diff(p) == s) for p, s in zip(picked, steps)) and np.array_equal(
            ramp[np.ix_(*picked)].ravel(), flat):
        box = [(a, int(p[0]), int(p[-1]) + 1, s) for a, (p, s) in enumerate(zip(picked, steps))
               if (p[0], p.size, s) != (0, shape[a], 1)]
        a, starts, ends, steps = (list(v) for v in zip(*box))
        return reshape(cx, cx.emit("slice", [x], starts=starts, ends=ends, axes=a, steps=steps))
    rows = cx.emit("reshape", [x], shape=[int(ramp.size)])
    index = Tensor(cx._unique(f"{cx.node_name}.index"), data=flat.astype(np.int32))
    return reshape(cx, cx.emit("gather", [rows, index], axis=0))


# ---- training-IR forms (issue 16: lowered without run_decompositions, frontend.torch_export.core_names) ----------
# Each row lowers an op of torch.export's training IR the way its core-ATen decomposition above is lowered, and
# names the core nodes that decomposition makes, so the IR (names included) is the one the decomposed program
# gives. A node outside what a row covers (CORE_FORMS returns None) sends the whole program through
# run_decompositions.
def core_form(name, form, in_place=False):
    def register(fn):
        LOWERINGS[f"aten.{name}"] = fn
        CORE_FORMS[f"aten.{name}"] = form
        if in_place:
            IN_PLACE_FORMS.add(f"aten.{name}")
        return fn
    return register


def _rank(node, i=0) -> int:
    return len(node.args[i].meta["val"].shape)


@core_form("conv2d.default", lambda node: (["convolution"], 0) if _rank(node) == 4 else None)
def conv2d(cx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return convolution(cx, x, weight, bias, stride, padding, dilation, False, [0, 0], groups)


def _batch_norm_form(node):
    """Inference BatchNorm (running statistics, not training) is _native_batch_norm_legit_no_training, whose
    three outputs each get a getitem."""
    args = list(node.args) + [None] * 9
    training, stats = args[5], args[3:5]
    return (["_native_batch_norm_legit_no_training"] + ["getitem"] * 3, 0) if training is False and all(
        isinstance(a, torch.fx.Node) for a in stats) else None


@core_form("batch_norm.default", _batch_norm_form)
def batch_norm_inference(cx, x, weight, bias, mean, var, training, momentum, eps, cudnn_enabled):
    return batch_norm(cx, x, weight, bias, mean, var, momentum, eps)[0]


@core_form("linear.default",
           lambda node: (["permute", "addmm" if _bias(node) else "mm"], 1) if _rank(node) == 2 else None)
def linear(cx, x, weight, bias=None):
    """A 2-D linear is t (permute) of the weight, then addmm, or mm without a bias."""
    weight = cx.require_const(weight, "weight")
    weight_t = cx.const(weight.value.permute(1, 0), like=weight)
    return mm(cx, x, weight_t) if bias is None else addmm(cx, bias, x, weight_t)


def _bias(node):
    return len(node.args) > 2 and node.args[2] is not None or node.kwargs.get("bias") is not None


@core_form("dropout.default", lambda node: (["clone"], 0) if not _arg(node, 2, "train") else None)
def dropout(cx, x, p, train):
    return x


def _arg(node, i, name):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name)


def _flatten_form(node):
    """flatten is a view of a contiguous input (no node at all when it flattens one axis)."""
    rank = _rank(node)
    start, end = (_arg(node, i, k) for i, k in ((1, "start_dim"), (2, "end_dim")))
    start, end = (0 if start is None else start) % max(rank, 1), (-1 if end is None else end) % max(rank, 1)
    if rank == 0 or start == end:
        return [], 0
    return (["view"], 0) if node.args[0].meta["val"].is_contiguous() else None


@core_form("flatten.using_ints", _flatten_form)
def flatten(cx, x, start_dim=0, end_dim=-1):
    return reshape(cx, x)


def _adaptive_avg_form(node):
    """Output size 1 is a mean over H and W; other sizes are _adaptive_avg_pool2d."""
    if _rank(node) != 4:
        return None
    return (["mean"], 0) if _pair(node.args[1]) == [1, 1] else (["_adaptive_avg_pool2d"], 0)


@core_form("adaptive_avg_pool2d.default", _adaptive_avg_form)
def adaptive_avg_pool2d_training(cx, x, output_size):
    if _pair(output_size) == [1, 1]:
        return mean(cx, x, [-1, -2], True)
    return adaptive_avg_pool2d(cx, x, output_size)


@core_form("max_pool2d.default",
           lambda node: (["max_pool2d_with_indices"] + ["getitem"] * 2, 0) if _rank(node) == 4 else None)
def max_pool2d_training(cx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return max_pool2d(cx, x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def _contiguous_form(node):
    """A copy (clone) of a non-contiguous input; nothing for a contiguous one. Other memory formats: not covered."""
    if node.kwargs.get("memory_format", torch.contiguous_format) != torch.contiguous_format:
        return None
    return ([], 0) if node.args[0].meta["val"].is_contiguous() else (["clone"], 0)


@core_form("contiguous.default", _contiguous_form)
def contiguous(cx, x, memory_format=None):
    return x


@core_form("transpose.int", lambda node: (["permute"], 0) if node.args[1] % _rank(node) != node.args[2] % _rank(node)
           else None)
def transpose(cx, x, dim0, dim1):
    perm = list(range(len(cx.shape(x))))
    a, b = _axis(cx, x, dim0), _axis(cx, x, dim1)
    perm[a], perm[b] = perm[b], perm[a]
    return permute(cx, x, perm)


@core_form("chunk.default", lambda node: (["split_with_sizes"] + ["getitem"] * len(node.meta["val"]), 0)
           if len(node.meta["val"]) > 1 else None)
def chunk(cx, x, chunks, dim=0):
    """torch's chunk: pieces of ceil(size / chunks), the last one smaller (as many as torch made)."""
    sizes = [int(t.shape[_axis(cx, x, dim)]) for t in cx.node.meta["val"]]
    return split(cx, x, sizes, dim)


@core_form("pad.default",
           lambda node: (["constant_pad_nd"], 0) if _arg(node, 2, "mode") in (None, "constant") else None)
def pad(cx, x, pad, mode="constant", value=None):
    return constant_pad(cx, x, pad, 0.0 if value is None else value)


@core_form("relu6.default", lambda node: (["hardtanh"], 0), in_place=True)
def relu6(cx, x):
    return _clamp(cx, x, 0, 6)
