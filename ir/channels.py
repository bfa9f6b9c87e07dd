"""Channel surgery: remove channels of a tensor together with every channel its dependency group ties to them.

Torch-Pruning builds its DependencyGraph by tracing a module and pairing layers through per-layer "pruners"; mcc
walks its own IR, where every dependency is an edge, and asks the op traits (ir/traits.py `channels`) how channels
cross each node: a weighted op's output channels are its weight's out axis and its input channels the in axis; a
depthwise conv's output channel c*m + j reads input channel c; elementwise ops, pools, pads and resizes carry
channels through and tie all their operands together (a residual add joins both branches); a concat along the
channel axis maps ranges to its inputs; a flatten maps each channel to its block of features. The walk first
plans every slice (and refuses, naming the node, whatever it cannot follow: a graph input or output whose
interface would change, a grouped conv, a channel-mixing op), then applies the plan and verifies the graph, so a
refused request leaves the graph as it was.
"""

from __future__ import annotations

import numpy as np

from .graph import Graph
from .node import Node
from .tensor import QuantParams, Tensor
from .traits import channel_axis, grouped, traits, weight_axes


class ChannelError(ValueError):
    """A channel removal that the dependency group does not allow (the message names the node or tensor)."""


def remove_channels(graph: Graph, t: Tensor, keep) -> int:
    """Keep only channels `keep` (indices along t's channel axis) of `t` and of everything tied to them; returns the
    number of constant tensors sliced. ChannelError (graph unchanged) when the group cannot be followed."""
    plan = _Plan(graph)
    plan.reach(t, np.unique(np.asarray(keep, dtype=np.int64)))
    return plan.apply()


def dependency_group(graph: Graph, t: Tensor, keep=None) -> list[tuple[Tensor, np.ndarray]]:
    """The activation tensors whose channels are tied to t's (the same channels, a concat range, a depthwise
    group, a flatten block), each with the channels of its own that keeping `keep` of t keeps (default: all), in
    the order the walk meets them; ChannelError when the group reaches something channels cannot cross."""
    plan = _Plan(graph)
    plan.reach(t, np.unique(np.asarray(keep, np.int64)) if keep is not None else np.arange(t.shape[channel_axis(t)]))
    return [(plan.tensors[k], kept) for k, kept in plan.keep.items()]


