"""Read an ONNX model into an IR graph: refuse what mcc cannot compile up front, make every shape static, lower.

The closest existing tool, onnx2tf (ONNX -> TFLite), converts node by node, transposing each 4-D tensor to NHWC
as it goes and guessing every op's axis order, and stops at the first node it cannot convert. mcc checks the
whole model before lowering anything, so one run names every problem of a kind at once (all unsupported ops, each
with its node; an already quantized model as such); it fixes a symbolic batch to 1 (or the shapes the user gives)
and runs ONNX's own shape inference, so every tensor has a static shape; it folds constant subgraphs with onnx's
reference evaluator; and it lowers to its NCHW IR, leaving layout to the layout pass as for PyTorch models.

Opsets 13 to 21 of the default domain are read as they are (the lowering table knows where they differ: ReduceMean
and Split's attributes-turned-inputs, Pad's axes, Resize's new attributes); older (from 7) and newer (to the
newest the pinned onnx defines) are converted in memory by onnx's version converter first (to_known_opset).
"""

from __future__ import annotations

import heapq
from pathlib import Path

import onnx
import onnx.inliner
import onnx.version_converter
from onnx import external_data_helper

from ..errors import MccError, describe_os_error, summarize
from ..ir import Graph
from .onnx_lowering import DEFAULT_DOMAINS, INPUT_DTYPES, Lowering, default_opset, node_label

OPSETS = range(13, 22)
_QUANTIZED = ("QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat")
_QUANTIZED_PREFIXES = ("QLinear", "DynamicQuantize", "QGemm", "QAttention", "QOrdered")


def load_onnx(path, input_shapes: list[tuple[int, ...]] | None = None) -> Graph:
    """Load the ONNX model at `path` (external data next to it) into an NCHW IR graph.

    Every input dimension must be static for compiling: a symbolic (or unset) batch dimension becomes 1, or all
    inputs take `input_shapes` (one per model input, agreeing with the model's fixed dimensions); any other
    symbolic dimension needs input_shapes. From the static inputs, onnx.shape_inference gives each node's outputs
    their static shapes as the walk reaches it, with the values of the node's small constant inputs (shapes,
    axes, scales), which a whole-model inference does not always propagate (Shape -> Gather -> Concat -> Reshape).
    """
    path = Path(path)
    model, origin = to_known_opset(read_model(path), path)
    check_model(model, path)
    shapes = static_inputs(model, input_shapes, path)
    load_external_data(model, path)
    check_with_onnx(model, path)
    graph = Lowering(model, shapes, path.stem, path).run()
    graph.origin = {"format": "onnx", **origin, **graph.origin}  # the lowering's notes (unrolled LSTMs) kept
    return graph


