"""to_nhwc and to_nchw: move a graph's spatial ops to another layout, folding every permutation into constants.

to_nhwc turns an NCHW graph into an NHWC one for TFLite (DESIGN.md §1); to_nchw turns that NHWC graph, after
quantization too, back into NCHW for ONNX, so one quantized graph (the integers arm-int8 emits) is emitted as
ONNX without a transpose. Both are one walk, parametrised by a `Direction`: the permutation S spatial ops ask
for (P = (0, 2, 3, 1) for NHWC, its inverse (0, 3, 1, 2) for NCHW), the layout tag of tensors in S, and the
weight permutations. Quantization travels with the data: a permuted constant's per-channel axis follows its
channels, an inserted reshape or transpose carries its input's parameters.

Design. Every tensor keeps its *logical* shape (the axis order of the graph the pass is given) and gets a
*physical permutation* `perm`: physical axis k holds logical axis perm[k]. Graph inputs start in S when 4-D;
every other tensor as the identity. Walking the graph in order, each op either adapts itself to its inputs'
permutations, or asks for the permutation it needs and a conversion is inserted (described for to_nhwc, S = P;
to_nchw is the same walk with S = (0, 3, 1, 2)):
- spatial ops (conv, depthwise, transposed conv, pools, resize, 4-D batch norm) ask for P and output P; their
  weights are permuted (conv OIHW -> OHWI, depthwise [C*m, 1, kh, kw] -> [1, kh, kw, C*m], transposed conv
  [C_in, C_out/g, kh, kw] -> [C_out/g, kh, kw, C_in]; to_nchw permutes them back);
- elementwise ops (quantize and dequantize too), softmax, pad, mean (and sum, reduce_max, reduce_min), concat,
  slice, split, tile and gather by a list of indices work in any
  permutation: they inherit it from their inputs (P if an operand has it, else the first operand's), converting
  the others, and remap their axis attributes (a slice lists its axes in physical order, as TFLite's SLICE
  spells them); constant operands are rank-aligned and permuted alike;
- fully_connected works in any permutation that keeps the feature axis last;
- a source transpose composes with its input's permutation: its output gets perm = q^-1 . perm_in, so it
  moves no data and is removed; the permutation only materialises where an op asks for one it does not have;
- a reshape that only adds or drops size-1 axes (the [N, C, L] <-> [N, C, 1, L] around a 1-D op) carries its
  input's permutation over, so a 1-D stack stays [N, L, C] between its ops and only a 1-D graph input or output
  costs a transpose; other reshapes keep element order only when both permutations move just size-1 axes (then
  it is a plain reshape, e.g. a flatten with H = W = 1); a flatten [N, C*H*W] read only by fully-connected layers with constant
  weights permutes those weights' columns from C,H,W to H,W,C order (to_nchw: back); any other reshape asks for
  the identity, which inserts a transpose back to NCHW (noted in ctx.notes["inserted_transposes"]), and gives
  its output S where that moves no data, except for a graph output, whose shape the user sees (a LayerNorm's
  [N, C, H, 1] mean stays so).
A conversion is a rewrite of the constant's data when the tensor is a constant, a reshape when only size-1 axes
move, and otherwise a transpose; conversions are shared by all readers that ask for the same permutation.
4-D graph inputs go to S, except those read only by transposes into S: the model permutes them itself, so they
keep their order (a model that permutes its own NHWC input stays transpose-free). A graph output keeps the permutation
the walk gave it when that is NHWC or the source's order (a conv's output is NHWC, a channels-last permute's output
is in source order), so no transpose is added at the edge; any other permutation is converted to the source's
order. ctx.notes["io_layout"] gives the permutation applied to each changed input and output.
A graph that is in the target layout already (to_nhwc: a TFLite source, or a second run) is left as it is,
with the note "already_nhwc" / "already_nchw" (how many tensors carry the tag); one tagged both ways is refused.

ai-edge-torch (PyTorch -> TFLite) marks every node NCHW or NHWC with a min-cut partition of the graph and puts a
transpose on every edge between the two regions, keeping the model's inputs and outputs NCHW; onnx2tf converts op
by op with per-op rules that guess each tensor's axis order. Both know two layouts only, so a flatten before a
Linear or a user permute is a region boundary that costs a transpose. mcc gives each tensor any permutation, so a
permute composes away and a flatten folds into the FC weight, and it moves the graph's 4-D inputs and outputs to
NHWC too, leaving the transpose of the user's data to the tools that prepare that data anyway. In the other
direction, tf2onnx wraps each NHWC op of a TFLite model in transposes to NCHW and relies on its optimizer to cancel
them pairwise; to_nchw runs the same walk backwards, so it inserts none where the graph does not need them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node, QuantParams, Tensor
from ..ir.ops import infer_node
from ..ir.traits import traits
from .fold_constants import can_bypass, keeps_order as _keeps_order, replace_constant
from .manager import PassContext, register_pass

P = (0, 2, 3, 1)


def _ident(rank: int) -> tuple:
    return tuple(range(rank))


def _inverse(perm) -> tuple:
    inv = [0] * len(perm)
    for k, p in enumerate(perm):
        inv[p] = k
    return tuple(inv)


def _phys(shape, perm) -> tuple:
    return tuple(shape[p] for p in perm)


@dataclass(frozen=True)
class Direction:
    """Where a layout pass moves the spatial ops: the physical permutation S they read, in the axes of the graph
    the pass is given; the layout tag of tensors in S; and the permutation that takes each op's weight along."""

    name: str
    spatial: tuple
    tag: str
    weights: dict

    def tag_of(self, perm) -> str | None:
        """The layout tag of a 4-D tensor in `perm`: only S is claimed; other orders carry no claim."""
        return self.tag if tuple(perm) == self.spatial else None

    def common(self, perms: list) -> tuple:
        """The permutation operands are brought to: S when one has it (spatial ops want it), else the first one's."""
        return self.spatial if self.spatial in perms else perms[0]