class _Plan:
    def __init__(self, graph: Graph):
        self.g = graph
        self.keep: dict[int, np.ndarray] = {}        # id(tensor) -> channels kept
        self.tensors: dict[int, Tensor] = {}
        self.slices: dict[tuple[int, int, int], tuple[Node, int, int, np.ndarray]] = {}  # (node, input, axis)
        self.flattens: dict[int, tuple[Node, int]] = {}  # a flatten reshape -> its new feature count

    # ---- walking ------------------------------------------------------------------------------------------
    def reach(self, t: Tensor, keep: np.ndarray) -> None:
        """Record that `t` keeps `keep`, then follow its producer and its readers."""
        seen = self.keep.get(id(t))
        if seen is not None:
            if not np.array_equal(seen, keep):
                raise ChannelError(f"tensor '{t.name}' is tied to two different channel selections by its "
                                   "dependency group; prune the group as one")
            return
        size = t.shape[channel_axis(t)]
        if len(keep) == 0 or keep[0] < 0 or keep[-1] >= size:
            raise ChannelError(f"tensor '{t.name}' has {size} channels; cannot keep {keep.tolist()[:8]}"
                               f"{'...' if len(keep) > 8 else ''}")
        self.keep[id(t)], self.tensors[id(t)] = keep, t
        if t.is_constant:
            return
        if any(t is i for i in self.g.inputs) or self.g.is_output(t):
            raise ChannelError(f"tensor '{t.name}' is a graph {'input' if not self.g.is_output(t) else 'output'}: "
                               "its channels are the model's interface")
        self._upstream(self.g.producer(t), keep)
        for reader in self.g.consumers(t):
            self._downstream(reader, t, keep)

    def _upstream(self, p: Node, keep: np.ndarray) -> None:
        kind = traits(p.op).channels
        if kind == "weights":
            self._weights(p, keep, out=True)
        elif kind == "depthwise":
            m = p.attrs["multiplier"]
            groups = np.unique(keep // m)
            if not np.array_equal(np.sort((groups[:, None] * m + np.arange(m)).ravel()), keep):
                raise ChannelError(f"depthwise conv '{p.name}' has multiplier {m}: its output channels go in groups "
                                   f"of {m} per input channel, so they are kept or removed a group at a time")
            self._weights(p, keep, out=True)
            self.reach(p.inputs[0], groups)
        else:
            self._through(p, keep)

    def _downstream(self, c: Node, t: Tensor, keep: np.ndarray) -> None:
        kind = traits(c.op).channels
        if kind == "weights":
            if c.inputs[0] is not t:
                raise ChannelError(f"node '{c.name}' ({c.op}) reads '{t.name}' as a weight")
            self._weights(c, keep, out=False)
        elif kind == "depthwise":
            m = c.attrs["multiplier"]
            expanded = (keep[:, None] * m + np.arange(m)).ravel()
            self._weights(c, expanded, out=True)
            self.reach(c.outputs[0], expanded)
        else:
            self._through(c, None, reader_of=t)

    def _through(self, n: Node, keep, reader_of: Tensor | None = None) -> None:
        """A node whose output keeps `keep` (or, reached from its input `reader_of`, keep=None: that input's)."""
        kind = traits(n.op).channels
        if kind == "follow":
            self._check_follow(n)
            if keep is None:
                keep = self.keep[id(reader_of)]
            for i, x in enumerate(n.inputs):
                if x is None:
                    continue
                if x.is_constant:
                    self._operand(n, i, x, n.outputs[0], keep)
                else:
                    self.reach(x, keep)
            for y in n.outputs:
                self.reach(y, keep)
        elif kind == "concat":
            self._concat(n, keep, reader_of)
        elif kind == "reshape":
            self._reshape(n, keep, reader_of)
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

    def _concat(self, n: Node, keep, reader_of) -> None:
        y = n.outputs[0]
        axis = channel_axis(y)
        if n.attrs["axis"] % len(y.shape) != axis:
            return self._through_any_axis(n, keep, reader_of)
        sizes = [x.shape[axis] for x in n.inputs]
        starts = np.cumsum([0] + sizes[:-1])
        if keep is None:  # from input `reader_of`: the others keep what the group already keeps of them, or all
            keep = np.concatenate([self.keep.get(id(x), np.arange(size)) + s
                                   for x, s, size in zip(n.inputs, starts, sizes)])
        for x, s, size in zip(n.inputs, starts, sizes):
            local = keep[(keep >= s) & (keep < s + size)] - s
            if x.is_constant:
                self._slice(n, list(n.inputs).index(x), axis, local)
            else:
                self.reach(x, local)
        self.reach(y, keep)

    def _through_any_axis(self, n: Node, keep, reader_of) -> None:
        keep = self.keep[id(reader_of)] if keep is None else keep
        for x in n.inputs:
            self.reach(x, keep)
        self.reach(n.outputs[0], keep)

    def _reshape(self, n: Node, keep, reader_of) -> None:
        """A flatten [N, C, H, W] (or NHWC) -> [N, F]: channel c owns its H*W features (c*HW + s under NCHW,
        s*C + c under NHWC). Any other reshape is refused."""
        x, y = n.inputs[0], n.outputs[0]
        if len(x.shape) != 4 or len(y.shape) != 2 or y.shape[0] != x.shape[0]:
            raise ChannelError(f"reshape '{n.name}' {list(x.shape)} -> {list(y.shape)} is not a flatten; channels "
                               "cannot be followed through it")
        c = x.shape[channel_axis(x)]
        hw = x.size // (x.shape[0] * c)
        if keep is None:
            kx = self.keep[id(reader_of)] if reader_of is x else None
        else:
            kx = None
        if kx is None:  # reached from the flat side: whole channel blocks only
            flat = keep
            kx = np.unique(flat // hw if x.layout != "NHWC" else flat % c)
            if not np.array_equal(self._features(kx, c, hw, x.layout), flat):
                raise ChannelError(f"reshape '{n.name}' flattens {c} channels of {hw} features each; only whole "
                                   "channels can be removed through it")
        features = self._features(kx, c, hw, x.layout)
        self.flattens[id(n)] = (n, len(features))
        self.reach(x, kx)
        self.reach(y, features)

    @staticmethod
    def _features(channels, c, hw, layout) -> np.ndarray:
        s = np.arange(hw)
        f = (channels[:, None] * hw + s) if layout != "NHWC" else (s[None, :] * c + channels[:, None])
        return np.sort(f.ravel())

    def _weights(self, n: Node, keep: np.ndarray, out: bool) -> None:
        if grouped(n):
            raise ChannelError(f"{n.op} '{n.name}' has {n.attrs['groups']} groups; grouped convs keep their channels "
                               "(prune whole groups by hand)")
        w_axis = weight_axes(n)[0 if out else 1]
        self._slice(n, 1, w_axis, keep)
        if out and n.input(2) is not None:
            self._slice(n, 2, 0, keep)

    def _operand(self, n: Node, i: int, x: Tensor, y: Tensor, keep: np.ndarray) -> None:
        """A constant operand broadcast against output `y`: sliced where it has y's channel axis (not size 1)."""
        axis = channel_axis(y) - (len(y.shape) - len(x.shape))
        if n.op == "batch_norm":
            axis = 0
        if 0 <= axis < len(x.shape) and x.shape[axis] > 1:
            self._slice(n, i, axis, keep)

    def _slice(self, n: Node, i: int, axis: int, keep: np.ndarray) -> None:
        key = (id(n), i, axis)
        if key in self.slices and not np.array_equal(self.slices[key][3], keep):
            raise ChannelError(f"input {i} of node '{n.name}' is asked for two different channel selections "
                               f"along axis {axis}")
        self.slices[key] = (n, i, axis, keep)

    # ---- applying -----------------------------------------------------------------------------------------
    def apply(self) -> int:
        by_input: dict[tuple[int, int], list] = {}
        for n, i, axis, keep in self.slices.values():
            if len(keep) != n.inputs[i].shape[axis]:
                by_input.setdefault((id(n), i), [n, i]).append((axis, keep))
        for n, i, *cuts in by_input.values():
            old = n.inputs[i]
            data, q = old.data, old.quant
            for axis, keep in cuts:
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
        self.g.verify()
        return len(by_input)
