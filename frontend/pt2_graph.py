"""The FX graph of a static .pt2 program built straight from the archive's JSON, as torch's GraphModuleDeserializer
builds it (the same create_node calls in the same order, so the same node names, targets, args, kwargs and users),
but carrying only what mcc's lowering reads: each node's "val", "nn_module_stack" and "stack_trace". A "val" is a
meta tensor of the value's sizes, strides and dtype where torch's is a FakeTensor of them on the value's device: the
lowering reads only sizes, strides and dtype, and a FakeTensor costs 15 us more a value (475 in a MobileNetV2).

Why: reading a MobileNetV2's program through torch's schema dataclasses (17 ms of CPU) and its graph deserializer
(40 ms) took 57 ms of a 130 ms load, most of it on what the lowering never reads (a dataclass per argument, union
tags, every metadata key, unbacked-symbol bindings of static shapes); this reader takes 9 ms. It covers aten operators with plain arguments
and tensor outputs; anything else (symbolic values, other namespaces, higher-order ops, an argument kind it does not
know, a malformed entry) raises Unsupported, and the caller leaves the archive to torch's whole deserializer.
"""

from __future__ import annotations

import functools
import keyword
import operator
from collections import OrderedDict

import torch
from torch._export.serde import serialize

_ATEN = "torch.ops.aten."
_POSITIONAL, _KEYWORD = 1, 2  # torch._export.serde.schema.ArgumentKind


class Unsupported(Exception):
    """Something this reader does not cover; torch's deserializer decides."""


def read_graph(data: dict) -> torch.fx.Graph:
    """The FX graph of a serialized Graph (the JSON of models/model.json's graph_module.graph)."""
    return _Reader(data["tensor_values"]).graph_of(data)


class _Reader:
    def __init__(self, tensor_values: dict):
        self.graph = torch.fx.Graph()
        self.nodes: dict[str, torch.fx.Node] = {}  # serialized value name -> the FX node that makes it
        self.tensor_values, self.vals = tensor_values, {}

    def graph_of(self, data: dict) -> torch.fx.Graph:
        for arg in data["inputs"]:
            name = _only(arg, "as_tensor")["name"]
            node = self.graph.placeholder(name)
            self.sync(name, node)
        for node in data["nodes"]:
            self.call(node)
        outputs = [self.output(arg) for arg in data["outputs"]]
        if data["is_single_tensor_return"]:
            if len(outputs) != 1 or not isinstance(outputs[0], torch.fx.Node):
                raise Unsupported("a single tensor return that is not one tensor")
            self.graph.output(outputs[0]).meta["val"] = outputs[0].meta["val"]
        else:
            self.graph.output(tuple(outputs)).meta["val"] = tuple(
                v.meta["val"] if isinstance(v, torch.fx.Node) else v for v in outputs)
        return self.graph

    def val(self, name: str) -> torch.Tensor:
        """The meta tensor standing for value `name` (torch's deserializer dispatches empty_strided through a
        FakeTensorMode for a FakeTensor, 70 us a value; this takes 3)."""
        val = self.vals.get(name)
        if val is None:
            tm = self.tensor_values[name]
            sizes, strides = ([_int(_only(v, "as_int")) for v in tm[k]] for k in ("sizes", "strides"))
            dtype = serialize._SERIALIZE_TO_TORCH_DTYPE[tm["dtype"]]
            val = self.vals[name] = torch.empty_strided(sizes, strides, device="meta", dtype=dtype,
                                                        requires_grad=tm["requires_grad"])
        return val

    def sync(self, name: str, node: torch.fx.Node) -> None:
        """Name `node` after the value it makes and give it that value's "val", as torch's sync_fx_node."""
        if name in self.nodes:
            raise Unsupported(f"value {name} made twice")
        node.name = name
        self.nodes[name] = node
        node.meta["val"] = self.val(name)

    def call(self, data: dict) -> None:
        target = _operator(data["target"])
        schema = target._schema
        outputs, meta = data["outputs"], _metadata(data["metadata"])
        name = data.get("name") or (_only(outputs[0], "as_tensor")["name"] if len(schema.returns) == 1 and isinstance(
            schema.returns[0].real_type, torch.TensorType) else None)
        args, kwargs = self.inputs(schema, data["inputs"])
        node = self.graph.create_node("call_function", target, args, kwargs, name)
        if len(outputs) == 1 and "as_tensor" in outputs[0]:
            self.sync(_only(outputs[0], "as_tensor")["name"], node)
        elif len(outputs) == 1 and "as_none" in outputs[0]:
            node.meta["val"] = None
            node._rename(f"{self.graph._target_to_str(target)}_unused")
        elif outputs:
            items = _only(outputs[0], "as_tensors") if len(outputs) == 1 else outputs
            if not items:
                raise Unsupported("no outputs listed")
            self.getitems(node, items, meta)
        node.meta.update(meta)
        node.meta.setdefault("nn_module_stack", {})

    def inputs(self, schema, named: list) -> tuple[tuple, dict]:
        """(args, kwargs) as torch's deserialize_inputs splits them: by each argument's recorded kind, in the
        schema's order; arguments the node leaves out keep their defaults."""
        given = {a["name"]: (self.arg(a["arg"]), a.get("kind")) for a in named}
        args, kwargs = [], OrderedDict()
        for arg in schema.arguments:
            if arg.name not in given:
                if (not arg.has_default_value() and not arg.kwarg_only) or keyword.iskeyword(arg.name):
                    raise Unsupported(f"argument {arg.name} missing")
                continue
            value, kind = given[arg.name]
            if kind == _POSITIONAL:
                args.append(value)
            elif kind == _KEYWORD and not keyword.iskeyword(arg.name):
                kwargs[arg.name] = value
            else:
                raise Unsupported(f"argument kind {kind} of {arg.name}")
        return tuple(args), kwargs

    def arg(self, data: dict):
        """An argument's value, as torch's deserialize_input gives it, for the kinds plain aten calls use."""
        if not isinstance(data, dict) or len(data) != 1:
            raise Unsupported(f"argument {str(data)[:80]}")
        (kind, value), = data.items()
        if kind == "as_tensor":
            return self.nodes[value["name"]]
        if kind == "as_tensors":
            return [self.nodes[v["name"]] for v in value]
        if kind == "as_optional_tensors":
            return [None if "as_none" in v else self.nodes[_only(v, "as_tensor")["name"]] for v in value]
        if kind in _SCALARS:
            return _SCALARS[kind](value)
        if kind in _LISTS:
            if not isinstance(value, list):
                raise Unsupported(f"{kind} {str(value)[:80]}")
            return [_LISTS[kind](v) for v in value]
        if kind in _ENUMS:
            return _ENUMS[kind][value]
        if kind == "as_device":
            return torch.device(value["type"], value["index"]) if value["index"] is not None else torch.device(
                value["type"])
        raise Unsupported(f"argument kind {kind}")

    def getitems(self, node: torch.fx.Node, outputs: list, meta: dict) -> None:
        """One getitem node per output of a multi-output op, named after its value, as torch's generate_getitems."""
        vals = []
        for i, out in enumerate(outputs):
            kind = next(iter(out)) if len(out) == 1 else None
            if "name" in out or kind == "as_tensor":
                name = (out if "name" in out else out["as_tensor"])["name"]
                item = self.graph.create_node("call_function", operator.getitem, (node, i), name=name)
                self.sync(name, item)
                vals.append(item.meta["val"])
            elif kind == "as_none":
                item = self.graph.create_node("call_function", operator.getitem, (node, i), name="as_none")
                item.meta["val"] = None
                vals.append(None)
            else:
                raise Unsupported(f"output {str(out)[:80]}")
            item.meta.update(meta)
        node.meta["val"] = tuple(vals)
        self.nodes[node.name] = node

    def output(self, data: dict):
        kind = next(iter(data)) if isinstance(data, dict) and len(data) == 1 else None
        if kind == "as_tensor":
            return self.nodes[data[kind]["name"]]
        if kind in _SCALARS:
            return _SCALARS[kind](data[kind])
        raise Unsupported(f"graph output {str(data)[:80]}")


