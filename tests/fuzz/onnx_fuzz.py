"""ONNX models: small valid ModelProtos built with onnx.helper (opset 18), mutated field by field.

Seeds: Conv + Relu + Add (its weights as external data in weights.bin, next to the model), Flatten + Gemm with a
Constant node, Resize + Concat + Reshape, and a model-local function. A mutation changes a node's op_type, domain,
inputs or outputs (names that nothing produces, duplicates, cycles, non-UTF-8 bytes), an attribute's type or
value (or removes or adds one), an initializer's dims, data_type (UNDEFINED, unknown numbers), data fields and
their lengths or external-data entries (locations, offsets, lengths), a value_info or graph input/output type and
shape, the graph inputs and outputs themselves (removed, duplicated), the opset imports and IR version, the node
list, or the function; some inputs also get raw byte flips of the serialized file. Strings the protobuf API will
not hold (invalid UTF-8) are written as placeholders and replaced in the serialized bytes. Target:
mcc.frontend.load, which sniffs the format and calls onnx_loader.load_onnx.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mcc.frontend import load

from .runner import Reader, flip_bytes, interesting_int

OPSET = 18
WEIGHTS = "weights.bin"
OPS = ["Conv", "Relu", "Add", "Gemm", "MatMul", "Resize", "Concat", "Reshape", "Flatten", "MaxPool", "AveragePool",
       "GlobalAveragePool", "BatchNormalization", "Softmax", "Transpose", "Slice", "Split", "Pad", "Mul", "Sub", "Div",
       "Sigmoid", "Clip", "ReduceMean", "Squeeze", "Unsqueeze", "Gather", "Shape", "Constant", "Identity", "Cast",
       "ConstantOfShape", "Expand", "Where", "QuantizeLinear", "QLinearConv", "If", "Loop", "Foo", "", "conv",
       "HardSwish", "LeakyRelu", "PRelu", "Upsample", "ConvTranspose", "Einsum", "TopK", "Range", "NonZero"]
DOMAINS = ["", "ai.onnx", "com.microsoft", "local", "ai.onnx.ml", "custom.domain"]
ATTR_NAMES = ["pads", "kernel_shape", "strides", "dilations", "group", "axis", "axes", "mode", "transA", "transB",
              "alpha", "beta", "perm", "keepdims", "value", "to", "coordinate_transformation_mode", "nearest_mode",
              "auto_pad", "split", "allowzero", "epsilon", "body", "then_branch", "min", "max"]
ELEM_TYPES = [0, 1, 1, 1, 2, 3, 5, 6, 7, 9, 10, 11, 16, 17, 19, 21, 23, 24, 25, 99, 1000, -1, 2**31 - 1]
STRINGS = ["", "x", "y", "W", "missing", "c", "x;y", "a" * 300, "\u00e9", "0", " ", "/", "../x"]


# ---- seeds ----------------------------------------------------------------------------------------------
def _f(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _model(nodes, inputs, outputs, initializers, functions=(), opset_extra=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), *opset_extra], functions=list(functions))
    m.ir_version = 8
    return m


def build():
    rng = np.random.default_rng(0)
    vi = helper.make_tensor_value_info
    F = TensorProto.FLOAT
    seeds = []

    w = numpy_helper.from_array(_f(rng, 3, 2, 3, 3), "W")
    external = bytes(w.raw_data)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", WEIGHTS), ("offset", "0"), ("length", str(len(external)))):
        w.external_data.add(key=k, value=v)
    m = _model([helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1],
                                 kernel_shape=[3, 3]),
                helper.make_node("Relu", ["c"], ["r"], name="relu"),
                helper.make_node("Add", ["r", "c"], ["y"], name="add")],
               [vi("x", F, ["N", 2, 4, 4])], [vi("y", F, [1, 3, 4, 4])],
               [w, numpy_helper.from_array(_f(rng, 3), "B")])
    m.graph.value_info.extend([vi("c", F, [1, 3, 4, 4]), vi("r", F, [1, 3, 4, 4])])
    seeds.append(m)

    m = _model([helper.make_node("Flatten", ["x"], ["f"], axis=1),
                helper.make_node("Constant", [], ["K"], value=numpy_helper.from_array(_f(rng, 3), "K")),
                helper.make_node("Gemm", ["f", "W", "K"], ["y"], transB=1, alpha=1.0)],
               [vi("x", F, [1, 2, 2])], [vi("y", F, [1, 3])], [numpy_helper.from_array(_f(rng, 3, 4), "W")])
    seeds.append(m)

    m = _model([helper.make_node("Resize", ["x", "", "S"], ["r"], mode="nearest",
                                 coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                helper.make_node("Concat", ["r", "r"], ["c"], axis=1),
                helper.make_node("Reshape", ["c", "shape"], ["y"])],
               [vi("x", F, [1, 2, 2, 2])], [vi("y", F, [1, 64])],
               [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "S"),
                numpy_helper.from_array(np.array([1, -1], np.int64), "shape")])
    seeds.append(m)

    fn = helper.make_function("local", "Block", ["a"], ["b"],
                              [helper.make_node("Relu", ["a"], ["t"]), helper.make_node("Sigmoid", ["t"], ["b"])],
                              [helper.make_opsetid("", OPSET)])
    m = _model([helper.make_node("Block", ["x"], ["h"], domain="local"),
                helper.make_node("Mul", ["h", "x"], ["y"])],
               [vi("x", F, [1, 4])], [vi("y", F, [1, 4])], [], functions=[fn],
               opset_extra=[helper.make_opsetid("local", 1)])
    seeds.append(m)
    return {"models": [m.SerializeToString() for m in seeds], "weights": external}


def prepare(folder: Path, seeds) -> None:
    """The external data file the first seed's Conv weights live in, next to the model the worker writes."""
    (folder / WEIGHTS).write_bytes(seeds["weights"])


