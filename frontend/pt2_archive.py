"""Read a torch.export archive (.pt2) into an ExportedProgram without running anything from the file.

`torch.export.load` is not safe on an untrusted file, and says so: it unpickles the sample inputs (falling back
to the full unpickler when the safe one refuses), weights and constants whose config says `use_pickle`, custom and
opaque objects, and legacy `.pt` weight files; it hands every symbolic-shape expression to `sympy.sympify`, which
evaluates Python; and the graph's call targets are looked up by dotted name anywhere under `torch`. A model file
must run no code unless the user trusts it, so without `trust_pickle` mcc reads the archive itself:

- members are read with zipfile, each CRC-checked as it is read and the rest after (frontend/zip_integrity.py);
  the serialized program and the payload configs are JSON, read without evaluating anything;
- weights and constants are built from their raw bytes and the tensor metadata (dtype, sizes, strides, offset),
  checked against the member's length, aliasing kept where members are shared;
- any member that would need unpickling (pickled payloads, custom/opaque objects, legacy weight files) is refused
  with a message naming it and `--trust-pickle`; the sample inputs, which mcc does not need, are never loaded, and
  their pickle is scanned statically (frontend/pickle_scan.py): one naming anything but tensor data is refused too;
- symbolic shapes (expressions sympy would evaluate) and guard code are refused before torch sees them (mcc
  compiles static shapes); every call target must be an operator under `torch.ops`, `_operator` or `math`, checked
  on the JSON and again on the deserialized graph, before anything traces it.

With `trust_pickle`, torch.export.load reads the archive as torch does (all of the above allowed).

Speed: torch's schema dataclasses and ExportedProgramDeserializer spend most of a load on what mcc's lowering never
reads (a dataclass per argument, a FakeTensor per value dispatched through a FakeTensorMode, the GraphModule and its
code, the ExportedProgram's checks); the loader asks for a LightProgram instead, its graph built straight from the
JSON (frontend/pt2_graph.py), and rebuilds the whole ExportedProgram only for a program the lowering must decompose
or the light reader does not cover (see LightProgram). Weight configs are read from their JSON as they are, and each
member is read once (CRC-checked on the way): loading a MobileNetV2 took 0.13-0.16 s of CPU, now 0.06-0.07 s.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
import zipfile
from pathlib import Path

from ..errors import MccError, summarize
from . import zip_integrity

_TRUST = ("pass --trust-pickle (trust_pickle=True) only if you trust the file, or re-save the model with "
          "torch.export.save from plain tensors")
_TARGET = re.compile(r"(torch\.ops(\.[A-Za-z_][A-Za-z0-9_]*){2,3}|_operator\.[a-z_]+|math\.[a-z_0-9]+)")
_MODEL = "model"


def read_pt2(path: Path, *, trust_pickle: bool = False, light: bool = False):
    """The ExportedProgram in the .pt2 archive at `path`; MccError naming the member for anything unsafe or broken.

    light: a LightProgram where the archive allows one (see there), else the ExportedProgram."""
    import torch

    if trust_pickle:
        with zipfile.ZipFile(path) as z:
            zip_integrity.check(z, path, z.infolist())
        try:
            with open(path, "rb") as f:  # a file object: torch warns about paths not ending in .pt2
                return torch.export.load(f)
        except Exception as e:  # torch raises many types for damaged archives; the user needs one message
            raise MccError(f"could not be read as a torch.export archive ({summarize(e)}); re-save it "
                           "with torch.export.save", path=path) from None
    with zipfile.ZipFile(path) as z:
        return _Archive(z, path).exported_program(light)


class _Archive:
    def __init__(self, z: zipfile.ZipFile, path: Path):
        self.z, self.path = z, path
        root = next((n[: -len("archive_format")] for n in z.namelist() if n.endswith("archive_format")), "")
        self.members = {n[len(root):]: n for n in z.namelist() if n.startswith(root)}
        self.unread = set(z.infolist())

    def fail(self, message: str):
        raise MccError(message, path=self.path)

    def read(self, member: str) -> bytes:
        if member not in self.members:
            self.fail(f"the torch.export archive has no member '{member}'; re-save it with torch.export.save")
        info = self.z.getinfo(self.members[member])
        self.unread.discard(info)
        return zip_integrity.read(self.z, self.path, info)

    def text(self, member: str) -> str:
        try:
            return self.read(member).decode("utf-8").strip()
        except UnicodeDecodeError:
            self.fail(f"archive member '{member}' is not UTF-8 text; the archive is damaged: re-save it")

    def json(self, member: str):
        try:
            return json.loads(self.read(member))
        except (ValueError, RecursionError) as e:
            self.fail(f"archive member '{member}' is not valid JSON ({summarize(e)}); the archive "
                      "is damaged: re-save it with torch.export.save")

    def exported_program(self, light: bool = False):
        import torch
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer

        if self.text("archive_format") != "pt2" or self.text("archive_version") != "0":
            self.fail("is a torch.export archive of a format or version this torch cannot read (archive_format "
                      f"'{self.text('archive_format')[:20]}', version '{self.text('archive_version')[:20]}'); "
                      "re-save it with torch 2.13")
        if "byteorder" in self.members and self.text("byteorder") != "little":
            self.fail("holds big-endian tensors; re-save the model on a little-endian machine")
        models = sorted(m[len("models/"):-len(".json")] for m in self.members
                        if m.startswith("models/") and m.endswith(".json"))
        if _MODEL not in models:
            self.fail(f"the torch.export archive holds no program named '{_MODEL}' (it has {models or 'none'}); save "
                      "one model with torch.export.save(ep, 'model.pt2')")
        program = self.json(f"models/{_MODEL}.json")
        self._check_program(program)
        self._check_sample_inputs()
        try:
            weights, constants = self._payloads("weights"), self._payloads("constants")
        except MccError:
            raise
        except Exception as e:  # a config the reader cannot follow: KeyError, TypeError, ... whatever it trips
            self._mismatch(e)
        zip_integrity.check(self.z, self.path, [i for i in self.z.infolist() if i in self.unread])

        def rebuild():
            serialized = self._schema(schema.ExportedProgram, program)
            try:
                return ExportedProgramDeserializer().deserialize(serialized, weights, constants, None)
            except Exception as e:  # torch raises many types for an inconsistent program
                self.fail(f"the serialized program could not be rebuilt ({summarize(e)}); re-save "
                          "it with torch.export.save")

        ep = (LightProgram.of(program, weights, constants, self._checked(rebuild)) if light else None) \
            or rebuild()
        self._check_targets(ep, torch)
        return ep

    def _schema(self, cls, data):
        """`data` (JSON) as torch's export schema dataclass `cls`."""
        try:
            return _dict_to_dataclass(cls, data)
        except Exception as e:  # torch's schema conversion raises whatever the malformed JSON trips
            self._mismatch(e)

    def _mismatch(self, error: Exception):
        self.fail(f"the serialized program does not match torch's export schema ({summarize(error)}); re-save it "
                  "with torch.export.save")

    def _checked(self, rebuild):
        """`rebuild` with its program's call targets checked, for a LightProgram to rebuild its ExportedProgram."""
        import torch

        def full():
            ep = rebuild()
            self._check_targets(ep, torch)
            return ep
        return full

    def _check_targets(self, ep, torch) -> None:
        for node in ep.graph.nodes:
            if node.op == "call_function" and not _is_operator(node.target, torch):
                self.fail(f"node '{node.name}' calls {node.target!r}, which is not a torch operator; mcc runs "
                          "nothing else from a model file")

    def _check_program(self, program) -> None:
        """Refuse what torch would evaluate while rebuilding the program: symbolic expressions, guard code,
        call targets outside the operator namespaces."""
        if not isinstance(program, dict):
            self.fail(f"archive member 'models/{_MODEL}.json' is not a serialized ExportedProgram")
        symbolic, targets = _scan(program)
        if program.get("range_constraints") or program.get("guards_code") or symbolic:
            self.fail("the exported program has dynamic (symbolic) dimensions; mcc compiles static shapes: export "
                      "with concrete example inputs and no dynamic_shapes, then torch.export.save it")
        for target in targets:
            if not isinstance(target, str) or not _TARGET.fullmatch(target) or _dunder(target):
                self.fail(f"the exported program calls {str(target)[:120]!r}, which is not a torch operator; mcc "
                          "runs nothing else from a model file")

    def _check_sample_inputs(self) -> None:
        from .pickle_scan import unsafe_imports

        member = f"data/sample_inputs/{_MODEL}.pt"
        if member not in self.members:
            return
        try:
            unsafe = unsafe_imports(self.read(member))
        except ValueError as e:
            self.fail(f"archive member '{member}' (the sample inputs) is {e}; re-save the model")
        if unsafe:
            self.fail(f"archive member '{member}' (the sample inputs) is a pickle that would import "
                      f"{', '.join(sorted(set(unsafe))[:5])}, i.e. run code when loaded; mcc does not load it: "
                      f"{_TRUST}")

    def _config(self, kind: str):
        legacy = f"data/{kind}/{_MODEL}.pt"
        if legacy in self.members:
            self.fail(f"keeps its {kind} in the legacy pickled member '{legacy}', which runs code when loaded; "
                      f"{_TRUST}")
        return self.json(f"data/{kind}/{_MODEL}_{kind}_config.json")

    def _payloads(self, kind: str) -> dict:
        """Tensors by fully qualified name, built from raw bytes and their config (JSON: torch's PayloadConfig,
        read as it is, where schema dataclasses cost a fifth of reading a MobileNetV2); refuses pickled payloads."""
        import torch

        flat: dict[str, object] = {}
        out = {}
        for fqn, meta in self._config(kind)["config"].items():
            path_name, tm = meta["path_name"], meta["tensor_meta"]
            member = f"data/{kind}/{path_name}"
            if meta["use_pickle"] or not path_name.startswith(("weight_", "tensor_")):
                self.fail(f"{kind[:-1]} '{fqn}' is stored as a pickled object (member '{member}'), which runs code "
                          f"when loaded; {_TRUST}")
            if tm is None:
                self.fail(f"{kind[:-1]} '{fqn}' has no tensor metadata; the archive is damaged: re-save it")
            dtype, sizes, strides, offset = _layout(tm)
            if member not in flat:
                flat[member] = self._flat(member, dtype)
            t = self._strided(flat[member], fqn, member, dtype, sizes, strides, offset)
            out[fqn] = torch.nn.Parameter(t, requires_grad=tm["requires_grad"]) if meta["is_param"] else t
        return out

    def _flat(self, member: str, dtype):
        import torch

        raw = self.read(member)
        if len(raw) % dtype.itemsize:
            self.fail(f"archive member '{member}' holds {len(raw)} bytes, not a whole number of {dtype} elements; "
                      "the archive is damaged: re-save it")
        return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)

    def _strided(self, flat, fqn, member, dtype, sizes, strides, offset):
        import torch

        if len(sizes) != len(strides) or min(sizes + strides + [offset], default=0) < 0:
            self.fail(f"tensor '{fqn}' has sizes {sizes}, strides {strides} and offset {offset}, which do not "
                      "describe a tensor; the archive is damaged: re-save it")
        if 0 in sizes:
            return torch.zeros(sizes, dtype=dtype)
        if not len(flat):  # an empty member stands for a tensor of zeros (torch writes no bytes for them)
            flat = torch.zeros(1 + sum((n - 1) * s for n, s in zip(sizes, strides)), dtype=dtype)
            offset = 0
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
        if last >= len(flat):
            self.fail(f"tensor '{fqn}' {dtype}{sizes} reaches element {last} of member '{member}', which holds "
                      f"{len(flat)}; the archive is damaged: re-save it")
        return torch.as_strided(flat, sizes, strides, offset)


