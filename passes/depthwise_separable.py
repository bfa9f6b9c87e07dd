"""depthwise_separable: a k x k conv2d (one group, C -> O) becomes a depthwise k x k conv (multiplier 1) and a 1x1
pointwise conv C -> O, about k*k times fewer MACs for wide layers (issue 18, item 2).

Initialisation in closed form: the pair computes W'[o, c] = u_c[o] d_c, so per input channel c the best choice is the
rank-1 SVD of the O x (k*k) matrix W[:, c, :, :] = u_c d_c^T (the depthwise kernel d_c, the pointwise column u_c).
The depthwise kernels are then kept and the pointwise weights and bias refitted by least squares on the layer's
real inputs: min over U of the output error sum ||U [D p; 1] - W_aug [p; 1]||^2 over every calibration patch p,
whose normal equations need only the patch moments S (factorize.refit): U = (W_aug S Dw^T)(Dw S Dw^T + lambda I)^-1,
solved in float64 with a small ridge (a dead input channel leaves Dw S Dw^T singular). The refit recovers what the rank-1 truncation threw away wherever the input channels are correlated.
The stride, padding and dilation go to the depthwise conv, the fused activation to the pointwise one. MobileNet-style
networks are trained separable from the start; converters (TFLite, onnx2tf) never make a conv separable.

Layers: option depthwise = name patterns (fnmatch), or ("auto",) with depthwise_ratio R: every candidate conv is
measured, and convs are replaced in order of MACs saved per unit of relative output error until the candidates'
MACs come to at most R of what they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from ..ir.ops import macs, nchw
from ..runtime.threads import blas_on_one_thread
from .factorize import (Piece, conv_geometry, oihw, patch_moments, refit, relative_error, rewrite, select,
                        spatial_conv, weight_matrix, with_one)
from .manager import PassContext, register_pass

RIDGE = 1e-6


@dataclass
class DepthwiseOptions:
    depthwise: tuple = ()                   # layer name patterns, or ("auto",)
    depthwise_ratio: float | None = None    # with "auto": keep at most this fraction of the convs' MACs
    calibration: dict | None = None        # input name -> array, batch first


@dataclass
class Separable:
    depthwise: np.ndarray   # [C, 1, kh, kw]
    pointwise: np.ndarray   # [O, C, 1, 1]
    bias: np.ndarray        # [O]
    macs: int
    error: float


def rank1_init(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d [C, kh*kw], u [O, C]): per input channel the best rank-1 factorisation of W[:, c] as u_c d_c^T."""
    o, c = w.shape[:2]
    d, u = np.zeros((c, w[0, 0].size)), np.zeros((o, c))
    for ch in range(c):
        left, s, right = np.linalg.svd(w[:, ch].reshape(o, -1), full_matrices=False)
        d[ch], u[:, ch] = np.sqrt(s[0]) * right[0], np.sqrt(s[0]) * left[:, 0]
    return d, u


def separable(node: Node, moment: np.ndarray) -> Separable:
    """The depthwise + pointwise pair of `node`, its pointwise weights refitted against the patch moments."""
    w, w_aug = oihw(node), weight_matrix(node)
    o, c, kh, kw = w.shape
    d, _ = rank1_init(w)
    k = kh * kw
    dw = np.zeros((c, c * k))  # the depthwise output from the patch
    for ch in range(c):
        dw[ch, ch * k:(ch + 1) * k] = d[ch]
    dw = with_one(dw)
    u_aug = refit(moment, w_aug, dw, RIDGE)
    n, _, ho, wo = nchw(node.outputs[0])
    return Separable(d.reshape(c, 1, kh, kw), u_aug[:, :c, None, None], u_aug[:, c], n * ho * wo * c * (k + o),
                     relative_error(moment, w_aug, u_aug @ dw))


def replace(graph: Graph, node: Node, sep: Separable) -> None:
    a = node.attrs
    geometry = {**conv_geometry(a["stride"], a["padding"], a["dilation"]), "multiplier": 1}
    rewrite(graph, node, [Piece("depthwise_conv2d", "depthwise", sep.depthwise, geometry),
                          Piece("conv2d", "pointwise", sep.pointwise, conv_geometry())], sep.bias)


def _auto(found: dict[str, tuple[Node, Separable]], ratio: float) -> list[str]:
    """The convs to replace: best MACs saved per unit of error first, until the MACs meet `ratio`."""
    full = sum(macs(n) for n, _ in found.values())
    order = sorted(found, key=lambda k: -(macs(found[k][0]) - found[k][1].macs) / max(found[k][1].error, 1e-30))
    total, chosen = full, []
    for k in order:
        if total <= ratio * full:
            break
        total -= macs(found[k][0]) - found[k][1].macs
        chosen.append(k)
    if total > ratio * full:
        raise MccError(f"depthwise auto: replacing all {len(found)} candidate convs keeps {total / full:.3f} of their "
                       f"MACs, above depthwise_ratio {ratio:g}; ask for at least {total / full:.3f}")
    return chosen


@register_pass("depthwise_separable", options=DepthwiseOptions, requires=("float", "no_batch_norm"))
def depthwise_separable(graph: Graph, ctx: PassContext) -> Graph:
    """Replace the selected k x k convs by depthwise + pointwise pairs (no-op without option depthwise)."""
    opts = ctx.options
    patterns, ratio = tuple(opts.depthwise), opts.depthwise_ratio
    auto = "auto" in patterns
    if auto and len(patterns) > 1:
        raise MccError("depthwise: 'auto' chooses the layers itself; give it alone, or give name patterns")
    if auto and ratio is None:
        raise MccError("depthwise 'auto' needs a MAC ratio target: depthwise_ratio (--depthwise-ratio), e.g. 0.5")
    if ratio is not None and not auto:
        raise MccError("depthwise_ratio (--depthwise-ratio) applies only to depthwise 'auto' (--depthwise auto)")
    if ratio is not None and not 0 < ratio < 1:
        raise MccError(f"depthwise_ratio {ratio!r}: the MAC ratio to keep must lie between 0 and 1 (e.g. 0.5)")
    if not patterns:
        return ctx.unchanged(graph)
    nodes = select(graph, spatial_conv, () if auto else patterns, (), "depthwise")
    moments = patch_moments(graph, nodes, opts.calibration, "depthwise_separable", ctx.progress) if nodes else {}
    with blas_on_one_thread():
        found = {n.name: (n, separable(n, moments[n.name])) for n in nodes}
    saving = {k: v for k, v in found.items() if v[1].macs < macs(v[0])}
    chosen = _auto(saving, ratio) if auto and saving else list(saving)
    notes = {}
    for k, (n, sep) in found.items():
        full = macs(n)
        if k in chosen:
            notes[k] = {"form": "depthwise_separable", "macs_before": full, "macs_after": sep.macs,
                        "output_error": round(sep.error, 6)}
            replace(graph, n, sep)
        else:
            notes[k] = {"form": "kept", "macs_before": full, "macs_after": full, "output_error_if_split":
                        round(sep.error, 6), "why": "not needed for the ratio" if k in saving else "saves no MACs"}
    ctx.note("layers", notes)
    return graph