# ---- mutations ------------------------------------------------------------------------------------------
class _Bad:
    """Placeholders for strings the protobuf API refuses (invalid UTF-8), swapped in after serializing."""

    def __init__(self, rng: random.Random):
        self.rng, self.marks = rng, []

    def __call__(self) -> str:
        mark = f"\x01BAD{len(self.marks)}\x01"
        self.marks.append(mark)
        return mark

    def apply(self, data: bytes) -> bytes:
        for mark in self.marks:
            m = mark.encode()
            bad = self.rng.choice([b"\xff" * len(m), (b"\xc3\x28" * len(m))[:len(m)],
                                   (b"ab\xed\xa0\x80" * len(m))[:len(m)], b"\x80" + m[1:]])
            data = data.replace(m, bad)
        return data


def _name(rng: random.Random, bad: _Bad, names: list[str]) -> str:
    r = rng.random()
    if r < 0.1:
        return bad()
    if r < 0.6 and names:
        return rng.choice(names)
    return rng.choice(STRINGS)


def _all_names(g: onnx.GraphProto) -> list[str]:
    names = [v.name for v in g.input] + [t.name for t in g.initializer]
    return names + [o for n in g.node for o in n.output]


def _attr(rng: random.Random, bad: _Bad, name: str) -> onnx.AttributeProto:
    kind = rng.randrange(8)
    if kind == 0:
        return helper.make_attribute(name, interesting_int(rng, -(1 << 63), (1 << 63) - 1))
    if kind == 1:
        return helper.make_attribute(name, rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf"), 0.5]))
    if kind == 2:
        return helper.make_attribute(name, [rng.choice([0, 1, 2, 3, -1, -2, 1 << 40])
                                            for _ in range(rng.randrange(0, 9))])
    if kind == 3:
        return helper.make_attribute(name, rng.choice(["nearest", "linear", "cubic", "SAME_UPPER", "NOTSET", "VALID",
                                                       "half_pixel", "floor", "", "x" * 100]))
    if kind == 4:
        return helper.make_attribute(name, [0.5, float("nan")][:rng.randrange(0, 3)] or [1.0])
    if kind == 5:
        return helper.make_attribute(name, numpy_helper.from_array(
            np.zeros(rng.choice([(0,), (2,), (1, 3)]), rng.choice([np.float32, np.int64, np.int8])), name))
    if kind == 6:   # a subgraph
        sub = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "sub", [],
                                [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
        return helper.make_attribute(name, sub)
    a = onnx.AttributeProto()
    a.name = name if rng.random() < 0.8 else bad()
    a.type = rng.choice([0, 13, 14, 99, 3])   # UNDEFINED, sparse tensor(s), unknown, string without a value
    return a


def _mutate_attribute(n: onnx.NodeProto, rng: random.Random, bad: _Bad) -> None:
    choice = rng.randrange(5)
    if choice == 0 and n.attribute:
        n.attribute[rng.randrange(len(n.attribute))].type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 99])
    elif choice == 1 and n.attribute:
        del n.attribute[rng.randrange(len(n.attribute))]
    elif choice == 2 and n.attribute:
        k = rng.randrange(len(n.attribute))
        name = n.attribute[k].name
        n.attribute[k].CopyFrom(_attr(rng, bad, name))
        if rng.random() < 0.1:
            n.attribute[k].name = ""
    elif choice == 3:
        n.attribute.append(_attr(rng, bad, rng.choice(ATTR_NAMES)))
    elif n.attribute:
        a = rng.choice(n.attribute)
        if a.ints:
            a.ints[rng.randrange(len(a.ints))] = interesting_int(rng, -(1 << 63), (1 << 63) - 1)
        elif a.type == onnx.AttributeProto.INT:
            a.i = rng.choice([0, -1, 2, 3, 1 << 31, -(1 << 63)])
        elif a.type == onnx.AttributeProto.TENSOR:
            a.t.dims.append(rng.choice([0, 2, -1]))
        elif a.type == onnx.AttributeProto.STRING:
            a.s = rng.choice([b"", b"\xff\xfe", b"cubic", b"x" * 64])