# transpose_conv2d: IOHW [C_in, C_out/groups, kh, kw] <-> [C_out/groups, kh, kw, C_in] (TFLite's OHWI at groups 1)
TO_NHWC = Direction("to_nhwc", P, "NHWC", {"conv2d": P, "depthwise_conv2d": (1, 2, 3, 0),
                                            "transpose_conv2d": (1, 2, 3, 0)})
TO_NCHW = Direction("to_nchw", _inverse(P), "NCHW", {"conv2d": _inverse(P), "depthwise_conv2d": (3, 0, 1, 2),
                                                     "transpose_conv2d": (3, 0, 1, 2)})


class _Layout:
    """The walk's state: logical shapes, physical permutations and the conversions already inserted.

    Dictionaries are keyed by the Tensor objects themselves (identity hashing), which keeps every tensor the
    walk has seen alive, so a replaced constant's id can never be reused by a new tensor.
    """

    def __init__(self, graph: Graph, ctx: PassContext, direction: Direction):
        self.g, self.ctx, self.d = graph, ctx, direction
        self.logical = {t: t.shape for t in graph.tensors()}
        self.perm = {t: _ident(len(t.shape)) for t in graph.tensors()}
        self.converted: dict[tuple, Tensor] = {}
        self.source_names: dict[Tensor, str] = {}  # rewritten constant -> the name of the one it replaces
        self.source_transposes: list[Node] = []

    def L(self, t: Tensor) -> tuple:
        return self.logical[t]

    def set(self, t: Tensor, logical, perm) -> None:
        self.logical[t], self.perm[t] = tuple(logical), tuple(perm)

    # ---- conversions ----------------------------------------------------------------------------------
    def to_perm(self, t: Tensor, want, before: Node | None, why: str) -> Tensor:
        """`t` in physical permutation `want`: rewritten data, a reshape, or (last resort) a transpose."""
        want, have = tuple(want), self.perm[t]
        if have == want:
            return t
        key = (t, want)
        if key not in self.converted:
            self.converted[key] = self._convert(t, have, want, before, why)
        return self.converted[key]

    def _convert(self, t: Tensor, have, want, before: Node | None, why: str) -> Tensor:
        logical = self.L(t)
        if t.is_constant:
            data = np.ascontiguousarray(np.transpose(np.transpose(t.data, _inverse(have)), want))
            quant = t.quant
            if quant is not None and quant.axis is not None:
                quant = QuantParams(quant.scale, quant.zero_point, want.index(have[quant.axis]))
            new = self.g.constant(t.name, data)
            new.quant = quant
            self.source_names[new] = self.source_names.get(t, t.name)
            self.ctx.count("constants_permuted")
        else:
            index = len(self.g.nodes) if before is None else self.g.nodes.index(before)
            if _keeps_order(have, logical) and _keeps_order(want, logical):
                node = self.g.add_node("reshape", [t], {"shape": list(_phys(logical, want))},
                                       name=f"{t.name}/reshape", index=index)
                self.ctx.count("reshapes_inserted")
            else:
                r = tuple(have.index(w) for w in want)
                node = self.g.add_node("transpose", [t], {"perm": list(r)}, name=f"{t.name}/transpose", index=index)
                self.ctx.count("transposes_inserted")
                self.ctx.notes.setdefault("inserted_transposes", []).append(f"{node.name}: {why}")
            new = node.outputs[0]
            new.layout = self.d.tag_of(want) if len(want) == 4 else None
            new.quant = t.quant
        self.set(new, logical, want)
        return new

    def align_rank(self, t: Tensor, rank: int, target: tuple, before: Node) -> Tensor:
        """`t` with leading 1s so that it broadcasts axis by axis against a rank-`rank` logical tensor.

        A variable gets a reshape, straight into `target` when that moves only size-1 axes.
        """
        logical = (1,) * (rank - len(self.L(t))) + self.L(t)
        if t.is_constant:
            new, perm = self.g.constant(t.name, np.reshape(t.data, logical)), _ident(rank)
            new.quant = _shift_axis(t.quant, rank - len(self.L(t)))
            self.source_names[new] = self.source_names.get(t, t.name)
        else:
            t = self.to_perm(t, _ident(len(self.L(t))), before, "rank alignment")
            perm = target if _keeps_order(target, logical) else _ident(rank)
            new = self.g.add_node("reshape", [t], {"shape": list(_phys(logical, perm))}, name=f"{t.name}/reshape",
                                  index=self.g.nodes.index(before)).outputs[0]
            new.layout, new.quant = self.d.tag_of(perm), t.quant
            self.ctx.count("reshapes_inserted")
        self.set(new, logical, perm)
        return new

    # ---- op rules: each sets node inputs and attributes, and returns the output permutation -----------
    def spatial(self, n: Node) -> tuple:
        n.inputs[0] = self.to_perm(n.inputs[0], self.d.spatial, n, f"{n.op} '{n.name}' reads {self.d.tag}")
        if n.op in self.d.weights:
            n.inputs[1] = self.to_perm(n.inputs[1], self.d.weights[n.op], n, f"weight of '{n.name}'")
        return self.d.spatial

    def batch_norm(self, n: Node) -> tuple:
        if len(self.L(n.inputs[0])) == 4:
            n.inputs[0] = self.to_perm(n.inputs[0], self.d.spatial, n, f"batch_norm '{n.name}' reads {self.d.tag}")
            return self.d.spatial
        return self.identity(n, f"batch_norm '{n.name}' normalises axis 1")

    def axis_attrs(self, n: Node) -> tuple:
        """softmax and pad: any permutation, their axis attributes follow it."""
        x = n.inputs[0]
        perm = self.perm[x]
        if n.op == "softmax":
            n.attrs["axis"] = perm.index(n.attrs["axis"] % len(perm))
        elif n.op == "pad":
            pads = n.attrs["pads"]
            n.attrs["pads"] = [v for p in perm for v in pads[2 * p:2 * p + 2]]
        elif n.op == "tile":
            n.attrs["multiples"] = [n.attrs["multiples"][p] for p in perm]
        return perm

    def gather(self, n: Node) -> tuple:
        """Any permutation when the indices are a list (the output has the input's rank); other indices change
        the rank, and the op gets the source's axis order."""
        if len(n.inputs[1].shape) != 1:
            return self.identity(n, f"gather '{n.name}' changes the rank")
        perm = self.perm[n.inputs[0]]
        n.attrs["axis"] = perm.index(n.attrs["axis"] % len(perm))
        return perm

    def broadcast(self, n: Node) -> tuple:
        rank = len(self.L(n.outputs[0]))
        full = [self.perm[t] for t in n.inputs if not t.is_constant and len(self.L(t)) == rank]
        target = self.d.common(full) if full else _ident(rank)
        for i, t in enumerate(n.inputs):
            if t.is_constant and t.size == 1:
                continue  # a scalar broadcasts the same way in any layout
            if len(self.L(t)) < rank:
                t = self.align_rank(t, rank, target, n)
            n.inputs[i] = self.to_perm(t, target, n, f"{n.op} '{n.name}' operand")
        return target

    def concat(self, n: Node) -> tuple:
        target = self.d.common([self.perm[t] for t in n.inputs if not t.is_constant] or [self.perm[n.inputs[0]]])
        n.inputs = [self.to_perm(t, target, n, f"concat '{n.name}' operand") for t in n.inputs]
        n.attrs["axis"] = target.index(n.attrs["axis"] % len(target))
        return target

    def mean(self, n: Node) -> tuple:
        perm = self.perm[n.inputs[0]]
        axes = {a % len(perm) for a in n.attrs["axes"]}
        n.attrs["axes"] = sorted(perm.index(a) for a in axes)
        if n.attrs["keepdims"]:
            return perm
        kept = [p for p in perm if p not in axes]
        return tuple(sorted(kept).index(p) for p in kept)

    def slice(self, n: Node) -> tuple:
        perm, a = self.perm[n.inputs[0]], n.attrs
        rows = sorted((perm.index(axis), start, end, step)
                      for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"]))
        for k, key in enumerate(("axes", "starts", "ends", "steps")):
            a[key] = [row[k] for row in rows]
        return perm

    def split(self, n: Node) -> tuple:
        perm = self.perm[n.inputs[0]]
        n.attrs["axis"] = perm.index(n.attrs["axis"] % len(perm))
        return perm

    def fully_connected(self, n: Node) -> tuple:
        x = n.inputs[0]
        rank = len(self.L(x))
        if self.perm[x][-1] != rank - 1:
            x = n.inputs[0] = self.to_perm(x, _ident(rank), n, f"fully_connected '{n.name}' reads features last")
        return self.perm[x]

    def transpose(self, n: Node) -> tuple:
        q_inv = _inverse(n.attrs["perm"])
        out = tuple(q_inv[a] for a in self.perm[n.inputs[0]])
        n.attrs["perm"] = list(_ident(len(out)))
        self.source_transposes.append(n)
        return out

    def reshape(self, n: Node) -> tuple:
        x, y = n.inputs[0], n.outputs[0]
        lx, ly, have = self.L(x), self.L(y), self.perm[x]
        unit = _unit_axes_perm(lx, ly, have, self.d.spatial)
        if lx == ly:
            out = have
        elif unit is not None:
            out = unit
        elif not _keeps_order(have, lx) and self._permute_fc_columns(n):
            out = _ident(len(ly))
        else:
            if not _keeps_order(have, lx):
                why = f"reshape '{n.name}' needs the source's element order"
                n.inputs[0] = self.to_perm(x, _ident(len(lx)), n, why)
            free = len(ly) == 4 and _keeps_order(self.d.spatial, ly) and not self.g.is_output(y)
            out = self.d.spatial if free else _ident(len(ly))
        n.attrs["shape"] = list(_phys(ly, out))
        return out

    def _permute_fc_columns(self, n: Node) -> bool:
        """Flatten [N, C*H*W] of a tensor in S, read only by FCs with constant weights: reorder their columns from
        the logical order of the flattened axes to their physical order (C,H,W -> H,W,C for NHWC; back for NCHW)."""
        x, y = n.inputs[0], n.outputs[0]
        if self.perm[x] != self.d.spatial:
            return False
        lx, ly = self.L(x), self.L(y)
        readers = self.g.consumers(y)
        if (ly != (lx[0], int(np.prod(lx[1:]))) or not readers or self.g.is_output(y)
                or any(r.op != "fully_connected" or r.inputs[0] is not y or not r.inputs[1].is_constant
                       for r in readers)):
            return False
        for r in readers:
            old = r.inputs[1]
            columns = old.data.reshape(old.shape[0], *lx[1:]).transpose(self.d.spatial)
            replace_constant(self.g, r, 1, np.ascontiguousarray(columns.reshape(old.shape[0], -1))).quant = old.quant
            self.ctx.count("fc_weights_permuted")
        return True

    def identity(self, n: Node, why: str = "") -> tuple:
        """Any op without a rule: give it the source's axis order."""
        why = why or f"{n.op} '{n.name}' has no layout rule"
        n.inputs = [t if t is None else self.to_perm(t, _ident(len(self.L(t))), n, why) for t in n.inputs]
        return _ident(len(self.L(n.outputs[0])))

    def rule(self, n: Node):
        """The op's own rule where it has one (its axis attributes, its own axis order), else its traits' layout
        behaviour: spatial ops ask for S, elementwise ones follow their operands."""
        own = {"batch_norm": self.batch_norm, "concat": self.concat, "mean": self.mean, "reshape": self.reshape,
               "fully_connected": self.fully_connected, "transpose": self.transpose, "slice": self.slice,
               "split": self.split, "softmax": self.axis_attrs, "pad": self.axis_attrs,
               "sum": self.mean, "reduce_max": self.mean, "reduce_min": self.mean, "gather": self.gather,
               "tile": self.axis_attrs}.get(n.op)
        if own is not None:
            return own
        return {"spatial": self.spatial, "elementwise": self.broadcast}.get(traits(n.op).layout, self.identity)

    def visit(self, n: Node) -> None:
        out = self.rule(n)(n)
        infer_node(n)
        for y in n.outputs:  # split's outputs all share its input's permutation
            if n.op in ("reshape", "transpose") and len(y.shape) == 4:
                y.layout = self.d.tag_of(out)
            self.set(y, self.L(y), out)
            if y.shape != _phys(self.L(y), out) or (out == self.d.spatial and y.layout != self.d.tag):
                raise AssertionError(f"{self.d.name}: node '{n.name}' ({n.op}) gives {y.shape} @{y.layout}, "
                                     f"expected {_phys(self.L(y), out)} in permutation {out}")

    # ---- after the walk -----------------------------------------------------------------------------------
    def drop_source_transpose(self, n: Node) -> None:
        """Remove a source transpose that the walk turned into a no-op, keeping every reader's layout tag right.

        Only tensors in permutation S must carry S's tag (spatial ops read the tag); a tensor in another
        permutation may carry any tag, because every spatial reader asks for S and gets a conversion.
        """
        x, y, tag = n.inputs[0], n.outputs[0], self.d.tag
        retaggable = any(x is t for t in self.g.inputs) or getattr(self.g.producer(x), "op", None) in (
            "reshape", "transpose")
        if y.layout == tag and x.layout != tag and retaggable:
            x.layout = tag
        if x.layout == tag and len(y.shape) == 4:
            y.layout = tag
        if can_bypass(self.g, n):
            self.g.bypass(n)
            self.ctx.count("source_transposes_removed")
        else:
            n.op, n.attrs = "reshape", {"shape": list(y.shape)}
            self.ctx.count("source_transposes_to_reshape")


def _unit_axes_perm(lx, ly, have, spatial) -> tuple | None:
    """The output permutation of a reshape that only adds or drops size-1 axes (a 1-D op's [N, C, L] <->
    [N, C, 1, L]): its other axes keep the input's physical order, so the reshape moves no data in any
    permutation. S when that order allows it, else the identity, else the size-1 axes last. None for any other
    reshape."""
    big_x, big_y = [a for a in range(len(lx)) if lx[a] != 1], [a for a in range(len(ly)) if ly[a] != 1]
    if [lx[a] for a in big_x] != [ly[a] for a in big_y]:
        return None
    to_y = dict(zip(big_x, big_y))
    order = [to_y[a] for a in have if a in to_y]
    candidates = ([tuple(spatial)] if len(ly) == 4 else []) + [_ident(len(ly))]
    for c in candidates:
        if [a for a in c if a in big_y] == order:
            return c
    return tuple(order + [a for a in range(len(ly)) if a not in big_y])


def _permuted_into_spatial(graph: Graph, t: Tensor, d: Direction) -> bool:
    """A graph input the model permutes itself into S before using: it chose that input's axis order.

    Only a transpose *into* S says so. A transpose out of S is the one to_nhwc inserted in front of a reader that
    needs the source's order (a 4-D reshape): to_nchw moves such an input back to S, where it cancels (keeping
    the input would leave it NHWC, tagged so, under legalize_onnx's "nchw" contract)."""
    readers = graph.consumers(t)
    return bool(readers) and all(r.op == "transpose" and _inverse(r.attrs["perm"]) == d.spatial for r in readers)


def _already_done(graph: Graph, ctx: PassContext, d: Direction) -> bool:
    """True for a graph that is in the target layout already (read from TFLite, or converted before): some
    tensors carry the target's tag and none the other layout's. A graph holding both tags was assembled
    inconsistently, and converting it would permute its converted part a second time, so it is refused.
    (4-D tensors without a tag, such as a fully_connected output, carry no claim about their axes.)"""
    other = TO_NCHW.tag if d is TO_NHWC else TO_NHWC.tag
    tags = {layout: next((t for t in graph.tensors() if t.layout == layout), None) for layout in (d.tag, other)}
    if tags[d.tag] is None:
        return False
    if tags[other] is not None:
        raise MccError(f"{d.name} converts a whole {other} graph, but tensor '{tags[d.tag].name}' is {d.tag} "
                       f"while '{tags[other].name}' is {other}: the graph is half converted. Tag every 4-D tensor "
                       f"of a source graph {other}, or every one {d.tag} when it is in that layout already")
    ctx.note(f"already_{d.tag.lower()}", sum(t.layout == d.tag for t in graph.tensors()))
    return True


def _shift_axis(quant: QuantParams | None, leading: int) -> QuantParams | None:
    """`quant` of a constant that got `leading` new leading axes: a per-channel axis moves with its channels."""
    if quant is None or quant.axis is None:
        return quant
    return QuantParams(quant.scale, quant.zero_point, quant.axis + leading)


def convert_layout(graph: Graph, ctx: PassContext, d: Direction) -> Graph:
    """The walk described in the module docstring, towards `d`."""
    if _already_done(graph, ctx, d):
        return ctx.unchanged(graph)
    graph.infer_shapes()
    lay = _Layout(graph, ctx, d)
    io = {"inputs": {}, "outputs": {}}
    for t in graph.inputs:
        if len(t.shape) == 4 and not _permuted_into_spatial(graph, t, d):
            lay.set(t, t.shape, d.spatial)
            t.shape, t.layout = _phys(t.shape, d.spatial), d.tag
            io["inputs"][t.name] = list(d.spatial)
    for n in list(graph.nodes):
        lay.visit(n)
    for o in dict.fromkeys(graph.outputs):
        if o.is_constant:
            continue
        rank, have = len(lay.L(o)), lay.perm[o]
        want = have if have in (d.spatial, _ident(rank)) else _ident(rank)
        new = lay.to_perm(o, want, None, f"graph output '{o.name}'")
        if new is not o:
            new.name, o.name = o.name, new.name
            graph.outputs = [new if t is o else t for t in graph.outputs]
        if want != _ident(rank):
            io["outputs"][new.name] = list(want)
    for n in lay.source_transposes:
        lay.drop_source_transpose(n)
    live = graph.tensors()
    taken, live_ids = {t.name for t in live}, {id(t) for t in live}
    for new, name in lay.source_names.items():
        if name not in taken and id(new) in live_ids:
            taken.discard(new.name)
            new.name = name
            taken.add(name)
    ctx.note("io_layout", io)
    return graph


@register_pass("to_nhwc")
def to_nhwc(graph: Graph, ctx: PassContext) -> Graph:
    return convert_layout(graph, ctx, TO_NHWC)


@register_pass("to_nchw")
def to_nchw(graph: Graph, ctx: PassContext) -> Graph:
    return convert_layout(graph, ctx, TO_NCHW)