def read_model(path: Path) -> onnx.ModelProto:
    """Parse the file as a ModelProto with a graph (model-local functions inlined), without its external data."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError, or a RuntimeError from the C++ parser
        raise MccError(f"looks like an ONNX model but does not parse ({summarize(e)}): the file is truncated "
                       "or corrupt; re-export or re-copy it", path=path) from None
    if not model.HasField("graph") or not model.graph.node:
        raise MccError("is an ONNX model without a graph (or with an empty one); re-export it", path=path)
    where = _non_utf8(model)
    if where is not None:
        raise MccError(f"holds a string that is not UTF-8 text ({where}); the file is corrupt: re-export or re-copy it",
                       path=path)
    bad = [o for o in model.opset_import if not 1 <= o.version < 1 << 31]
    if bad:
        raise MccError(f"declares opset {bad[0].version} of domain '{bad[0].domain}', which no ONNX release defines; "
                       "the file is corrupt: re-export it", path=path)
    if model.functions:
        try:
            model = onnx.inliner.inline_local_functions(model)
        except (RuntimeError, onnx.checker.ValidationError, ValueError) as e:
            raise MccError(f"its model-local functions cannot be inlined ({summarize(e)}); fix or re-export the "
                           "model", path=path) from None
    return model


def _non_utf8(message) -> str | None:
    """The first string field holding bytes that are not UTF-8 (protobuf hands those back as bytes, which every
    later string operation trips over), as 'Field.path = b...'; None if all are text."""
    stack = [(message, type(message).__name__)]
    while stack:
        msg, where = stack.pop()
        for field, value in msg.ListFields():
            here = f"{where}.{field.name}"
            if field.type == field.TYPE_MESSAGE:
                items = value if field.is_repeated else [value]
                stack.extend((m, f"{here}[{i}]") for i, m in enumerate(items))
            elif field.type == field.TYPE_STRING:
                for v in (value if field.is_repeated else [value]):
                    if isinstance(v, bytes):
                        return f"{here} = {v[:40]!r}"
    return None


def _element_types(model: onnx.ModelProto, path) -> None:
    """Every initializer and graph input has an element type ONNX defines (UNDEFINED and unknown numbers are
    refused by name, before onnx's checker or numpy meets them)."""
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    tensors = [(f"initializer '{t.name}'", t.data_type) for t in model.graph.initializer]
    weights = {t.name for t in model.graph.initializer}
    untyped = [v.name for v in model.graph.input if v.name not in weights and not v.type.HasField("tensor_type")]
    if untyped:
        raise MccError(f"input '{untyped[0]}' has no tensor type; mcc compiles models whose inputs are float32 "
                       "tensors: re-export the model", path=path)
    tensors += [(f"input '{v.name}'", v.type.tensor_type.elem_type) for v in model.graph.input
                if v.type.HasField("tensor_type")]
    for what, elem in tensors:
        if elem not in known:
            name = "UNDEFINED" if elem == onnx.TensorProto.UNDEFINED else f"unknown ({elem})"
            raise MccError(f"{what} has element type {name}, which is no ONNX data type; the file is corrupt: "
                           "re-export it", path=path)


def to_known_opset(model: onnx.ModelProto, path) -> tuple[onnx.ModelProto, dict]:
    """The model at an opset the lowering table reads (13 to 21), and what was done to get there.

    Most published ONNX models were exported at opsets 7 to 12, and the newest onnx defines up to 28; a user has
    only the file. onnx's own version converter rewrites the in-memory model to the nearest opset mcc reads (13 for
    older files, so as few adapters as possible run; 21 for newer ones, whose later versions mostly widen type
    constraints). The user's file is never touched, and the report names the opset it came in with."""
    opset, newest = default_opset(model), onnx.defs.onnx_opset_version()
    if opset is None or not 7 <= opset <= newest:
        found = f"opset {opset}" if opset is not None else "no opset of the default ONNX domain"
        raise MccError(f"declares {found}; mcc reads opsets 7 to {newest} (the ones the pinned onnx defines): "
                       "re-export the model with one, e.g. torch.onnx.export(..., opset_version=18)", path=path)
    if opset in OPSETS:
        return model, {"onnx_opset": opset}
    target = OPSETS.start if opset < OPSETS.start else OPSETS.stop - 1
    try:
        converted = onnx.version_converter.convert_version(model, target)
    except Exception as e:  # onnx's C++ converter raises whatever its adapters and inference meet on a bad model
        raise MccError(f"declares opset {opset}, which mcc converts to opset {target} with onnx's version converter, "
                       f"but the converter fails ({summarize(e)}); re-export the model at an opset from "
                       f"{OPSETS.start} to {OPSETS.stop - 1}", path=path) from None
    return converted, {"onnx_opset": opset, "converted_to_opset": target}


def check_model(model: onnx.ModelProto, path) -> None:
    """Refuse, before any work, a quantized model, a cycle, unsupported ops (all of them in one message) and nodes
    that break their op's schema (so no lowering meets a malformed node); sorts the nodes topologically in place."""
    _element_types(model, path)
    quantized = [n for n in model.graph.node if n.op_type in _QUANTIZED or n.op_type.startswith(_QUANTIZED_PREFIXES)]
    if quantized:
        raise MccError(f"is already quantized ({_listing(quantized)}); mcc quantizes float models itself: give it "
                       "the float model it came from (and --target ...-int8 with --calib data)", path=path)
    _toposort(model.graph, path)
    unsupported = _unsupported(model.graph)
    if unsupported:
        raise MccError(f"uses {len(unsupported)} op(s) mcc's ONNX frontend does not support: {_listing(unsupported)}; "
                       "the supported ops are the keys of mcc.frontend.onnx_ops.LOWERINGS (plus any op on "
                       "constants only, which is folded); rewrite those parts of the model", path=path)
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version, ctx.opset_imports = model.ir_version, {o.domain: o.version for o in model.opset_import}
    for n in model.graph.node:
        # A node with subgraphs (If) reads outer-scope names that a lone node's check does not know; the whole-model
        # check (check_with_onnx) checks it in scope.
        if n.domain in DEFAULT_DOMAINS and not _captured(n):
            try:
                onnx.checker.check_node(n, ctx)
            except (onnx.checker.ValidationError, RuntimeError) as e:
                raise MccError(f"is not a valid ONNX {n.op_type} node: {_first_line(e)}", path=path,
                               node=node_label(n)) from None


def check_with_onnx(model: onnx.ModelProto, path) -> None:
    """onnx.checker's full check, strict shape inference included: what the ONNX ecosystem calls a valid model
    (single assignment of every name, outputs that some node produces, initializers that hold their dims' worth of
    data, known element types). mcc lowers only models that pass it, so no lowering meets a malformed graph. The
    checker requires a shape on every graph output, which onnxruntime does not: an output declared without one is
    checked in everything but its shape (which the lowering checks node by node), then strict shape inference
    checks every node's types and shapes."""
    if not model.graph.output:
        raise MccError("the ONNX graph has no outputs, so it computes nothing; re-export the model with its outputs",
                       path=path)
    # Both checks take the model serialized; the model is edited in place for them and restored after, rather than
    # copied (a MobileNetV2's 14 MB of weights copied, then serialized twice and parsed back, were 45 ms of 60):
    # a shape only the node-by-node folding finds is checked when lowered, so outputs declared without one get an
    # empty one for the checker; shape inference reads no float weight's values (only small integer and float
    # inputs: shapes, axes, scales), so it runs with the large float initializers' bytes set aside.
    unshaped = [v.type.tensor_type for v in model.graph.output
                if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]
    weights = [t for t in model.graph.initializer if t.data_type in _FLOATS and len(t.raw_data) > _SET_ASIDE]
    try:
        for tensor_type in unshaped:
            tensor_type.shape.SetInParent()
        onnx.checker.check_model(model)
        for tensor_type in unshaped:
            tensor_type.ClearField("shape")
        unshaped = []
        data = [t.raw_data for t in weights]
        for t in weights:
            t.ClearField("raw_data")
        try:
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        finally:
            for t, raw in zip(weights, data):
                t.raw_data = raw
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, TypeError, KeyError,
            UnicodeError) as e:
        raise MccError(f"is not a valid ONNX model, onnx.checker says: {_first_line(e)}; fix or re-export the model",
                       path=path) from None
    finally:
        for tensor_type in unshaped:
            tensor_type.ClearField("shape")


