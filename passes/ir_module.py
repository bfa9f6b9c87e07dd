"""A float IR graph as a torch.nn.Module, so that its weights can be trained, and the trained weights put back.

`IRModule(graph)` makes the float weight constants of the weighted ops (conv2d, depthwise_conv2d,
transpose_conv2d, fully_connected: weight and bias) its parameters and every other constant a buffer, and its
forward runs the graph's nodes in topological order with torch ops, in the graph's own layouts (NCHW from torch and
ONNX sources, NHWC from a TFLite source: spatial ops move NHWC to NCHW and back around the torch call, weights
follow). Each op computes the IR's definition (ir/ops.py) as the float runtime does, within float rounding: the
module is for gradients, the runtime stays the reference. `write_back(graph)` replaces those constants with the
trained values (float32; an untouched weight comes back with the same bytes).

Samples are batched along axis 0, which the IR fixes at the model's batch size: the graph must be one that
runtime.plan.rebatch accepts (no op looks across samples), and a reshape's leading size follows the batch.

`weight_transforms` (weight tensor name -> callable on the parameter) is the hook for compression that trains
through a function of the weights (issue 18: a straight-through sign for binary weights, a low-rank product): the
forward uses transform(parameter), and write_back writes what the forward used.

Peers: torch.fx / onnx2torch convert a model into torch code; mcc interprets its own IR, so whatever passes did to
the graph (pruned channels, folded batch norms) is what trains, and the weights map back to IR tensors by name.
torch is imported here only, and only the finetune pass imports this module, when it has data to train on.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MccError
from ..ir import Graph, Node, Tensor
from ..ir.traits import weighted
from ..runtime.kernels.activations import CLAMPS
from ..runtime.kernels.resize import nearest_indices, source_coordinates
from ..runtime.plan import rebatch
from .binarize import ste_step


class IRModule(torch.nn.Module):
    def __init__(self, graph: Graph, weight_transforms: dict[str, Callable] | None = None):
        super().__init__()
        unknown = sorted({f"{n.op} ('{n.name}')" for n in graph.nodes if n.op not in TORCH_OPS})
        if unknown:
            raise MccError(f"cannot train through op(s) {', '.join(unknown)}: fine-tuning runs the float graph in "
                           "torch, and these have no torch form here (quantize/dequantize: fine-tune before "
                           "quantize_int8)")
        _, why = rebatch(graph, 2 * graph.inputs[0].shape[0]) if graph.inputs and graph.inputs[0].shape else (
            None, "its inputs have no batch axis")
        if why:
            raise MccError(f"cannot fine-tune graph '{graph.name}': training batches samples along axis 0, and {why}")
        self.graph = graph
        self.order = graph.topological_order()
        self.weight_transforms = dict(weight_transforms or {})
        self.params = torch.nn.ParameterList()
        self.param_names: list[str] = []
        self._slots: dict[int, tuple[str, int]] = {}  # id(constant tensor) -> ("param" | "buffer", index)
        buffers = 0
        for node in self.order:
            for k, t in enumerate(node.inputs):
                if t is None or not t.is_constant or id(t) in self._slots:
                    continue
                if weighted(node.op) and k in (1, 2) and t.dtype == "float32":
                    self._slots[id(t)] = ("param", len(self.params))
                    self.params.append(torch.nn.Parameter(torch.from_numpy(np.array(t.data, np.float32))))
                    self.param_names.append(t.name)
                else:
                    self._slots[id(t)] = ("buffer", buffers)
                    self.register_buffer(f"c{buffers}", torch.from_numpy(np.array(t.data)))
                    buffers += 1

    def weights(self) -> dict[str, torch.Tensor]:
        """Each trainable weight by tensor name, as the forward uses it (after its transform)."""
        return {name: self._transformed(name, p) for name, p in zip(self.param_names, self.params)}

    def _transformed(self, name: str, p: torch.Tensor) -> torch.Tensor:
        fn = self.weight_transforms.get(name)
        return p if fn is None else fn(p)

    def _value(self, t: Tensor | None, values: dict):
        if t is None:
            return None
        if not t.is_constant:
            return values[id(t)]
        kind, k = self._slots[id(t)]
        if kind == "buffer":
            return getattr(self, f"c{k}")
        return self._transformed(self.param_names[k], self.params[k])

    def forward(self, *inputs: torch.Tensor, taps: dict | None = None) -> list[torch.Tensor]:
        """The graph's outputs, in order, for inputs given in the order of graph.inputs (batch first, any batch).
        `taps` (tensor name -> None) gets the value of each named activation, its gradient retained (prune's Taylor
        criterion reads activation * gradient)."""
        values = {id(t): x for t, x in zip(self.graph.inputs, inputs)}
        for node in self.order:
            try:
                outs = TORCH_OPS[node.op](node, [self._value(t, values) for t in node.inputs])
            except RuntimeError as e:  # torch's shape or dtype complaint, named after the node
                raise MccError(f"{node.op} failed in torch: {e}", node=node.name) from None
            values.update((id(t), v) for t, v in zip(node.outputs, outs))
            for t, v in zip(node.outputs, outs):
                if taps is not None and t.name in taps and v.requires_grad:
                    v.retain_grad()
                    taps[t.name] = v
        return [self._value(t, values) for t in self.graph.outputs]

    def write_back(self, graph: Graph) -> int:
        """Put the trained weights into `graph`'s constants of the same names (float32, replaced, never mutated:
        graph copies share constant arrays); returns how many were written."""
        by_name = {t.name: t for t in graph.constants()}
        missing = [n for n in self.param_names if n not in by_name]
        if missing:
            raise MccError(f"graph '{graph.name}' has no constant(s) {missing[:5]} to write trained weights into: "
                           "write back into the graph the module was built from")
        with torch.no_grad():
            for name, w in self.weights().items():
                by_name[name].data = np.ascontiguousarray(w.detach().cpu().numpy(), dtype=np.float32)
        return len(self.param_names)


# ---- the ops, each fn(node, inputs) -> list of outputs ------------------------------------------------------------
def _act(y, activation):
    if activation is None:
        return y
    lo, hi = CLAMPS[activation]
    return torch.clamp(y, lo, hi)


def _nhwc(node: Node) -> bool:
    return node.inputs[0].layout == "NHWC"


def _spatial(node: Node, x, fn):
    """fn on x in NCHW, moved from and back to the node's layout."""
    if not _nhwc(node):
        return fn(x)
    return fn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _padded(x, padding, value=0.0):
    t, l, b, r = padding
    return F.pad(x, (l, r, t, b), value=value) if any(padding) else x