class LightProgram:
    """What mcc's lowering reads of an ExportedProgram (graph, graph_signature, state_dict, constants): the graph
    built straight from the archive's JSON (frontend/pt2_graph.py), without torch's schema dataclasses, its
    deserializer, the GraphModule, module call graph and ExportedProgram around them, which were two thirds of
    reading a MobileNetV2's archive and none of which the lowering reads. `exported_program()` rebuilds the whole
    program (for the lowering's decomposition path, run_decompositions), converting the JSON then. Only for static
    programs of tensors (what mcc compiles); `of` gives None for anything else, and the caller rebuilds as torch
    does. Damage in what the lowering does not read (a value's device or storage offset, the module call graph)
    is not refused as torch's schema check refused it: such a file lowers to the IR of the undamaged one (149 of
    1,500 mutations of tests/fuzz/pt2_fuzz.py's model JSON, each checked)."""

    def __init__(self, graph, graph_signature, state_dict, constants, rebuild):
        self.graph, self.graph_signature = graph, graph_signature
        self.state_dict, self.constants = state_dict, constants
        self.exported_program = rebuild

    @classmethod
    def of(cls, program: dict, weights, constants, rebuild):
        from torch._export.serde import schema, serialize

        from .pt2_graph import read_graph

        try:
            graph_module = program["graph_module"]
            graph = graph_module["graph"]
            if (program["schema_version"]["major"] != serialize.SCHEMA_VERSION[0] or graph["sym_int_values"]
                    or graph["sym_float_values"] or graph["sym_bool_values"] or graph["custom_obj_values"]):
                return None
            reader = serialize.GraphModuleDeserializer()
            reader.constants = constants
            signature = reader.deserialize_signature(_dict_to_dataclass(schema.GraphSignature,
                                                                        graph_module["signature"]))
            return cls(read_graph(graph), signature, weights, constants, rebuild)
        except Exception:  # anything the light reader does not cover: torch's whole deserializer decides
            return None