def _operator(target: str):
    """The aten OpOverload a node calls (its name was checked against the operator namespaces before)."""
    if not target.startswith(_ATEN) or target.count(".") != 4:
        raise Unsupported(f"target {target}")
    packet, overload = target[len(_ATEN):].split(".")
    op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
    if not isinstance(op, torch._ops.OpOverload) or op in serialize._SYM_OPS or op in _SYMBOLIC:
        raise Unsupported(f"target {target}")
    return op


def _metadata(data: dict) -> dict:
    """The node metadata the lowering reads: "stack_trace", and "nn_module_stack" as torch deserializes it (entries
    "key,path,type" split at the commas outside brackets)."""
    meta = {}
    if stack_trace := data.get("stack_trace"):
        meta["stack_trace"] = stack_trace
    if stack := data.get("nn_module_stack"):
        entries = (_split(entry) for entry in stack.split(serialize.ST_DELIMITER))
        meta["nn_module_stack"] = {key: (path, kind) for key, path, kind in entries}
    return meta


@functools.lru_cache(maxsize=4096)
def _split(entry: str) -> tuple[str, str, str]:
    """torch's metadata_split: "key,path,type" at the commas outside brackets. Cached: a program repeats its
    containers' entries on every node inside them (a MobileNetV2's 886 entries are 221 distinct)."""
    if not any(c in entry for c in "[]()"):
        out = entry.split(",")
    else:
        out, start, depth = [], 0, 0
        for end, c in enumerate(entry):
            if c in "[(":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif c == "," and depth == 0:
                out.append(entry[start:end])
                start = end + 1
        out.append(entry[start:])
    if len(out) != 3:
        raise Unsupported(f"nn_module_stack entry {entry[:80]}")
    return tuple(out)


def _only(data: dict, kind: str):
    if not isinstance(data, dict) or len(data) != 1 or kind not in data:
        raise Unsupported(f"expected {kind}, got {str(data)[:80]}")
    return data[kind]


def _int(v):
    if type(v) is not int:
        raise Unsupported(f"not an int: {v!r}")
    return v


def _bool(v):
    if type(v) is not bool:
        raise Unsupported(f"not a bool: {v!r}")
    return v


def _str(v):
    if type(v) is not str:
        raise Unsupported(f"not a str: {v!r}")
    return v


def _float(v):
    if type(v) not in (int, float, str):
        raise Unsupported(f"not a float: {v!r}")
    return float(v)


_SCALARS = {"as_none": lambda v: None, "as_int": _int, "as_float": _float, "as_bool": _bool, "as_string": _str}
_LISTS = {"as_ints": _int, "as_floats": _float, "as_bools": _bool, "as_strings": _str}
_ENUMS = {"as_scalar_type": serialize._SERIALIZE_TO_TORCH_DTYPE,
          "as_memory_format": serialize._SERIALIZE_TO_TORCH_MEMORY_FORMAT,
          "as_layout": serialize._SERIALIZE_TO_TORCH_LAYOUT}
_SYMBOLIC = (torch.ops.aten.item.default, torch.ops.aten._assert_scalar.default,
             torch.ops.aten.sym_constrain_range_for_size.default)