def _conv2d(node, inputs):
    x, w, b = (inputs + [None])[:3]
    a = node.attrs
    if _nhwc(node):
        w = w.permute(0, 3, 1, 2) if node.op == "conv2d" else w.permute(3, 0, 1, 2)
    groups = a.get("groups", 1) if node.op == "conv2d" else w.shape[0] // a["multiplier"]
    y = _spatial(node, x, lambda v: F.conv2d(_padded(v, a["padding"]), w, b, a["stride"], 0, a["dilation"], groups))
    return [_act(y, a["activation"])]


def _transpose_conv2d(node, inputs):
    x, w, b = (inputs + [None])[:3]
    a = node.attrs
    if _nhwc(node):
        w = w.permute(3, 0, 1, 2)  # [C_out/groups, kh, kw, C_in] -> [C_in, C_out/groups, kh, kw]
    t, l, bottom, r = a["padding"]
    oph, opw = a["output_padding"]

    def full(v):  # the uncropped output, extended by the output padding, then cropped
        y = F.pad(F.conv_transpose2d(v, w, None, a["stride"], 0, 0, a["groups"], a["dilation"]), (0, opw, 0, oph))
        y = y[:, :, t:y.shape[2] - bottom, l:y.shape[3] - r]
        return y if b is None else y + b[None, :, None, None]
    return [_act(_spatial(node, x, full), a["activation"])]


def _fully_connected(node, inputs):
    x, w, b = (inputs + [None])[:3]
    return [_act(F.linear(x, w, b), node.attrs["activation"])]


def _binary(fn):
    return lambda node, inputs: [_act(fn(*inputs), node.attrs.get("activation"))]


