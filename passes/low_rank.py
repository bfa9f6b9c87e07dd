"""low_rank: split layers into chains of thinner layers that cost fewer MACs (issue 18, item 1).

Forms, each a chain of plain conv2d / fully_connected layers that every backend already emits:
- fully_connected and 1x1 conv2d: truncated SVD W ~ (U sqrt(S)) (sqrt(S) V^T), two layers, the bias on the second;
- k x k conv2d (one group): Tucker-2 over the output and input channel modes (1x1 reduce to r_in, the k x k core
  r_in -> r_out with the layer's stride / padding / dilation, 1x1 expand to O; HOSVD start, then HOOI sweeps), and
  spatial SVD (Jaderberg et al.): W[o, i, y, x] ~ sum_r V[o, r, x] H[r, i, y], from the SVD of W arranged as the
  [(i, y), (o, x)] matrix: a kh x 1 conv C -> r, then a 1 x kw conv r -> O.
  and CP (Lebedev et al.): W[o, i, y, x] ~ sum_r A_o[o, r] A_i[i, r] A_y[y, r] A_x[x, r] by alternating least
  squares, four layers: 1x1 C -> r, depthwise kh x 1, depthwise 1 x kw, 1x1 r -> O (depthwise_conv2d, which every
  backend emits as well).
Every candidate (form and rank) of a layer is measured by its output error on the layer's real inputs over the
calibration data (factorize.py: exact, from the patch moments), relative to the layer's output, after the chain's
last piece (the SVD's second layer, Tucker-2's expand; not spatial SVD's 1 x kw conv) and the bias are refitted by
least squares on those inputs (factorize.refit): the factorisation fits the weights, the refit fits what the layer
outputs on real data, which tensorly's decompositions and the papers' recipes leave to fine-tuning. Once the splits
are chosen, each one's last piece (any form's) and bias are refitted again, in graph order, on the inputs the
already-split upstream feeds it, against the original layer's outputs (factorize.refit_in_order; note
"output_error_in_chain"): the choice's errors are measured on the unsplit model's activations and do not add up
through residual blocks, the in-order refit makes each layer correct for the splits before it.

Budget (option low_rank = R): the split layers' MACs together must come to at most R times what they were. A
greedy over every considered layer: each starts unsplit; each step takes, over all layers, the move to the layer's
next candidate on the lower convex hull of its (MACs, error) candidates with the least error added per MAC
saved, until the total meets R. The convex hull makes that greedy the optimum of the relaxed (fractional) problem,
and it spends the error where it buys the most MACs, instead of one rank fraction for every layer as tensorly's
and most papers' recipes do. Errors of different layers are added as relative errors: each layer counts alike.
Option low_rank_energy = E instead: per layer and form, the least rank keeping E of the singular values' energy
(per mode for Tucker-2); the form with the fewest MACs is taken. Either way a layer where no candidate saves
MACs stays as it is (note "kept").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from ..ir.ops import conv_weight_dims, macs, nchw
from ..runtime.threads import blas_on_one_thread
from .factorize import (Piece, conv_geometry, matrix_layer, oihw, patch_moments, refit, refit_in_order,
                        relative_error, rewrite, select, spatial_conv, weight_matrix, with_one)
from .manager import PassContext, content_digest, register_pass

HOOI_SWEEPS = 4
CP_SWEEPS = 25
CP_RANKS_TRIED = 8  # each costs an ALS run
# Rank fractions tried per channel mode of Tucker-2 (7 x 7 pairs); SVD forms try up to RANKS_TRIED ranks.
TUCKER_FRACTIONS = (1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8)
RANKS_TRIED = 16
PROGRESS_AFTER_S = 2.0  # a search that has run this long says which layer it has reached


# Results of the last few searches by content_digest of graph and options: one compile runs low_rank up to four
# times on the same graph (the compile, the compression report's two measured stages, the fidelity guard's float
# reference), and the search is the slow part of the pass.
DONE_KEPT = 4
_DONE: dict = {}


@dataclass
class LowRankOptions:
    low_rank: float | None = None           # keep at most this fraction of the considered layers' MACs
    low_rank_energy: float | None = None    # or: per layer, the rank keeping this fraction of the energy
    low_rank_include: tuple = ()            # layer name patterns (fnmatch); empty: every layer that can split
    low_rank_exclude: tuple = ()
    calibration: dict | None = None        # input name -> array, batch first


@dataclass
class Candidate:
    form: str
    rank: tuple
    macs: int
    weight: np.ndarray          # the effective W_aug the chain computes (for its error)
    pieces: list                # the chain (Piece list)
    inner: np.ndarray | None = None  # [z; 1] from [p; 1], z the last piece's input (None: the last piece is not 1x1)
    bias: np.ndarray | None = None   # the last piece's bias once refitted (None: the layer's own)
    error: float | None = None

    def refit(self, moment: np.ndarray, w_aug: np.ndarray) -> None:
        """Refit the last 1x1 / FC piece and its bias by least squares on the layer's calibration patches (the
        factorisation fits the weights; this fits the outputs the layer really produces), and measure the error."""
        if self.inner is not None:
            u = refit(moment, w_aug, self.inner)
            last = self.pieces[-1]
            last.weight = u[:, :-1].reshape(last.weight.shape)
            self.bias, self.weight = u[:, -1], u @ self.inner
        self.error = relative_error(moment, w_aug, self.weight)


def _leading(m: np.ndarray, r: int) -> np.ndarray:
    """The `r` leading left singular vectors of a wide matrix, from the eigenvectors of the small m m^T (a tenth
    of an SVD's time for the unfoldings here, and as exact in float64 for the leading ones)."""
    _, vecs = np.linalg.eigh(m @ m.T)
    return vecs[:, ::-1][:, :r]


def _energy_rank(s: np.ndarray, energy: float) -> int:
    e = np.cumsum(s.astype(np.float64) ** 2)
    return int(np.searchsorted(e, energy * e[-1] * (1 - 1e-12)) + 1) if e[-1] > 0 else 1


def _ranks(limit: int, tried: int = RANKS_TRIED) -> list[int]:
    return sorted({int(r) for r in np.linspace(1, limit, min(limit, tried)).round()}) if limit >= 1 else []


# ---- the forms --------------------------------------------------------------------------------------------------
def svd_form(node: Node, w_aug: np.ndarray, r: int, svd) -> Candidate:
    """Two layers: K -> r (the layer's geometry) and r -> O (1x1 or FC, with the bias)."""
    u, s, vt = svd
    a, b = np.sqrt(s[:r])[:, None] * vt[:r], u[:, :r] * np.sqrt(s[:r])
    positions = macs(node) // (w_aug.shape[0] * (w_aug.shape[1] - 1))
    n_in, n_out = vt.shape[1], u.shape[0]
    if node.op == "fully_connected":
        pieces = [Piece("fully_connected", "svd_in", a), Piece("fully_connected", "svd_out", b)]
    else:
        geometry = conv_geometry(node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"])
        pieces = [Piece("conv2d", "svd_in", a[:, :, None, None], geometry),
                  Piece("conv2d", "svd_out", b[:, :, None, None], conv_geometry())]
    eff = np.concatenate([b @ a, w_aug[:, -1:]], axis=1)
    return Candidate("svd", (r,), positions * r * (n_in + n_out), eff, pieces, with_one(a))


def tucker2(w: np.ndarray, r_out: int, r_in: int, sweeps: int = HOOI_SWEEPS, start=None):
    """(U_out [O, r_out], core [r_out, r_in, kh, kw], U_in [C, r_in]): HOSVD, then HOOI (alternating least
    squares on the two channel modes; the spatial modes are not reduced). `start` (tucker_start) holds the
    HOSVD's eigenvectors, shared by every rank pair of a layer. The products leave the spatial axes where
    tensordot puts them: _leading reads only m m^T, which the order of m's columns does not change."""
    o, c = w.shape[:2]
    vecs_out, vecs_in = start or tucker_start(w)
    u_out, u_in = vecs_out[:, :r_out], vecs_in[:, :r_in]
    for _ in range(sweeps):
        u_out = _leading(np.tensordot(w, u_in, axes=(1, 0)).reshape(o, -1), r_out)
        u_in = _leading(np.tensordot(w, u_out, axes=(0, 0)).reshape(c, -1), r_in)
    core = np.tensordot(np.tensordot(u_out, w, axes=(0, 0)), u_in, axes=(1, 0))  # [r_out, kh, kw, r_in]
    return u_out, np.ascontiguousarray(core.transpose(0, 3, 1, 2)), u_in


def tucker_start(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The leading left singular vectors, all of them, of the weight's output and input channel unfoldings."""
    o, c = w.shape[:2]
    return _leading(w.reshape(o, -1), o), _leading(w.transpose(1, 0, 2, 3).reshape(c, -1), c)


def tucker_form(node: Node, w_aug: np.ndarray, r_out: int, r_in: int, start=None) -> Candidate:
    """1x1 C -> r_in, k x k core r_in -> r_out (the layer's geometry), 1x1 r_out -> O with the bias."""
    w = oihw(node)
    u_out, core, u_in = tucker2(w, r_out, r_in, start=start)
    n, c, h, wi = nchw(node.inputs[0])
    _, o, ho, wo = nchw(node.outputs[0])
    kh, kw = w.shape[2:]
    pieces = [Piece("conv2d", "tucker_reduce", u_in.T[:, :, None, None], conv_geometry()),
              Piece("conv2d", "tucker_core", core,
                    conv_geometry(node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"])),
              Piece("conv2d", "tucker_expand", u_out[:, :, None, None], conv_geometry())]
    inner = np.tensordot(core, u_in, axes=(1, 1)).transpose(0, 3, 1, 2).reshape(len(core), -1)  # [r_out, (i, y, x)]
    eff = u_out @ inner
    cost = n * h * wi * c * r_in + n * ho * wo * (r_out * r_in * kh * kw + o * r_out)
    return Candidate("tucker2", (r_out, r_in), cost, np.concatenate([eff, w_aug[:, -1:]], axis=1), pieces,
                     with_one(inner))


def spatial_form(node: Node, w_aug: np.ndarray, r: int, svd) -> Candidate:
    """kh x 1 conv C -> r (the layer's vertical stride / padding / dilation), 1 x kw conv r -> O (horizontal)."""
    a, s, bt = svd
    o, c, kh, kw = conv_weight_dims(node)
    vert = (a[:, :r] * np.sqrt(s[:r])).T.reshape(r, c, kh)                          # H[r, i, y]
    horiz = (np.sqrt(s[:r])[:, None] * bt[:r]).reshape(r, o, kw).transpose(1, 0, 2)  # V[o, r, x]
    (sh, sw), (dh, dw), (t, left, b, right) = node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"]
    pieces = [Piece("conv2d", "spatial_v", vert[:, :, :, None], conv_geometry((sh, 1), (t, 0, b, 0), (dh, 1))),
              Piece("conv2d", "spatial_h", horiz[:, :, None, :], conv_geometry((1, sw), (0, left, 0, right), (1, dw)))]
    n, _, _, wi = nchw(node.inputs[0])
    _, _, ho, wo = nchw(node.outputs[0])
    eff = np.einsum("orx,riy->oiyx", horiz, vert, optimize=True).reshape(o, -1)
    cost = n * ho * wi * c * kh * r + n * ho * wo * o * r * kw
    return Candidate("spatial_svd", (r,), cost, np.concatenate([eff, w_aug[:, -1:]], axis=1), pieces)


def cp_als(w: np.ndarray, r: int, sweeps: int = CP_SWEEPS) -> list[np.ndarray]:
    """Rank-r CP factors [A_o, A_i, A_y, A_x] of the 4-way weight (alternating least squares from the leading
    singular vectors of each unfolding, seeded noise where a mode has fewer than r), each component's norm then
    shared equally by its four factors so that no layer of the chain carries the scale of another.

    Each update's right-hand side (the MTTKRP: the weight contracted with the other three factors) shares half of
    its work with the next one's: the channel modes both contract the weight over (y, x) first, the spatial modes
    both over (o, i), so a sweep costs two weight-sized products instead of four and forms no Khatri-Rao matrix
    (tensorly's parafac forms one per mode: the same iterates up to rounding, at twice the work and memory)."""
    rng = np.random.default_rng(0)
    o, c, kh, kw = w.shape
    factors = []
    for mode, size in enumerate(w.shape):
        lead = _leading(np.moveaxis(w, mode, 0).reshape(size, -1), min(r, size))
        factors.append(np.concatenate([lead, rng.standard_normal((size, r - lead.shape[1])) / np.sqrt(size)], axis=1))
    by_position, by_output = w.reshape(o * c, kh * kw), w.reshape(o, c * kh * kw)
    grams = [f.T @ f for f in factors]

    def update(mode: int, rhs: np.ndarray) -> None:
        gram = np.prod([g for k, g in enumerate(grams) if k != mode], axis=0)
        gram[np.diag_indices(r)] += 1e-12 * max(float(np.trace(gram)) / r, 1e-30)
        factors[mode] = np.linalg.solve(gram, rhs.T).T
        grams[mode] = factors[mode].T @ factors[mode]

    for _ in range(sweeps):
        a_y, a_x = factors[2], factors[3]
        t = (by_position @ (a_y[:, None, :] * a_x[None, :, :]).reshape(kh * kw, r)).reshape(o, c, r)  # over y, x
        update(0, (t * factors[1]).sum(axis=1))
        update(1, (t * factors[0][:, None, :]).sum(axis=0))
        s = (factors[0].T @ by_output).reshape(r, c, kh * kw)  # over o
        s = (s * factors[1].T[:, :, None]).sum(axis=1).T.reshape(kh, kw, r)  # over i
        update(2, (s * factors[3]).sum(axis=1))
        update(3, (s * factors[2][:, None, :]).sum(axis=0))
    norms = np.stack([np.linalg.norm(f, axis=0) for f in factors])
    share = np.prod(norms, axis=0) ** 0.25
    return [f * (share / np.maximum(n, 1e-30)) for f, n in zip(factors, norms)]


def cp_pieces(node: Node, a_o, a_i, a_y, a_x) -> list:
    """The four layers of a CP conv from its factors [O, r], [C, r], [kh, r], [kw, r]: the node's vertical stride,
    padding and dilation go to the kh x 1 depthwise, the horizontal ones to the 1 x kw."""
    (sh, sw), (dh, dw), (t, left, b, right) = node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"]
    return [Piece("conv2d", "cp_in", a_i.T[:, :, None, None], conv_geometry()),
            Piece("depthwise_conv2d", "cp_v", a_y.T[:, None, :, None],
                  {**conv_geometry((sh, 1), (t, 0, b, 0), (dh, 1)), "multiplier": 1}),
            Piece("depthwise_conv2d", "cp_h", a_x.T[:, None, None, :],
                  {**conv_geometry((1, sw), (0, left, 0, right), (1, dw)), "multiplier": 1}),
            Piece("conv2d", "cp_out", a_o[:, :, None, None], conv_geometry())]


def cp_form(node: Node, w_aug: np.ndarray, r: int) -> Candidate:
    """Lebedev et al.'s CP conv: 1x1 C -> r, depthwise kh x 1 (vertical stride / padding / dilation), depthwise
    1 x kw (horizontal), 1x1 r -> O with the bias."""
    a_o, a_i, a_y, a_x = cp_als(oihw(node), r)
    pieces = cp_pieces(node, a_o, a_i, a_y, a_x)
    inner = np.einsum("ir,yr,xr->riyx", a_i, a_y, a_x, optimize=True).reshape(r, -1)
    eff = np.concatenate([a_o @ inner, w_aug[:, -1:]], axis=1)
    return Candidate("cp", (r,), _cp_cost(node, r), eff, pieces, with_one(inner))


def _cp_cost(node: Node, r: int) -> int:
    n, c, h, wi = nchw(node.inputs[0])
    _, o, ho, wo = nchw(node.outputs[0])
    _, _, kh, kw = conv_weight_dims(node)
    return n * h * wi * c * r + n * ho * wi * r * kh + n * ho * wo * r * (kw + o)


def spatial_matrix(node: Node) -> np.ndarray:
    """W as the [(i, y), (o, x)] matrix whose rank-r SVD is the spatial split."""
    w = oihw(node)
    o, c, kh, kw = w.shape
    return w.transpose(1, 2, 0, 3).reshape(c * kh, o * kw)


def candidates(node: Node, energy: float | None) -> list[Candidate]:
    """Every candidate of the layer that costs fewer MACs than it (at the energy ranks when `energy` is set)."""
    w_aug, full = weight_matrix(node), macs(node)
    found = []
    if matrix_layer(node):
        svd = np.linalg.svd(w_aug[:, :-1], full_matrices=False)
        ranks = [_energy_rank(svd[1], energy)] if energy else _ranks(len(svd[1]))
        found = [svd_form(node, w_aug, r, svd) for r in ranks]
    elif spatial_conv(node):
        w = oihw(node)
        o, c, kh, kw = w.shape
        svd = np.linalg.svd(spatial_matrix(node), full_matrices=False)
        if energy:
            s_out = np.linalg.svd(w.reshape(o, -1), compute_uv=False)
            s_in = np.linalg.svd(w.transpose(1, 0, 2, 3).reshape(c, -1), compute_uv=False)
            pairs = [(_energy_rank(s_out, energy), _energy_rank(s_in, energy))]
            ranks = [_energy_rank(svd[1], energy)] if kh > 1 and kw > 1 else []
        else:
            pairs = [(ro, ri) for ro in sorted({max(1, round(o * f)) for f in TUCKER_FRACTIONS})
                     for ri in sorted({max(1, round(c * f)) for f in TUCKER_FRACTIONS})]
            ranks = _ranks(len(svd[1])) if kh > 1 and kw > 1 else []
        # the cost is known before factorising: skip the candidates that save nothing
        start = tucker_start(w)
        found = [tucker_form(node, w_aug, ro, ri, start) for ro, ri in pairs if _tucker_cost(node, ro, ri) < full]
        found += [spatial_form(node, w_aug, r, svd) for r in ranks]
        if not energy and kh > 1 and kw > 1:  # CP has no energy rank (its components are not ordered)
            # the cost is linear in r
            found += [cp_form(node, w_aug, r) for r in _ranks((full - 1) // _cp_cost(node, 1), CP_RANKS_TRIED)]
    return [cand for cand in found if cand.macs < full]


def _tucker_cost(node: Node, r_out: int, r_in: int) -> int:
    n, c, h, wi = nchw(node.inputs[0])
    _, o, ho, wo = nchw(node.outputs[0])
    _, _, kh, kw = conv_weight_dims(node)
    return n * h * wi * c * r_in + n * ho * wo * (r_out * r_in * kh * kw + o * r_out)


# ---- the budget -------------------------------------------------------------------------------------------------
def _hull(full: int, cands: list[Candidate]) -> list[tuple[int, float, Candidate | None]]:
    """The layer's path from unsplit (full MACs, no error) down in MACs: the lower convex hull of its Pareto
    candidates' (MACs, error), so each next point adds the least error per MAC saved."""
    pareto, best = [], float("inf")
    for p in sorted(((c.macs, c.error, c) for c in cands), key=lambda p: (p[0], p[1])):
        if p[1] < best:
            pareto.append(p)
            best = p[1]
    hull = [(full, 0.0, None)]
    for p in reversed(pareto):  # from the most MACs to the fewest, the error growing
        while len(hull) >= 2 and _slope(hull[-2], hull[-1]) >= _slope(hull[-2], p):
            hull.pop()
        hull.append(p)
    return hull


def _slope(a, b) -> float:
    saved = a[0] - b[0]
    return (b[1] - a[1]) / saved if saved > 0 else float("inf")


def allocate(layers: list[tuple[Node, list[Candidate]]], ratio: float) -> dict[str, Candidate | None]:
    """{layer name: chosen candidate or None (unsplit)} whose MACs total at most `ratio` of the layers'."""
    hulls = {n.name: _hull(macs(n), cands) for n, cands in layers}
    full = sum(macs(n) for n, _ in layers)
    at = dict.fromkeys(hulls, 0)
    total = full
    while total > ratio * full:
        moves = [(_slope(h[at[k]], h[at[k] + 1]), k) for k, h in hulls.items() if at[k] + 1 < len(h)]
        if not moves:
            floor = sum(h[-1][0] for h in hulls.values()) / full
            raise MccError(f"low_rank {ratio:g}: the splits of the {len(layers)} layers considered reach at best "
                           f"{floor:.3f} of their MACs; ask for a ratio of at least {floor:.3f}, or include more "
                           "layers")
        _, k = min(moves)
        total -= hulls[k][at[k]][0] - hulls[k][at[k] + 1][0]
        at[k] += 1
    return {k: h[at[k]][2] for k, h in hulls.items()}


@register_pass("low_rank", options=LowRankOptions, requires=("float", "no_batch_norm"))
def low_rank(graph: Graph, ctx: PassContext) -> Graph:
    """Split the selected layers (no-op without low_rank or low_rank_energy)."""
    opts = ctx.options
    ratio, energy = opts.low_rank, opts.low_rank_energy
    if ratio is None and energy is None:
        return ctx.unchanged(graph)
    if ratio is not None and energy is not None:
        raise MccError("low_rank and low_rank_energy both given: choose a MAC ratio (--low-rank) or an energy "
                       "threshold (--low-rank-energy)")
    if ratio is not None and not 0 < ratio < 1:
        raise MccError(f"low_rank {ratio!r}: the MAC ratio to keep must lie between 0 and 1 (e.g. 0.5)")
    if energy is not None and not 0 < energy < 1:
        raise MccError(f"low_rank_energy {energy!r}: the energy to keep must lie between 0 and 1 (e.g. 0.95)")
    key = content_digest(graph, ratio, energy, opts.low_rank_include, opts.low_rank_exclude, opts.calibration)
    if key in _DONE:  # the compression report and the fidelity guard re-run the pipeline: search once
        done, notes = _DONE[key]
        ctx.notes.update(notes)
        return done.copy()
    nodes = select(graph, lambda n: matrix_layer(n) or spatial_conv(n), opts.low_rank_include,
                   opts.low_rank_exclude, "low_rank_include")
    if not nodes:
        ctx.note("layers", {})
        return ctx.unchanged(graph)
    _split(graph, nodes, ratio, energy, opts, ctx)
    while len(_DONE) >= DONE_KEPT:
        _DONE.pop(next(iter(_DONE)))
    _DONE[key] = (graph.copy(), dict(ctx.notes))
    return graph


def _split(graph: Graph, nodes: list, ratio, energy, opts: LowRankOptions, ctx: PassContext) -> None:
    """Search each node's forms and ranks, choose within the budget, rewrite the graph; notes per layer."""
    moments = patch_moments(graph, nodes, opts.calibration, "low_rank", ctx.progress) \
        if ratio is not None or opts.calibration else None
    layers, start = [], time.perf_counter()
    with blas_on_one_thread():  # many small factorisations: threads cost more than they bring
        for k, n in enumerate(nodes):
            cands = candidates(n, energy)
            if moments is not None:
                w_aug = weight_matrix(n)
                for c in cands:
                    c.refit(moments[n.name], w_aug)
            layers.append((n, cands))
            elapsed = time.perf_counter() - start
            if ctx.progress is not None and elapsed > PROGRESS_AFTER_S:  # a long search says where it is
                ctx.progress.say(f"low_rank: layer {k + 1}/{len(nodes)} '{n.name}': {len(cands)} candidates "
                                 f"measured ({elapsed:.1f} s so far)")
    if ratio is not None:
        chosen = allocate(layers, ratio)
    else:
        chosen = {n.name: min(cands, key=lambda c: c.macs, default=None) for n, cands in layers}
    notes, before, after = {}, 0, 0
    reference = graph.copy() if moments is not None else None
    for n, cands in layers:
        c, full = chosen[n.name], macs(n)
        before += full
        after += full if c is None else c.macs
        if c is None:
            notes[n.name] = {"form": "kept", "macs_before": full, "macs_after": full,
                             "why": "no split saves MACs" if not cands else "not needed for the budget"}
            continue
        notes[n.name] = {"form": c.form, "rank": list(c.rank), "macs_before": full, "macs_after": c.macs,
                         "output_error": None if c.error is None else round(c.error, 6)}
        rewrite(graph, n, c.pieces, c.bias)
    split = [n.name for n, _ in layers if chosen[n.name] is not None]
    if reference is not None and split:
        with blas_on_one_thread():
            chained = refit_in_order(graph, reference, split, opts.calibration, ctx.progress)
        for name, err in chained.items():
            notes[name]["output_error_in_chain"] = round(err, 6)
    ctx.note("layers", notes)
    ctx.note("macs", {"considered_before": before, "considered_after": after, "ratio": round(after / before, 4)})