_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
_SET_ASIDE = 1024  # bytes: larger float initializers are weights, which shape inference does not read


def _listing(nodes) -> str:
    def op(n):
        return n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}.{n.op_type}"
    return ", ".join(f"{op(n)} (node '{node_label(n)}')" for n in nodes)


def _toposort(graph: onnx.GraphProto, path) -> None:
    """Order the nodes so each comes after its inputs' producers (file order where free); MccError on a cycle or
    an input that nothing provides."""
    nodes = list(graph.node)
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in {x for x in [*n.input, *_captured(n)] if x and x not in available}:
            if name not in producer:
                raise MccError(f"reads '{name}', which no node produces and which is neither a graph input nor an "
                               "initializer; the model is incomplete: re-export it", path=path, node=node_label(n))
            waiting[i] += 1
            readers.setdefault(producer[name], []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for r in readers.get(i, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) < len(nodes):
        stuck = [node_label(n) for i, n in enumerate(nodes) if waiting[i]]
        raise MccError(f"has a cycle: nodes {', '.join(repr(s) for s in stuck[:8])} each wait (directly or not) "
                       "for one another's outputs; an ONNX graph must be acyclic", path=path)
    del graph.node[:]
    graph.node.extend(order)


def _captured(node: onnx.NodeProto) -> set[str]:
    """The outer-scope values the subgraphs of a control-flow node read (ONNX lets them read any by name)."""
    names: set[str] = set()
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            inner = {v.name for v in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
            for n in g.node:
                names |= {x for x in [*n.input, *_captured(n)] if x and x not in inner}
            names |= {v.name for v in g.output if v.name not in inner}
    return names


# Loops run a body a number of times known only at run time (or per element of a scanned axis); mcc compiles
# fixed graphs, so it refuses them by node even when their inputs are constants.
_LOOPS = ("Loop", "Scan")


def _unsupported(graph: onnx.GraphProto) -> list:
    """Nodes that are neither in the lowering table nor foldable (default-domain ops on constants only). An If is
    checked when it is lowered: only the branch its (constant) condition takes must be compilable."""
    from .onnx_ops import LOWERINGS, SHAPE_OF

    constant = {t.name for t in graph.initializer}
    bad = []
    for n in graph.node:
        default = n.domain in DEFAULT_DOMAINS
        if default and n.op_type == "If":
            continue
        foldable = n.op_type in SHAPE_OF or all(x in constant for x in n.input if x)
        if default and n.op_type not in _LOOPS and foldable:
            constant.update(n.output)
        elif not default or n.op_type not in LOWERINGS:
            bad.append(n)
    return bad


def load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read the tensors stored outside the file, from the model's folder only.

    onnx's own reader refuses absolute locations and '..' but also every symbolic link; mcc reads the bytes itself
    so that a link is followed when, resolved, it stays inside the model's folder (models copied with their weights
    linked from a cache), and refuses a location that leaves the folder however it is spelled."""
    folder = path.parent.resolve()
    for t in (t for t in _tensors(model.graph) if external_data_helper.uses_external_data(t)):
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        where = f"tensor '{t.name}' keeps its data in external file {location[:100]!r}"
        try:
            target = (folder / location).resolve()
        except (OSError, ValueError, RuntimeError) as e:  # a NUL byte in the name, a link loop
            raise MccError(f"{where}, whose name cannot be resolved ({summarize(e)}); re-export the model",
                           path=path) from None
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise MccError(f"{where}, outside the model's folder {folder}; external data must lie beside the model "
                           "(a relative location, no '..', links only within the folder)", path=path)
        try:
            present = target.is_file()
        except OSError as e:
            raise MccError(f"{where}, which cannot be opened: {describe_os_error(OSError(e.errno, e.strerror))}",
                           path=path) from None
        if not present:
            raise MccError(f"{where}, missing from {path.parent}; copy it next to the model", path=path)
        offset, length = _external_range(t, where, target, path)
        with open(target, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length) if length is not None else f.read()
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def _external_range(t, where: str, target: Path, path) -> tuple[int, int | None]:
    """(offset, length or None) of an external tensor, checked against the data file's size."""
    entries = {e.key: e.value for e in t.external_data}
    try:
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        raise MccError(f"{where}, with offset {entries.get('offset')!r} and length {entries.get('length')!r}, which "
                       "are not whole numbers; the file is corrupt: re-export it", path=path) from None
    size = target.stat().st_size
    if offset < 0 or offset > size or (length is not None and not 0 <= length <= size - offset):
        raise MccError(f"{where}, at offset {offset} for {length} bytes, but the file holds {size} bytes: it is "
                       "truncated or the model does not belong to it; re-copy both", path=path)
    return offset, length


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t


def static_inputs(model: onnx.ModelProto, input_shapes, path) -> dict[str, tuple[int, ...]]:
    """The static shape of each model input (initializers listed as inputs are weights, not inputs)."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if input_shapes is not None and len(input_shapes) != len(inputs):
        raise MccError(f"has {len(inputs)} input(s) ({', '.join(v.name for v in inputs)}) but input_shapes gives "
                       f"{len(input_shapes)}", path=path)
    shapes = {}
    for i, v in enumerate(inputs):
        if v.type.tensor_type.elem_type not in INPUT_DTYPES:
            raise MccError(f"input '{v.name}' is {onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)}; "
                           "mcc compiles models with float32 inputs, and int32 or int64 ones for indices (token ids)",
                           path=path)
        shapes[v.name] = _input_shape(v, input_shapes[i] if input_shapes is not None else None, path)
    return shapes


def _input_shape(v, given, path) -> tuple[int, ...]:
    """The static shape of input `v`: `given` checked against the model's fixed dimensions, or the model's with
    a symbolic batch set to 1."""
    has_shape = v.type.tensor_type.HasField("shape")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in v.type.tensor_type.shape.dim]
    hint = "pass input_shapes (mcc compile --input-shape 1,3,224,224), one shape per input"
    if given is not None:
        if has_shape and (len(dims) != len(given) or any(isinstance(d, int) and d != g for d, g in zip(dims, given))):
            raise MccError(f"input '{v.name}' has shape {dims}, which input_shapes' {tuple(given)} contradicts",
                           path=path)
        return tuple(given)
    if not has_shape:
        raise MccError(f"input '{v.name}' has no recorded shape; {hint}", path=path)
    symbolic = [(i, d) for i, d in enumerate(dims) if not isinstance(d, int) and i > 0]
    if symbolic:
        listed = ", ".join(f"{d!r} (axis {i})" for i, d in symbolic)
        raise MccError(f"input '{v.name}' has symbolic dimension(s) {listed} besides the batch; {hint}", path=path)
    return tuple(d if isinstance(d, int) else 1 for d in dims)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