def _unary(fn):
    return lambda node, inputs: [fn(inputs[0])]


def _pool(node, inputs):
    x, a = inputs[0], node.attrs
    k, s = a["kernel"], a["stride"]

    def pool(v):
        if node.op == "max_pool2d":  # padded positions never win
            return F.max_pool2d(_padded(v, a["padding"], float("-inf")), k, s)
        total = F.avg_pool2d(_padded(v, a["padding"]), k, s, divisor_override=1)
        if a["count_include_pad"]:
            return total / (k[0] * k[1])
        ones = torch.ones((1, 1) + tuple(v.shape[2:]), dtype=v.dtype)
        return total / F.avg_pool2d(_padded(ones, a["padding"]), k, s, divisor_override=1).clamp_min(1)
    return [_act(_spatial(node, x, pool), a["activation"])]


def _reduce(fn):
    def run(node, inputs):
        x = inputs[0]
        axes = sorted(a % x.dim() for a in node.attrs["axes"])
        return [fn(x, dim=axes, keepdim=node.attrs["keepdims"])]
    return run


def _batch_norm(node, inputs):
    x, mean, var, w, b = inputs
    axis = 3 if _nhwc(node) else 1
    shape = [1] * x.dim()
    shape[axis] = -1
    scale = w / torch.sqrt(var + node.attrs["eps"])
    return [(x - mean.reshape(shape)) * scale.reshape(shape) + b.reshape(shape)]


def _reshape(node, inputs):
    x, shape = inputs[0], list(node.attrs["shape"])
    if shape[0] != -1:  # the IR's leading size is the model's batch (rebatch checked it): follow the batch given
        shape[0] = x.shape[0]
    return [x.reshape(shape)]


def _indices(index: list[int] | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(index, np.int64))


def _pad(node, inputs):
    x, a = inputs[0], node.attrs
    pads, mode = a["pads"], a["mode"]
    if mode == "constant":
        flat = [p for i in reversed(range(x.dim())) for p in (pads[2 * i], pads[2 * i + 1])]
        return [F.pad(x, flat, value=a["value"])]
    for axis in range(x.dim()):  # reflect / edge: numpy's padding of the positions, then a gather
        before, after = pads[2 * axis], pads[2 * axis + 1]
        if before or after:
            where = np.pad(np.arange(x.shape[axis]), (before, after), mode="reflect" if mode == "reflect" else "edge")
            x = x.index_select(axis, _indices(where))
    return [x]


def _slice(node, inputs):
    x, a = inputs[0], node.attrs
    for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
        x = x.index_select(axis, _indices(list(range(start, end, step))))
    return [x]


def _resize(node, inputs):
    x, a = inputs[0], node.attrs
    mode, coords = a["mode"], a["coordinate_transformation_mode"]

    def along(v, axis, out_size):
        n = v.shape[axis]
        c = source_coordinates(out_size, n, coords)
        if mode == "nearest":
            return v.index_select(axis, _indices(nearest_indices(c, n, a["nearest_mode"])))
        c = np.clip(c, 0, n - 1)  # the IR's bilinear: clamp, then blend the two neighbours
        lower = c.astype(np.int64)
        upper = np.minimum(lower + 1, n - 1)
        shape = [1] * v.dim()
        shape[axis] = -1
        frac = torch.as_tensor((c - lower).astype(np.float32)).reshape(shape)
        lo, hi = v.index_select(axis, _indices(lower)), v.index_select(axis, _indices(upper))
        return lo + (hi - lo) * frac

    return [_spatial(node, x, lambda v: along(along(v, 2, a["size"][0]), 3, a["size"][1]))]


def _lrn(node, inputs):
    x, a = inputs[0], node.attrs
    size = a["size"]
    axis = 3 if _nhwc(node) else 1
    squares = torch.movedim(x * x, axis, -1)
    padded = F.pad(squares, (size // 2, size // 2))
    c = x.shape[axis]
    window = sum(padded[..., k:k + c] for k in range(size))
    scale = torch.movedim(a["bias"] + (a["alpha"] / size) * window, -1, axis)
    return [x * scale ** -a["beta"]]


def _gather(node, inputs):
    x, idx = inputs
    axis = node.attrs["axis"] % x.dim()
    idx = idx.to(torch.int64)
    picked = x.index_select(axis, idx.reshape(-1))
    return [picked.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))]