def _dict_to_dataclass(cls, data):
    """torch's serde._dict_to_dataclass (JSON -> schema dataclasses, unknown keys ignored), with what each class
    needs (its type hints, fields, the converters of its fields) worked out once instead of once per object: torch's
    calls typing.get_type_hints for every node, argument and tensor meta, two thirds of reading a MobileNetV2."""
    return _converter(cls)(data)


@functools.cache
def _converter(cls):
    """The function that turns JSON data into a value of the schema type `cls`, as torch's _dict_to_dataclass."""
    from torch._export.serde.union import _Union, _UnionTag

    cls = _schema_class(cls)
    if isinstance(cls, str):
        raise AssertionError(f"Unresolved class type: '{cls}'.")
    origin = typing.get_origin(cls)
    if origin is typing.Annotated:
        return _converter(cls.__origin__)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(cls):
        args = typing.get_args(cls)
        if len(args) != 2:
            raise AssertionError(f"expected 2 type args, got {len(args)}")
        return lambda data: None if data is None else _converter(args[0])(data)
    if isinstance(cls, type) and issubclass(cls, _Union):
        hints = _type_hints(cls)
        unset = dict.fromkeys(f.name for f in dataclasses.fields(cls))
        cls(**unset).__post_init__()  # torch's check of the field names, once instead of once per object

        def union(data):
            """cls.create(tag=value) without its two dataclasses.fields() calls per object (a tenth of reading a
            MobileNetV2's archive): the object's fields set the same way, all None but the tag's."""
            if not isinstance(data, dict) or len(data) != 1 or not isinstance(next(iter(data)), str):
                raise AssertionError(f"expected a dict with one str key, got {str(data)[:80]}")
            (tag, value), = data.items()
            obj = object.__new__(cls)
            fields = obj.__dict__
            fields.update(unset)
            fields[tag] = _converter(hints[tag])(value)
            fields["_type"] = _UnionTag.create(tag, cls)
            return obj
        return union
    if dataclasses.is_dataclass(cls):
        hints = _type_hints(cls)
        fields = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
        return lambda data: cls(**{name: _converter(hint)(data[name]) for name, hint in fields if name in data})

    def other(data):  # torch decides by the data: lists and dicts of the type's arguments, else the value itself
        if isinstance(data, list):
            return [_converter(typing.get_args(cls)[0])(d) for d in data] if data else data
        if isinstance(data, dict):
            convert = _converter(typing.get_args(cls)[1])
            return {k: convert(v) for k, v in data.items()}
        return float(data) if cls is float else data
    return other


