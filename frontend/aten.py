"""The core-ATen -> IR lowering table: one small function per aten op, registered under the op's full name.

Each function receives the lowering context `cx` (frontend.torch_export._Lowering) and the node's arguments,
already mapped: an IR Tensor for a value computed at run time, a Const for a value known at compile time, plain
Python values otherwise. A function returns the IR tensor (or a tuple, for multi-output ops) that stands for the
node's result; returning its input unchanged removes the node. Nodes whose inputs are all constants never get
here: the walker folds them in torch.
"""

from __future__ import annotations

import torch

from ..ir import Tensor

LOWERINGS: dict = {}

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
    if transposed:
        cx.fail("transposed convolution is not supported")
    if len(cx.shape(x)) != 4:
        cx.fail(f"only 2-D convolution is supported (input has shape {cx.shape(x)})")
    weight = cx.require_const(weight, "weight")
    inputs = [x, weight] + ([cx.require_const(bias, "bias")] if bias is not None else [])
    ph, pw = _pair(padding)
    attrs = {"stride": _pair(stride), "padding": [ph, pw, ph, pw], "dilation": _pair(dilation)}
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
    return _fully_connected(cx, x, cx.require_const(weight_t, "right-hand operand (a weight)"), None)


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


@lowers("_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(cx, x, output_size):
    (h, w), (oh, ow) = cx.shape(x)[2:], _pair(output_size)
    if (oh, ow) == (1, 1):
        return cx.emit("mean", [x], axes=[2, 3], keepdims=True)
    if (oh, ow) == (h, w):
        return x
    if h % oh or w % ow:
        cx.fail(f"adaptive average pooling from {h}x{w} to {oh}x{ow} is not supported (sizes must divide)")
    return cx.emit("avg_pool2d", [x], kernel=[h // oh, w // ow], stride=[h // oh, w // ow])


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
    rank = len(cx.shape(x))
    pairs = [[0, 0]] * (rank - len(pad) // 2) + [list(pad[i:i + 2]) for i in range(len(pad) - 2, -1, -2)]
    return cx.emit("pad", [x], pads=[int(p) for pair in pairs for p in pair], value=float(value))


@lowers("clone.default", "alias.default")
def identity(cx, x, **_):
    return x