def _depth_to_space(node, inputs):
    b, mode = node.attrs["block_size"], node.attrs["mode"]

    def d2s(x):
        n, c, h, w = x.shape
        split = (n, b, b, c // (b * b), h, w) if mode == "DCR" else (n, c // (b * b), b, b, h, w)
        perm = (0, 3, 4, 1, 5, 2) if mode == "DCR" else (0, 1, 4, 2, 5, 3)
        return x.reshape(split).permute(perm).reshape(n, c // (b * b), h * b, w * b)
    return [_spatial(node, inputs[0], d2s)]


def _space_to_depth(node, inputs):
    b = node.attrs["block_size"]

    def s2d(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)
    return [_spatial(node, inputs[0], s2d)]


def _softmax(node, inputs):
    return [torch.softmax(inputs[0] * node.attrs["beta"], dim=node.attrs["axis"])]


TORCH_OPS: dict[str, Callable] = {
    "conv2d": _conv2d, "depthwise_conv2d": _conv2d, "transpose_conv2d": _transpose_conv2d,
    "fully_connected": _fully_connected,
    "add": _binary(torch.add), "sub": _binary(torch.sub), "mul": _binary(torch.mul), "div": _binary(torch.div),
    "minimum": _binary(torch.minimum), "maximum": _binary(torch.maximum), "pow": _binary(torch.pow),
    "batch_matmul": _binary(torch.matmul),
    "relu": _unary(torch.relu), "relu6": _unary(lambda x: torch.clamp(x, 0, 6)), "sigmoid": _unary(torch.sigmoid),
    "tanh": _unary(torch.tanh), "hardswish": _unary(lambda x: x * torch.clamp(x + 3, 0, 6) / 6),
    "hardsigmoid": _unary(lambda x: torch.clamp(x + 3, 0, 6) / 6), "silu": _unary(lambda x: x * torch.sigmoid(x)),
    "identity": _unary(lambda x: x),
    "neg": _unary(torch.neg), "abs": _unary(torch.abs), "sqrt": _unary(torch.sqrt), "rsqrt": _unary(torch.rsqrt),
    "square": _unary(lambda x: x * x), "exp": _unary(torch.exp), "log": _unary(torch.log), "erf": _unary(torch.erf),
    "gelu": lambda node, inputs: [F.gelu(inputs[0], approximate=node.attrs["approximate"])],
    "leaky_relu": lambda node, inputs: [torch.where(inputs[0] >= 0, inputs[0], inputs[0] * node.attrs["alpha"])],
    "prelu": lambda node, inputs: [torch.where(inputs[0] >= 0, inputs[0], inputs[0] * inputs[1])],
    "clip": lambda node, inputs: [torch.clamp(inputs[0], node.attrs["min"], node.attrs["max"])],
    "softmax": _softmax, "batch_norm": _batch_norm,
    "max_pool2d": _pool, "avg_pool2d": _pool,
    "mean": _reduce(torch.mean), "sum": _reduce(torch.sum), "reduce_max": _reduce(torch.amax),
    "reduce_min": _reduce(torch.amin), "lrn": _lrn,
    "concat": lambda node, inputs: [torch.cat(inputs, dim=node.attrs["axis"])],
    "reshape": _reshape, "transpose": lambda node, inputs: [inputs[0].permute(node.attrs["perm"])],
    "pad": _pad, "slice": _slice, "resize": _resize,
    "split": lambda node, inputs: list(torch.split(inputs[0], node.attrs["sizes"], dim=node.attrs["axis"])),
    "gather": _gather, "tile": lambda node, inputs: [inputs[0].repeat(node.attrs["multiples"])],
    "depth_to_space": _depth_to_space, "space_to_depth": _space_to_depth,
    # binary activations (issue 18): trained through the straight-through step
    "binary_activation": lambda node, inputs: [ste_step(inputs[0], node.attrs["magnitude"])],
}