@functools.cache
def _schema_class(cls):
    """A forward reference or class name in torch's export schema resolved to the class (torch's
    _resolve_schema_cls)."""
    from torch._export.serde import schema

    if isinstance(cls, typing.ForwardRef):
        return _schema_class(cls.__forward_arg__)
    return getattr(schema, cls, cls) if isinstance(cls, str) else cls


@functools.cache
def _type_hints(cls) -> dict:
    from torch._export.serde import schema

    return typing.get_type_hints(cls, globalns=vars(schema))


def _layout(tm: dict):
    """(torch dtype, sizes, strides, storage offset) of a serialized TensorMeta (JSON): static sizes only."""
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    def value(v):  # a SymInt union: {"as_int": n} or {"as_expr": ...}
        (tag, n), = v.items()
        return tag, n

    def ints(values):
        out = []
        for tag, n in map(value, values):
            if tag != "as_int":
                raise MccError("the archive has dynamic (symbolic) dimensions in a stored tensor; mcc compiles "
                               "static shapes: export with concrete example inputs")
            out.append(int(n))
        return out

    tag, offset = value(tm["storage_offset"])
    return _SERIALIZE_TO_TORCH_DTYPE[tm["dtype"]], ints(tm["sizes"]), ints(tm["strides"]), \
        int(offset) if tag == "as_int" else -1


def _dunder(target: str) -> bool:
    """A dunder name anywhere but as an aten operator's name (aten.__and__.Tensor is an operator; a path through
    __class__ or __globals__ is not)."""
    parts = target.split(".")
    return any(p.startswith("__") for i, p in enumerate(parts) if not (i == 3 and parts[:3] == ["torch", "ops", "aten"]))


def _scan(program) -> tuple[bool, list]:
    """(whether any dict has an "expr_str" key, i.e. a symbolic expression; every node target in the program and its
    nested graphs, nodes being the dicts with target/inputs/outputs), in one walk of the JSON."""
    symbolic, targets, stack = False, [], [program]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            symbolic = symbolic or "expr_str" in v
            if "target" in v and "inputs" in v and "outputs" in v:
                targets.append(v["target"])
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return symbolic, targets


def _is_operator(target, torch) -> bool:
    import math
    import operator

    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
        return True
    return getattr(target, "__module__", None) in ("_operator", "math") and (
        getattr(operator, getattr(target, "__name__", ""), None) is target
        or getattr(math, getattr(target, "__name__", ""), None) is target)