def _mutate_tensor(t: onnx.TensorProto, rng: random.Random, bad: _Bad) -> None:
    choice = rng.randrange(9)
    if choice == 0:
        if t.dims and rng.random() < 0.6:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, -1, 2, 7, 1 << 20, 1 << 40, -(1 << 63)])
        elif t.dims and rng.random() < 0.5:
            del t.dims[rng.randrange(len(t.dims))]
        else:
            t.dims.append(rng.choice([0, 1, 2, 5]))
    elif choice == 1:
        t.data_type = rng.choice(ELEM_TYPES)
    elif choice == 2:
        raw = t.raw_data
        t.raw_data = rng.choice([raw[:rng.randrange(len(raw) + 1)] if raw else b"", raw + rng.randbytes(4), b"",
                                 rng.randbytes(3)])
    elif choice == 3:   # the values moved to a typed field, with a count that may not match
        n = rng.choice([0, 1, 3, 4, 54])
        t.ClearField("raw_data")
        field = rng.choice(["float_data", "int64_data", "int32_data", "double_data", "string_data"])
        if field == "string_data":
            t.string_data.extend([b"a"] * n)
        else:
            getattr(t, field).extend([1] * n)
    elif choice == 4:   # external data
        t.data_location = rng.choice([TensorProto.EXTERNAL, TensorProto.EXTERNAL, TensorProto.DEFAULT])
        if rng.random() < 0.7:
            del t.external_data[:]
            keys = ["location", "offset", "length", "checksum", "basepath", "bogus"]
            for key in rng.sample(keys, rng.randrange(1, 5)):
                if key == "location":
                    value = rng.choice([WEIGHTS, WEIGHTS, "missing.bin", "../" + WEIGHTS, "/etc/hostname", "", ".", "/",
                                        "weights.bin\x00x", "a" * 300, "input.onnx", bad()])
                elif key == "offset":
                    value = rng.choice(["0", "4", "-4", "1000000", "x", "", str(1 << 63)])
                elif key == "length":
                    value = rng.choice(["0", "216", "4", "-1", "1000000", "y", str(1 << 64)])
                else:
                    value = rng.choice(["", "1", bad()])
                t.external_data.add(key=key, value=value)
        if rng.random() < 0.5:
            t.ClearField("raw_data")
    elif choice == 5:
        t.name = _name(rng, bad, [])
    elif choice == 6:
        t.segment.begin, t.segment.end = rng.randrange(-2, 5), rng.randrange(-2, 5)
    elif choice == 7:
        t.data_type = TensorProto.STRING if rng.random() < 0.3 else t.data_type
        _mutate_values(t, rng)
    else:
        t.raw_data = t.raw_data * 2


