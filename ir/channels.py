"""Channel surgery: remove channels of a tensor together with every channel its dependency group ties to them.

Torch-Pruning builds its DependencyGraph by tracing a module and pairing layers through per-layer "pruners"; mcc
walks its own IR, where every dependency is an edge, and asks the op traits (ir/traits.py `channels`) how channels
cross each node: a weighted op's output channels are its weight's out axis and its input channels the in axis; a
depthwise conv's output channel c*m + j reads input channel c; elementwise ops, pools, pads and resizes carry
channels through and tie all their operands together (a residual add joins both branches); a concat along the
channel axis maps ranges to its inputs; a flatten maps each channel to its block of features; a grouped conv
ties nothing channel for channel but keeps, on each side, an equal number of channels in every group (its weight
is cut group by group). The walk first plans every slice (and refuses, naming the node, whatever it cannot
follow: a graph input or output whose interface would change, a channel-mixing op, a grouped conv asked for
unequal groups), then applies the plan and verifies the graph, so a refused request leaves the graph as it was.

Every planned channel carries a label: the channel of the starting tensor it is tied to (-1 for channels the walk
only passes by, such as the other inputs of a concat). `prunable_groups` enumerates every group of a graph with
those labels, so a pruning criterion can sum each weight slice into the channel it belongs to and a schedule can
price a channel in MACs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph import Graph
from .node import Node
from .tensor import QuantParams, Tensor
from .traits import channel_axis, grouped, traits, weight_axes, weighted


class ChannelError(ValueError):
    """A channel removal that the dependency group does not allow (the message names the node or tensor)."""


def remove_channels(graph: Graph, t: Tensor, keep) -> int:
    """Keep only channels `keep` (indices along t's channel axis) of `t` and of everything tied to them; returns the
    number of constant tensors sliced. ChannelError (graph unchanged) when the group cannot be followed."""
    keep = np.unique(np.asarray(keep, dtype=np.int64))
    plan = _Plan(graph)
    plan.walk(t, keep, keep)
    return plan.apply()


def dependency_group(graph: Graph, t: Tensor, keep=None) -> list[tuple[Tensor, np.ndarray]]:
    """The activation tensors whose channels are tied to t's (the same channels, a concat range, a depthwise
    group, a flatten block), each with the channels of its own that keeping `keep` of t keeps (default: all), in
    the order the walk meets them; ChannelError when the group reaches something channels cannot cross."""
    plan = _Plan(graph)
    keep = np.unique(np.asarray(keep, np.int64)) if keep is not None else np.arange(t.shape[channel_axis(t)])
    plan.walk(t, keep, keep)
    return [(plan.tensors[k], kept) for k, kept in plan.keep.items()]


@dataclass
class Group:
    """The channels tied to the output channels of `root` (a conv or fully-connected node): `channels` of them.

    `slices`: every cut of a constant the group makes, as (node, input index, axis, indices along that axis,
    label of each index: the root channel it belongs to, -1 for none); `tensors`: the same for every activation
    the walk reached; `grouped`: (node, input channel indices,
    labels) of each grouped conv reading the group (its weight is cut group by group); `axes`: (node, "in" or
    "out", channels of that axis, how many of them each root channel owns) of every node whose channel count the
    group changes; `blocks`: for each root channel, the block it must be kept in equal numbers with (the groups
    of a grouped conv), or None; `tied`: for each root channel, the root channel it must go with (a tensor
    that meets two of them in one channel, as a ghost module's concat of x and depthwise(x) added to a shortcut
    does), or None."""

    root: Node
    tensor: Tensor
    channels: int
    tensors: list = field(default_factory=list)  # (activation, its channels, their labels)
    slices: list = field(default_factory=list)
    grouped: list = field(default_factory=list)
    axes: list = field(default_factory=list)
    blocks: np.ndarray | None = None
    tied: np.ndarray | None = None

    def producers(self) -> list[Node]:
        """The nodes whose output channels are the group's (they write it)."""
        return [n for n, side, _, _ in self.axes if side == "out"]


