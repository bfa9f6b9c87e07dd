"""What the low_rank and depthwise_separable passes share: which layers they may split, the second moments of each
layer's input patches on calibration data (how a candidate's output error is measured, and what the depthwise
pointwise weights are refitted against), and the rewrite of one layer into a chain of plain conv / FC layers.

A conv2d or fully_connected is linear in its input patch p (C*kh*kw input values at one output position) and a
constant 1 for the bias: y = W_aug [p; 1]. So the squared output error of any replacement, whose effective weight is
W', over the calibration data is tr((W_aug - W') S (W_aug - W')^T) with S the sum of [p; 1][p; 1]^T over every
output position of every sample. One run of mcc's float runtime gives S for every layer at once (each layer's real
input activations, observed as the runtime makes them), and each candidate's error on them then costs a matrix
product instead of a convolution over the data: the same number, exactly, as running the split layer over the
layer's inputs. tensorly and the papers' code (Kim et al.'s Tucker-2, Jaderberg et al.'s spatial SVD) choose ranks
on the weights alone; mcc measures each candidate on the activations the layer really sees.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from ..ir.ops import conv_weight_dims, infer_node
from ..runtime import run
from .calibrate import calibration_batches, in_chunks

# Samples whose patches make S: the statistic is a (C*kh*kw)^2 average, which a few dozen images of a few hundred
# positions each pin down; more only costs compile time.
MOMENT_SAMPLES = 64


def spatial_conv(node: Node) -> bool:
    """A float conv2d with one group, constant weights and a kernel larger than 1x1 (what Tucker-2, spatial SVD
    and the depthwise-separable replacement split)."""
    return node.op == "conv2d" and _constant_float(node) and node.attrs["groups"] == 1 and \
        conv_weight_dims(node)[2] * conv_weight_dims(node)[3] > 1


def matrix_layer(node: Node) -> bool:
    """A float fully_connected, or a 1x1 conv2d with one group, with constant weights (a plain matrix product)."""
    if node.op == "fully_connected":
        return _constant_float(node)
    return node.op == "conv2d" and _constant_float(node) and node.attrs["groups"] == 1 and \
        conv_weight_dims(node)[2:] == (1, 1)


def _constant_float(node: Node) -> bool:
    w, b = node.inputs[1], node.input(2)
    return w.is_constant and w.dtype == "float32" and node.inputs[0].dtype == "float32" and \
        (b is None or (b.is_constant and b.dtype == "float32"))


def select(graph: Graph, eligible, include: tuple, exclude: tuple, option: str) -> list[Node]:
    """The eligible nodes whose names match an `include` pattern (fnmatch; all when empty) and no `exclude`
    pattern. An include pattern that names no node at all is an MccError: a misspelt layer name would otherwise
    compress nothing without a word."""
    for pattern in include:
        if not any(fnmatch.fnmatchcase(n.name, pattern) for n in graph.nodes):
            raise MccError(f"{option} pattern '{pattern}' matches no layer of the model; layer names look like "
                           f"{', '.join(repr(n.name) for n in graph.nodes if eligible(n))[:300]} (`mcc inspect` lists "
                           "them all)")
    return [n for n in graph.nodes if eligible(n)
            and (not include or any(fnmatch.fnmatchcase(n.name, p) for p in include))
            and not any(fnmatch.fnmatchcase(n.name, p) for p in exclude)]


# ---- weights in one layout --------------------------------------------------------------------------------------
def weight_matrix(node: Node) -> np.ndarray:
    """The layer's weight as float64 [O, C*kh*kw] (OIHW order; [O, K] for fully_connected) with the bias as one
    more column: W_aug, the map from [patch; 1] to the output."""
    w = node.inputs[1].data.astype(np.float64)
    if node.op == "conv2d" and node.inputs[0].layout == "NHWC":
        w = w.transpose(0, 3, 1, 2)
    w = w.reshape(len(w), -1)
    b = node.inputs[2].data.astype(np.float64) if node.input(2) is not None else np.zeros(len(w))
    return np.concatenate([w, b[:, None]], axis=1)


def oihw(node: Node) -> np.ndarray:
    """A conv2d weight as float64 OIHW whatever the layout."""
    w = node.inputs[1].data.astype(np.float64)
    return w.transpose(0, 3, 1, 2) if node.inputs[0].layout == "NHWC" else w


# ---- second moments of input patches ----------------------------------------------------------------------------
def patches(node: Node, x: np.ndarray) -> np.ndarray:
    """The layer's input patches [positions, C*kh*kw] (OIHW order) from its input activation `x`."""
    if node.op == "fully_connected":
        return x.reshape(-1, x.shape[-1])
    if node.inputs[0].layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    _, _, kh, kw = conv_weight_dims(node)
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    t, l, b, r = node.attrs["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, Ho, Wo, kh, kw]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)


def patch_moments(graph: Graph, nodes: list[Node], arrays: dict | None, pass_name: str,
                  progress=None) -> dict[str, np.ndarray]:
    """{node name: S}, S = sum over positions of [p; 1][p; 1]^T in float64, from the first MOMENT_SAMPLES
    calibration samples run through mcc's float runtime."""
    if not arrays:
        raise MccError(f"pass {pass_name} measures each split's output error on real activations and needs "
                       "calibration data: pass --calib samples.npz (one array per model input, batch first)")
    batches = calibration_batches(graph, arrays)
    batches = batches[:max(1, -(-MOMENT_SAMPLES // graph.inputs[0].shape[0]))]
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        readers.setdefault(n.inputs[0].name, []).append(n)
    moments: dict[str, np.ndarray] = {}

    def see(t, value):
        for n in readers.get(t.name, ()):
            p = patches(n, np.asarray(value, np.float64))
            s = moments.get(n.name)
            if s is None:
                s = moments[n.name] = np.zeros((p.shape[1] + 1,) * 2)
            s[:-1, :-1] += p.T @ p
            col = p.sum(axis=0)
            s[:-1, -1] += col
            s[-1, :-1] += col
            s[-1, -1] += len(p)

    for g, feeds, _ in in_chunks(graph, batches, progress):
        run(g, feeds, observe=see)
    return moments


def relative_error(moment: np.ndarray, w_aug: np.ndarray, w_new: np.ndarray) -> float:
    """Squared output error of effective weight `w_new` over the calibration patches, relative to the squared
    output of the layer itself (both from the patch moments)."""
    delta = w_aug - w_new
    err = float(((delta @ moment) * delta).sum())
    ref = float(((w_aug @ moment) * w_aug).sum())
    return max(err, 0.0) / ref if ref > 0 else (0.0 if err <= 0 else float("inf"))


def refit(moment: np.ndarray, w_aug: np.ndarray, inner: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """The last layer's weights and bias [O, r + 1] that minimise the chain's output error on the calibration
    patches, when the chain before it computes z = inner [p; 1] ([r + 1, F + 1], its last row giving the 1): the
    least-squares U = (W_aug S inner^T)(inner S inner^T + lambda I)^-1, in float64, with a ridge lambda of `ridge`
    times the mean diagonal (a direction the data never excites leaves the Gram matrix singular)."""
    return _ridge_solve(inner @ moment @ inner.T, w_aug @ moment @ inner.T, ridge)


def refit_in_order(graph: Graph, reference: Graph, names: list[str], arrays: dict, progress=None,
                   ridge: float = 1e-6) -> dict[str, float]:
    """Refit, layer after layer in graph order, the last piece and bias of each split `names` (the node that kept
    the layer's name) by least squares on the inputs the already-split, already-refitted upstream graph feeds it,
    against the original layer's pre-activation outputs on the original inputs (`reference`: the graph before
    splitting). The per-layer refit (refit) sees the unsplit model's activations, so the errors of upstream splits
    go uncorrected and add up along residual chains; this corrects each layer for the ones before it, as AIMET's
    and the data-aware methods do. One run of both graphs per layer, over the same MOMENT_SAMPLES samples.
    Returns {name: the layer's relative output error, against the original layer's outputs, after its refit}."""
    batches = calibration_batches(graph, arrays)
    batches = batches[:max(1, -(-MOMENT_SAMPLES // graph.inputs[0].shape[0]))]
    errors = {}
    for name in names:
        node, ref = graph.node(name), reference.node(name)
        w_ref = weight_matrix(ref)
        gram = cross = None
        total = 0.0
        for g, feeds, _, (r,) in in_chunks(graph, batches, progress, companions=(reference,)):
            z = patches(node, _observed(g, feeds, node.inputs[0].name))
            z = np.concatenate([z, np.ones((len(z), 1))], axis=1)
            y = patches(ref, _observed(r, feeds, ref.inputs[0].name)) @ w_ref[:, :-1].T + w_ref[:, -1]
            gram = z.T @ z if gram is None else gram + z.T @ z
            cross = y.T @ z if cross is None else cross + y.T @ z
            total += float((y * y).sum())
        u = _ridge_solve(gram, cross, ridge)  # [O, F + 1]
        # |y - U z|^2 summed = |y|^2 - 2 tr(U cross^T) + tr(U gram U^T)
        err = total - 2 * float((u * cross).sum()) + float(((u @ gram) * u).sum())
        errors[name] = max(err, 0.0) / total if total > 0 else 0.0
        w_old = node.inputs[1]
        last = Piece(node.op, "", u[:, :-1].reshape((len(u),) + _oihw_shape(node)[1:]))
        w = graph.constant(w_old.name, _in_layout(last, node.inputs[0].layout))
        b = graph.constant(f"{name}.refit_bias" if node.input(2) is None else node.inputs[2].name,
                           u[:, -1].astype(np.float32))
        node.inputs = [node.inputs[0], w, b]
        infer_node(node)
    return errors


def _observed(graph: Graph, feeds: dict, name: str) -> np.ndarray:
    """The value tensor `name` takes when `graph` runs on `feeds`, copied in float64 as it is observed."""
    seen = {}
    run(graph, feeds, observe=lambda t, value: seen.setdefault("x", np.array(value, np.float64)) if t.name == name
        else None)
    return seen["x"]


def _ridge_solve(gram: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """cross (gram + lambda I)^-1, lambda `ridge` times gram's mean diagonal (a direction the data never excites
    leaves the Gram matrix singular); gram is symmetric."""
    gram = gram.copy()
    gram[np.diag_indices(len(gram))] += ridge * max(float(np.trace(gram)) / len(gram), 1e-30)
    return np.linalg.solve(gram, cross.T).T


def _oihw_shape(node: Node) -> tuple:
    return oihw(node).shape if node.op == "conv2d" else node.inputs[1].shape


def with_one(m: np.ndarray) -> np.ndarray:
    """[[m, 0], [0, 1]]: a map of patches extended to map [p; 1] to [z; 1]."""
    out = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    out[:-1, :-1], out[-1, -1] = m, 1.0
    return out


# ---- one layer as a chain of layers -----------------------------------------------------------------------------
@dataclass
class Piece:
    """One layer of a split: op conv2d (weight OIHW), depthwise_conv2d (weight [C, 1, kh, kw]) or fully_connected
    (weight [O, K]); `attrs` the geometry (stride, padding, dilation; multiplier for depthwise)."""

    op: str
    suffix: str
    weight: np.ndarray
    attrs: dict = field(default_factory=dict)


def conv_geometry(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> dict:
    return {"stride": list(stride), "padding": list(padding), "dilation": list(dilation)}


def _in_layout(piece: Piece, layout: str | None) -> np.ndarray:
    w = piece.weight
    if layout == "NHWC" and piece.op == "conv2d":
        w = w.transpose(0, 2, 3, 1)
    elif layout == "NHWC" and piece.op == "depthwise_conv2d":
        w = w.transpose(1, 2, 3, 0)
    return np.ascontiguousarray(w, dtype=np.float32)


def rewrite(graph: Graph, node: Node, pieces: list[Piece], bias: np.ndarray | None) -> None:
    """Replace `node` by the chain `pieces`: every piece but the last is a new node inserted before it (no bias,
    no activation); the last one is `node` itself rewritten in place, so it keeps its name, its output tensor
    (the consumers need no rewiring), the `bias` given (None: its own) and its fused activation."""
    layout, x, at = node.inputs[0].layout, node.inputs[0], graph.position(node)
    for p in pieces[:-1]:
        w = graph.constant(f"{node.name}/{p.suffix}.weight", _in_layout(p, layout))
        attrs = {**p.attrs, "activation": None, **({"groups": 1} if p.op == "conv2d" else {})}
        x = graph.add_node(p.op, [x, w], attrs, name=f"{node.name}/{p.suffix}", index=at,
                           source=node.source).outputs[0]
        at += 1
    last = pieces[-1]
    w = graph.constant(f"{node.name}/{last.suffix}.weight", _in_layout(last, layout))
    b = node.input(2) if bias is None else graph.constant(f"{node.name}/{last.suffix}.bias",
                                                          bias.astype(np.float32))
    activation = node.attrs.get("activation")
    node.op, node.inputs = last.op, [x, w] + ([b] if b is not None else [])
    node.attrs = {**last.attrs, "activation": activation, **({"groups": 1} if last.op == "conv2d" else {})}
    infer_node(node)