def _mutate_values(t: onnx.TensorProto, rng: random.Random) -> None:
    """The same dims and type, other values: shapes, scales, pads and axes that are zero, negative, huge or NaN."""
    try:
        values = numpy_helper.to_array(t).copy()
    except Exception:   # noqa: BLE001 -- a tensor an earlier mutation broke: leave it
        return
    if not values.size or values.dtype.kind not in "fiu":
        return
    flat = values.reshape(-1)
    pool = [0, -1, 1, 2, -2] + ([1e9, -1e9, float("nan"), float("inf"), 1e-30] if flat.dtype.kind == "f" else
                                 [int(np.iinfo(flat.dtype).max), int(np.iinfo(flat.dtype).min)])
    for _ in range(rng.randrange(1, flat.size + 1)):
        flat[rng.randrange(flat.size)] = rng.choice(pool)
    new = numpy_helper.from_array(values, t.name)
    for field in ("float_data", "int64_data", "int32_data", "double_data"):
        t.ClearField(field)
    t.raw_data = new.raw_data


def _mutate_value_info(v: onnx.ValueInfoProto, rng: random.Random, bad: _Bad) -> None:
    tt = v.type.tensor_type
    choice = rng.randrange(6)
    if choice == 0:
        tt.elem_type = rng.choice(ELEM_TYPES)
    elif choice == 1 and tt.shape.dim:
        d = tt.shape.dim[rng.randrange(len(tt.shape.dim))]
        if rng.random() < 0.6:
            d.dim_value = rng.choice([0, -1, 1, 2, 3, 1 << 31, 1 << 62, -(1 << 63)])
        else:
            d.dim_param = rng.choice(["N", "", "batch", bad()])
    elif choice == 2:
        if tt.shape.dim and rng.random() < 0.5:
            del tt.shape.dim[rng.randrange(len(tt.shape.dim))]
        else:
            tt.shape.dim.add().dim_value = rng.choice([1, 2, 0])
    elif choice == 3:
        tt.ClearField("shape")
    elif choice == 4:
        if rng.random() < 0.5:
            v.type.ClearField("tensor_type")
        else:
            v.type.sequence_type.elem_type.tensor_type.SetInParent()
    else:
        v.name = _name(rng, bad, [])



def _drop_or_repeat(rng, field, k: int) -> bool:
    """k 0: delete a random element of the repeated protobuf `field`; k 1: append a copy of one; else nothing
    (False), so the caller applies its own edit."""
    if k == 0:
        del field[rng.randrange(len(field))]
    elif k == 1:
        field.append(rng.choice(field))
    return k in (0, 1)