def prunable_groups(graph: Graph) -> tuple[list[Group], dict[str, str]]:
    """Every dependency group of `graph`, one per set of channels that must be removed together, rooted at the
    first conv / fully-connected node (graph order) that writes it; and, by root node name, why a group cannot be
    pruned (it reaches a graph input or output, a channel-mixing op, ...). Torch-Pruning's DependencyGraph
    finds its groups by tracing modules; mcc reads them off the IR with the same walk remove_channels uses."""
    groups, refused, covered = [], {}, set()
    for n in graph.nodes:
        if traits(n.op).channels != "weights" or not n.inputs[1].is_constant or id(n.outputs[0]) in covered:
            continue
        t = n.outputs[0]
        size = t.shape[channel_axis(t)]
        plan = _Plan(graph)
        try:
            plan.walk(t, np.arange(size), np.arange(size))
            group = plan.group(n, t)
        except ChannelError as e:
            refused[n.name] = str(e)
            continue
        covered.update(k for k, labels in plan.label.items() if (labels >= 0).any())
        groups.append(group)
    return groups, refused


class _Plan:
    def __init__(self, graph: Graph):
        self.g = graph
        self.keep: dict[int, np.ndarray] = {}        # id(tensor) -> channels kept
        self.label: dict[int, np.ndarray] = {}       # id(tensor) -> the start's channel of each kept channel, or -1
        self.tensors: dict[int, Tensor] = {}
        self.slices: dict[tuple[int, int, int], tuple[Node, int, int, np.ndarray, np.ndarray]] = {}
        self.grouped: dict[int, tuple[Node, np.ndarray, np.ndarray]] = {}  # grouped conv -> input channels kept
        self.flattens: dict[int, tuple[Node, int]] = {}  # a flatten reshape -> its new feature count
        self.pending: dict[int, Node] = {}  # concats reached from an input, not yet settled
        self.ties: list[np.ndarray] = []  # pairs of the start's channels that meet in one channel

    # ---- walking ------------------------------------------------------------------------------------------
    def walk(self, t: Tensor, keep: np.ndarray, label: np.ndarray) -> None:
        """Reach `t`, then settle the concats reached from an input, one at a time, until none is left: by then
        every input the group ties has been reached, whatever order the walk took (a concat settled too early
        would keep all of an input that a later step prunes)."""
        self.reach(t, keep, label)
        while self.pending:
            key = next(iter(self.pending))
            n = self.pending.pop(key)
            if id(n.outputs[0]) not in self.keep:
                self._settle(n)

    def reach(self, t: Tensor, keep: np.ndarray, label: np.ndarray) -> None:
        """Record that `t` keeps `keep` (labelled `label`), then follow its producer and its readers."""
        seen = self.keep.get(id(t))
        if seen is not None:
            if not np.array_equal(seen, keep):
                raise ChannelError(f"tensor '{t.name}' is tied to two different channel selections by its "
                                   "dependency group; prune the group as one")
            other = self.label[id(t)]
            differ = (other != label) & (other >= 0) & (label >= 0)
            if differ.any():  # two channels of the start meet here (a concat of x and a depthwise of x, added)
                self.ties.append(np.stack([other[differ], label[differ]], axis=1))
            return
        size = t.shape[channel_axis(t)]
        if len(keep) == 0 or keep[0] < 0 or keep[-1] >= size:
            raise ChannelError(f"tensor '{t.name}' has {size} channels; cannot keep {keep.tolist()[:8]}"
                               f"{'...' if len(keep) > 8 else ''}")
        self.keep[id(t)], self.label[id(t)], self.tensors[id(t)] = keep, label, t
        if t.is_constant:
            return
        if any(t is i for i in self.g.inputs) or self.g.is_output(t):
            raise ChannelError(f"tensor '{t.name}' is a graph {'input' if not self.g.is_output(t) else 'output'}: "
                               "its channels are the model's interface")
        self._upstream(self.g.producer(t), keep, label)
        for reader in self.g.consumers(t):
            self._downstream(reader, t, keep, label)

    def _upstream(self, p: Node, keep: np.ndarray, label: np.ndarray) -> None:
        kind = traits(p.op).channels
        if kind == "weights":
            self._weights(p, keep, label, out=True)
        elif kind == "depthwise":
            m = p.attrs["multiplier"]
            groups = np.unique(keep // m)
            if not np.array_equal(np.sort((groups[:, None] * m + np.arange(m)).ravel()), keep):
                raise ChannelError(f"depthwise conv '{p.name}' has multiplier {m}: its output channels go in groups "
                                   f"of {m} per input channel, so they are kept or removed a group at a time")
            self._weights(p, keep, label, out=True)
            self.reach(p.inputs[0], groups, label[::m])
        else:
            self._through(p, keep, label)

    def _downstream(self, c: Node, t: Tensor, keep: np.ndarray, label: np.ndarray) -> None:
        kind = traits(c.op).channels
        if kind == "weights":
            if c.inputs[0] is not t:
                raise ChannelError(f"node '{c.name}' ({c.op}) reads '{t.name}' as a weight")
            self._weights(c, keep, label, out=False)
        elif kind == "depthwise":
            m = c.attrs["multiplier"]
            expanded = (keep[:, None] * m + np.arange(m)).ravel()
            self._weights(c, expanded, np.repeat(label, m), out=True)
            self.reach(c.outputs[0], expanded, np.repeat(label, m))
        else:
            self._through(c, None, None, reader_of=t)

    def _through(self, n: Node, keep, label, reader_of: Tensor | None = None) -> None:
        """A node whose output keeps `keep` (or, reached from its input `reader_of`, keep=None: that input's)."""
        kind = traits(n.op).channels
        if kind == "follow":
            self._check_follow(n)
            if keep is None:
                keep, label = self.keep[id(reader_of)], self.label[id(reader_of)]
            for i, x in enumerate(n.inputs):
                if x is None:
                    continue
                if x.is_constant:
                    self._operand(n, i, x, n.outputs[0], keep, label)
                else:
                    self.reach(x, keep, label)
            for y in n.outputs:
                self.reach(y, keep, label)
        elif kind == "concat":
            self._concat(n, keep, label, reader_of)
        elif kind == "reshape":
            self._reshape(n, keep, label, reader_of)
        else:
            raise ChannelError(f"node '{n.name}' ({n.op}) mixes or rearranges channels; its channels cannot be "
                               "removed through it")

    # ---- op rules -----------------------------------------------------------------------------------------
    def _check_follow(self, n: Node) -> None:
        x = n.inputs[0]
        if n.op == "mean" and channel_axis(x) in [a % len(x.shape) for a in n.attrs["axes"]]:
            raise ChannelError(f"mean '{n.name}' reduces over the channel axis")
        if n.op == "pad" and any(n.attrs["pads"][2 * channel_axis(n.inputs[0]) + k] for k in (0, 1)):
            raise ChannelError(f"pad '{n.name}' pads the channel axis")

    def _concat(self, n: Node, keep, label, reader_of) -> None:
        y = n.outputs[0]
        axis = channel_axis(y)
        if n.attrs["axis"] % len(y.shape) != axis:
            return self._through_any_axis(n, keep, label, reader_of)
        sizes = [x.shape[axis] for x in n.inputs]
        starts = np.cumsum([0] + sizes[:-1])
        if keep is None:  # from an input: settled once the walk has reached every input it will (see walk)
            if id(n) not in self.pending:
                self.pending[id(n)] = n
            return
        for x, s, size in zip(n.inputs, starts, sizes):
            inside = (keep >= s) & (keep < s + size)
            if x.is_constant:
                self._slice(n, list(n.inputs).index(x), axis, keep[inside] - s, label[inside])
            else:
                self.reach(x, keep[inside] - s, label[inside])
        self.reach(y, keep, label)

    def _settle(self, n: Node) -> None:
        """A concat reached from its inputs: its output keeps what the group keeps of each input, and all of an
        input the group never reached (that input is not walked: keeping all of it cuts nothing)."""
        y = n.outputs[0]
        axis = channel_axis(y)
        sizes = [x.shape[axis] for x in n.inputs]
        starts = np.cumsum([0] + sizes[:-1])
        keep = np.concatenate([self.keep.get(id(x), np.arange(size)) + s for x, s, size in zip(n.inputs, starts, sizes)])
        label = np.concatenate([self.label.get(id(x), np.full(size, -1)) for x, size in zip(n.inputs, sizes)])
        for i, (x, s, size) in enumerate(zip(n.inputs, starts, sizes)):
            if x.is_constant:
                inside = (keep >= s) & (keep < s + size)
                self._slice(n, i, axis, keep[inside] - s, label[inside])
        self.reach(y, keep, label)

    def _through_any_axis(self, n: Node, keep, label, reader_of) -> None:
        if keep is None:
            keep, label = self.keep[id(reader_of)], self.label[id(reader_of)]
        for x in n.inputs:
            self.reach(x, keep, label)
        self.reach(n.outputs[0], keep, label)

    def _reshape(self, n: Node, keep, label, reader_of) -> None:
        """A flatten [N, C, H, W] (or NHWC) -> [N, F]: channel c owns its H*W features (c*HW + s under NCHW,
        s*C + c under NHWC). Any other reshape is refused."""
        x, y = n.inputs[0], n.outputs[0]
        if len(x.shape) != 4 or len(y.shape) != 2 or y.shape[0] != x.shape[0]:
            raise ChannelError(f"reshape '{n.name}' {list(x.shape)} -> {list(y.shape)} is not a flatten; channels "
                               "cannot be followed through it")
        c = x.shape[channel_axis(x)]
        hw = x.size // (x.shape[0] * c)
        if keep is None and reader_of is x:
            kx, lx = self.keep[id(x)], self.label[id(x)]
        else:  # reached from the flat side: whole channel blocks only
            flat = keep if keep is not None else self.keep[id(reader_of)]
            flat_label = label if label is not None else self.label[id(reader_of)]
            kx = np.unique(flat // hw if x.layout != "NHWC" else flat % c)
            if not np.array_equal(self._features(kx, c, hw, x.layout), flat):
                raise ChannelError(f"reshape '{n.name}' flattens {c} channels of {hw} features each; only whole "
                                   "channels can be removed through it")
            first = kx * hw if x.layout != "NHWC" else kx  # each channel's feature at spatial position 0
            lx = flat_label[np.searchsorted(flat, first)]
        features = self._features(kx, c, hw, x.layout)
        owner = features // hw if x.layout != "NHWC" else features % c
        self.flattens[id(n)] = (n, len(features))
        self.reach(x, kx, lx)
        self.reach(y, features, lx[np.searchsorted(kx, owner)])

    @staticmethod
    def _features(channels, c, hw, layout) -> np.ndarray:
        s = np.arange(hw)
        f = (channels[:, None] * hw + s) if layout != "NHWC" else (s[None, :] * c + channels[:, None])
        return np.sort(f.ravel())

    def _weights(self, n: Node, keep: np.ndarray, label: np.ndarray, out: bool) -> None:
        if not n.inputs[1].is_constant:
            raise ChannelError(f"{n.op} '{n.name}' computes its weight at run time; only constant weights are cut")
        if n.op == "fully_connected" and len(n.inputs[0].shape) != 2:
            raise ChannelError(f"fully_connected '{n.name}' reads a {len(n.inputs[0].shape)}-D input: its features "
                               "are not the channel axis")
        if grouped(n):
            if n.op != "conv2d":
                raise ChannelError(f"{n.op} '{n.name}' has {n.attrs['groups']} groups; only a grouped conv2d's "
                                   "channels can be removed")
            size = (n.outputs[0] if out else n.inputs[0]).shape[channel_axis(n.inputs[0])]
            counts = np.bincount(keep // (size // n.attrs["groups"]), minlength=n.attrs["groups"])
            if (counts != counts[0]).any():
                raise ChannelError(f"{n.op} '{n.name}' has {n.attrs['groups']} groups and would keep "
                                   f"{counts.tolist()} {'output' if out else 'input'} channels of them: a grouped "
                                   "conv keeps an equal number in every group")
            if not out:
                self.grouped[id(n)] = (n, keep, label)
                return
        w_axis = weight_axes(n)[0 if out else 1]
        self._slice(n, 1, w_axis, keep, label)
        if out and n.input(2) is not None:
            self._slice(n, 2, 0, keep, label)

    def _operand(self, n: Node, i: int, x: Tensor, y: Tensor, keep: np.ndarray, label: np.ndarray) -> None:
        """A constant operand broadcast against output `y`: sliced where it has y's channel axis (not size 1)."""
        axis = channel_axis(y) - (len(y.shape) - len(x.shape))
        if n.op == "batch_norm":
            axis = 0
        if 0 <= axis < len(x.shape) and x.shape[axis] > 1:
            self._slice(n, i, axis, keep, label)

    def _slice(self, n: Node, i: int, axis: int, keep: np.ndarray, label: np.ndarray) -> None:
        key = (id(n), i, axis)
        if key in self.slices and not np.array_equal(self.slices[key][3], keep):
            raise ChannelError(f"input {i} of node '{n.name}' is asked for two different channel selections "
                               f"along axis {axis}")
        self.slices[key] = (n, i, axis, keep, label)

    # ---- reading the plan as a group ----------------------------------------------------------------------
    def group(self, root: Node, t: Tensor) -> Group:
        """The plan of keeping every channel of root's output `t`, as a Group."""
        size = t.shape[channel_axis(t)]
        group = Group(root, t, size, slices=list(self.slices.values()), grouped=list(self.grouped.values()),
                      tensors=[(u, self.keep[k], self.label[k]) for k, u in self.tensors.items() if not u.is_constant])
        sides = {}
        for k, u in self.tensors.items():
            owned = int((self.label[k] >= 0).sum())
            if u.is_constant or not owned:
                continue
            p = self.g.producer(u)
            if p is not None and weighted(p.op):
                sides[(id(p), "out")] = (p, "out", u.shape[channel_axis(u)], owned / size)
            for c in self.g.consumers(u):
                if traits(c.op).channels == "weights" and c.inputs[0] is u:
                    sides[(id(c), "in")] = (c, "in", u.shape[channel_axis(u)], owned / size)
        group.axes = list(sides.values())
        group.blocks = self._blocks(size)
        group.tied = self._tied(size)
        return group

    def _tied(self, size: int) -> np.ndarray | None:
        """For each root channel, the smallest root channel it must be removed with (None when each is free)."""
        if not self.ties:
            return None
        rep = np.arange(size)
        pairs = np.concatenate(self.ties)
        changed = True
        while changed:  # connected components by repeated min-propagation (a few rounds for real graphs)
            low = np.minimum(rep[pairs[:, 0]], rep[pairs[:, 1]])
            changed = bool((rep[pairs[:, 0]] != low).any() or (rep[pairs[:, 1]] != low).any())
            rep[pairs[:, 0]] = np.minimum(rep[pairs[:, 0]], low)
            rep[pairs[:, 1]] = np.minimum(rep[pairs[:, 1]], low)
            rep = rep[rep]
        return rep

    def _blocks(self, size: int) -> np.ndarray | None:
        """For each root channel, the block of the grouped convs that it must be kept in equal numbers with."""
        keys = []
        for n, i, axis, keep, label in self.slices.values():
            if grouped(n) and i == 1:
                keys.append(self._block_of(n, label, keep, n.inputs[1].shape[axis] // n.attrs["groups"], size))
        for n, keep, label in self.grouped.values():
            keys.append(self._block_of(n, label, keep, n.inputs[0].shape[channel_axis(n.inputs[0])]
                                       // n.attrs["groups"], size))
        if not keys:
            return None
        _, blocks = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
        blocks = blocks.ravel()
        counts = np.bincount(blocks)
        if (counts != counts[0]).any():
            raise ChannelError("the grouped convs of this group split its channels into blocks of unequal sizes "
                               f"{sorted(set(counts.tolist()))}; no selection keeps every group equal")
        return blocks

    def _block_of(self, n: Node, label, keep, per_group, size) -> np.ndarray:
        """Each root channel's group in grouped conv `n`; the group must own every channel of n on that side (the
        channels of other groups stay, so no group of n could lose one)."""
        if (label < 0).any():
            raise ChannelError(f"grouped conv '{n.name}' also reads or writes channels of other dependency groups; "
                               "its groups could not stay equal")
        block = np.full(size, -1)
        block[label] = keep // per_group
        return block

    # ---- applying -----------------------------------------------------------------------------------------
    def apply(self) -> int:
        by_input: dict[tuple[int, int], list] = {}
        for n, keep, _ in self.grouped.values():
            if len(keep) != n.inputs[0].shape[channel_axis(n.inputs[0])]:
                by_input.setdefault((id(n), 1), [n, 1]).append((None, keep))
        for n, i, axis, keep, _ in self.slices.values():
            if len(keep) != n.inputs[i].shape[axis]:
                by_input.setdefault((id(n), i), [n, i]).append((axis, keep))
        for n, i, *cuts in by_input.values():
            old = n.inputs[i]
            data, q = old.data, old.quant
            for axis, keep in cuts:
                if axis is None:
                    data = _grouped_input_cut(n, data, keep)
                    continue
                data = np.take(data, keep, axis=axis)
                if q is not None and q.axis == axis:
                    q = QuantParams(q.scale[keep], q.zero_point[keep], axis)
            new = self.g.constant(old.name, data)
            new.quant = q
            n.inputs[i] = new
            if not self.g.consumers(old) and not self.g.is_output(old):
                new.name = old.name
        for n, features in self.flattens.values():
            n.attrs["shape"] = [n.inputs[0].shape[0], features]
        self.g.infer_shapes()
        self.g.verify(inferred=True)
        return len(by_input)


def _grouped_input_cut(n: Node, w: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A grouped conv's weight keeping input channels `keep` (an equal number in each group): group k's output
    channels keep their own input channels, so the weight's in axis is cut group by group."""
    out_axis, in_axis = weight_axes(n)
    g = n.attrs["groups"]
    per_in, per_out = w.shape[in_axis], w.shape[out_axis] // g
    local = (keep % per_in).reshape(g, -1)
    parts = [np.take(np.take(w, np.arange(k * per_out, (k + 1) * per_out), axis=out_axis), local[k], axis=in_axis)
             for k in range(g)]
    return np.concatenate(parts, axis=out_axis)