def _mutate(m: onnx.ModelProto, rng: random.Random, bad: _Bad) -> None:
    g = m.graph
    names = _all_names(g)
    n = rng.choice(g.node) if g.node else None
    choice = rng.randrange(24)
    if choice <= 1 and n is not None:
        n.op_type = bad() if rng.random() < 0.1 else rng.choice(OPS)
    elif choice == 2 and n is not None:
        n.domain = bad() if rng.random() < 0.1 else rng.choice(DOMAINS)
    elif choice <= 4 and n is not None:
        k = rng.randrange(5)
        if k == 0 and n.input:
            n.input[rng.randrange(len(n.input))] = _name(rng, bad, names)
        elif k == 1:
            n.input.append(_name(rng, bad, names))
        elif k == 2 and n.input:
            del n.input[rng.randrange(len(n.input))]
        elif k == 3 and n.output:
            n.output[rng.randrange(len(n.output))] = _name(rng, bad, names)
        else:
            n.output.append(_name(rng, bad, names)) if rng.random() < 0.5 else n.ClearField("output")
    elif choice <= 7 and n is not None:
        _mutate_attribute(n, rng, bad)
    elif choice <= 10:
        tensors = list(g.initializer) + [a.t for nd in g.node for a in nd.attribute
                                         if a.type == onnx.AttributeProto.TENSOR]
        if tensors:
            _mutate_tensor(rng.choice(tensors), rng, bad)
    elif choice == 11 and g.initializer:
        k = rng.randrange(3)
        if not _drop_or_repeat(rng, g.initializer, k):
            g.initializer[rng.randrange(len(g.initializer))].name = rng.choice([v.name for v in g.input] or ["x"])
    elif choice <= 13:
        infos = list(g.value_info) + list(g.input) + list(g.output)
        if infos:
            _mutate_value_info(rng.choice(infos), rng, bad)
    elif choice == 14:
        which = rng.choice([g.input, g.output])
        k = rng.randrange(4)
        if k == 0 and which:
            del which[rng.randrange(len(which))]
        elif k == 1 and which:
            which.append(rng.choice(which))
        elif k == 2:
            which.add().CopyFrom(helper.make_tensor_value_info(_name(rng, bad, names), rng.choice(ELEM_TYPES[:8]),
                                                              [1, rng.choice([1, 4, 0])]))
        else:
            del which[:]
    elif choice == 15:
        k = rng.randrange(4)
        if k == 0 and m.opset_import:
            m.opset_import[rng.randrange(len(m.opset_import))].version = rng.choice(
                [0, 1, 12, 13, 17, 18, 21, 22, 99, -1, (1 << 63) - 1])
        elif k == 1 and m.opset_import:
            m.opset_import[rng.randrange(len(m.opset_import))].domain = rng.choice(DOMAINS + [bad()])
        elif k == 2:
            m.opset_import.add(domain=rng.choice(DOMAINS), version=rng.choice([1, 13, 18]))
        else:
            del m.opset_import[:]
    elif choice == 16:
        m.ir_version = rng.choice([0, 1, 3, 7, 8, 10, 11, 99, -1])
    elif choice == 17 and g.node:
        k = rng.randrange(4)
        if not _drop_or_repeat(rng, g.node, k):
            nodes = list(g.node)
            rng.shuffle(nodes) if k == 2 else nodes.reverse()
            del g.node[:]
            g.node.extend(nodes)
    elif choice == 18 and n is not None:
        n.name = _name(rng, bad, names)
    elif choice == 19:   # the function: calls itself, reads what it does not have, or goes away
        if m.functions:
            f = m.functions[0]
            k = rng.randrange(4)
            if k == 0:
                f.node.append(helper.make_node(f.name, ["b"], ["b2"], domain=f.domain))
            elif k == 1 and f.node:
                f.node[0].input[0] = rng.choice(["zz", "", "b"])
            elif k == 2:
                del f.output[:]
            else:
                del m.functions[:]
        elif n is not None:
            n.op_type, n.domain = "Block", "local"
    elif choice == 20:
        g.node.add().CopyFrom(helper.make_node("Constant", [], [_name(rng, bad, ["K2", "x"])],
                                               value=numpy_helper.from_array(np.ones(rng.choice([(), (2,), (0,)]),
                                                                                     np.float32))))
    elif choice == 21 and n is not None:   # a node reads its own output, or a later node's
        n.input.append(rng.choice(list(n.output) or ["x"]))
    elif choice == 22:
        g.name = bad() if rng.random() < 0.5 else ""
    else:
        g.sparse_initializer.add().values.CopyFrom(numpy_helper.from_array(np.ones(2, np.float32), "sp"))


def generate(seeds, rng: random.Random) -> bytes:
    m = onnx.ModelProto()
    m.ParseFromString(rng.choice(seeds["models"]))
    bad = _Bad(rng)
    if rng.random() < 0.9:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            try:
                _mutate(m, rng, bad)
            except (ValueError, TypeError):   # a value the protobuf API refuses (a closed enum): no mutation
                pass
    data = bad.apply(m.SerializeToString())
    if rng.random() < 0.12:
        data = flip_bytes(data, rng, keep=3 if rng.random() < 0.9 else 0)
    elif rng.random() < 0.02:
        data = data[:rng.randrange(3, len(data))]
    return data


READER = Reader("onnx", ".onnx", build, generate, (("load", lambda data, path: load(path)),), prepare)
