"""Lower a torch.export program to mcc's IR: translate its FX graph node by node, as its core-ATen form.

The closest existing tool is torch.onnx's dynamo exporter: it also exports, decomposes and dispatches every
FX node to a translation function from a table (onnxscript's torchlib). mcc differs in three ways, each to keep
its IR small: it targets its own one-form-per-op set instead of ONNX's; it keeps a few ops (hardswish,
hardsigmoid, silu, prelu, nearest-exact upsampling, gelu, pixel_shuffle, reflection and replication padding)
whole instead of decomposing them, because TFLite has kernels for them;
and it folds every node whose inputs are all constants by running it in torch during lowering, so weight
permutes, transposes and scalar arithmetic never reach the IR. A fourth is for speed: where it can, mcc lowers the
training IR torch.export gives without torch's decomposition retrace, to the same IR (see `lower`). IR nodes are
named after the nn.Module that ran them and constants after their state_dict keys, so a user finds their layers by
the names they gave them. The graph stays NCHW, as torch wrote it; the layout pass, not the frontend, decides the
target layout.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import operator
import os
import re
import warnings
from dataclasses import dataclass

import torch

from ..errors import MccError, summarize
from ..ir import Graph, Tensor
from ..ir.names import claim_unique
from .aten import CORE_FORMS, IN_PLACE_FORMS, LOWERINGS, SKIPPED

# Decomposed by torch's default table but kept whole: each is one TFLite kernel and one IR op.
KEEP_WHOLE = ("hardswish.default", "hardsigmoid.default", "silu.default", "prelu.default",
              "_upsample_nearest_exact2d.vec", "gelu.default", "pixel_shuffle.default", "reflection_pad1d.default",
              "reflection_pad2d.default", "replication_pad1d.default", "replication_pad2d.default",
              # unrolled by frontend.recurrent, the same module that unrolls ONNX's LSTM and GRU
              "lstm.input", "gru.input")

# Model inputs the frontend accepts: activations, and integer indices (token ids into an embedding).
INPUT_DTYPES = {torch.float32: "float32", torch.int32: "int32", torch.int64: "int64"}


@dataclass(eq=False)
class Const:
    """A value known at compile time: a parameter, a buffer or the result of a folded node.

    `name` is the parameter it came from (a weight permute keeps "fc.weight"), so the IR names its constants
    after the model's own state_dict keys.
    """

    value: torch.Tensor
    name: str


def from_module(module: torch.nn.Module, example_inputs: tuple) -> Graph:
    """Export `module` in eval mode with `example_inputs` and lower it; the module's mode is restored after."""
    return lower_module(module, example_inputs)


def lower_module(module, example_inputs, *, name: str | None = None, path=None) -> Graph:
    if isinstance(example_inputs, torch.Tensor):  # tuple() of a tensor would split its batch
        example_inputs = (example_inputs,)
    was_training = module.training
    module.eval()
    try:
        ep = torch.export.export(module, tuple(example_inputs))
    except Exception as e:  # torch raises many types here; the user needs one message
        raise MccError(f"torch.export could not export {type(module).__name__}: {e}", path=path) from e
    finally:
        module.train(was_training)
    return lower(ep, name=name or type(module).__name__, path=path)


def from_exported_program(ep) -> Graph:
    """Lower an ExportedProgram (as returned by torch.export.export or torch.export.load)."""
    return lower(ep)


@functools.cache
def _decompositions():
    """torch's core-ATen decomposition table less the ops mcc lowers whole (KEEP_WHOLE); built once per process,
    since building it costs 60-80 ms, as much as decomposing a small model."""
    table = torch.export.default_decompositions()
    for kept in KEEP_WHOLE:
        op, overload = kept.split(".")
        table.pop(getattr(getattr(torch.ops.aten, op), overload), None)
    return table


def lower(ep, *, name: str = "main", path=None, input_names: list[str] | None = None) -> Graph:
    """Lower `ep` to an IR graph named `name`; errors name `path` when the program came from a file.

    input_names replaces the program's names for its user inputs (a converted TorchScript module's are
    mangled, "x" becoming "x_1").

    torch.export gives the training IR (aten.conv2d, aten.batch_norm, in-place relu_); torch.onnx's exporter and
    ExecuTorch run run_decompositions on it, which retraces the whole program through AOT autograd (about 1.3 s
    for a MobileNetV2, most of loading a .pt2). mcc lowers the training IR directly where every node is one
    aten.CORE_FORMS covers or one decomposition keeps as it is (core_names), and gives each node the name its
    decomposed form would have, so the IR is the same either way; other programs are decomposed first.
    """
    names = core_names(ep)
    if names is None:
        from .pt2_archive import LightProgram

        if isinstance(ep, LightProgram):  # read without torch's ExportedProgram, which decomposing needs
            ep = ep.exported_program()
        return lower_decomposed(ep, name=name, path=path, input_names=input_names)
    return _Lowering(ep, name, path, input_names, names).run()


def lower_decomposed(ep, *, name: str = "main", path=None, input_names: list[str] | None = None) -> Graph:
    """`lower` through torch's run_decompositions to core ATen, whatever the program holds."""
    try:
        with quiet_torch():
            ep = ep.run_decompositions(_decompositions().copy())
    except Exception as e:  # custom ops without a decomposition, mostly
        raise MccError(f"torch could not decompose the program to core ATen ({summarize(e)})",
                       path=path) from e
    return _Lowering(ep, name, path, input_names, {}).run()


def core_names(ep) -> dict | None:
    """For each call node of `ep`, the name run_decompositions would give the node that stands for it (None for a
    node it would drop as unused); None when some node is outside what the direct lowering covers.

    run_decompositions names the nodes of its retrace afresh, in order, after their op (FX's namespace: "relu",
    "relu_1", ...), counting the nodes it then drops (the unused getitems of a BatchNorm, dead code); replaying that
    sequence gives the names. An in-place op (relu_) becomes its functional op; it is covered only where the
    tensor it writes aliases nothing (see _in_place), as functionalization then just renames the value.
    """
    from torch.fx.graph import _Namespace

    namespace = _Namespace()
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            namespace.create_name(node.name, None)
    names = {}
    for node in ep.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op != "call_function":
            return None
        if node.target is operator.getitem:  # of a multi-output op, whose form made the getitems
            if not isinstance(node.args[0], torch.fx.Node) or node.args[0].op != "call_function":
                return None
            names[node] = node.name
            continue
        form = _core_form(node)
        if form is None:
            return None
        core, main = form
        created = [namespace.create_name(n, None) for n in core]
        names[node] = created[main] if created else None
    live = _live(ep.graph)
    return {node: name if node in live else None for node, name in names.items()}


def _live(graph) -> set:
    """The nodes the output depends on once in-place ops are functional (a reader of a written tensor reads the
    last in-place op on it before the reader): what the decomposed program keeps after dead-code elimination."""
    current, reads = {}, {}
    for node in graph.nodes:
        reads[node] = [current.get(a, a) for a in node.all_input_nodes]
        if node.target in _in_place_ops():
            written = node.args[0]
            version = current.get(written, written)
            for member in [m for m, v in current.items() if v is version] + [written, version]:
                current[member] = node
    live, stack = set(), [graph.output_node()]
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(reads[node])
    return live


def _core_form(node):
    """(core node names, index of the one standing for `node`) or None; see core_names."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return None
    if target in _in_place_ops():
        if not _in_place(node):
            return None
        target = _in_place_ops()[target]
    key = str(target)
    if key in CORE_FORMS:
        return CORE_FORMS[key](node)
    if key not in _kept_ops():
        return None
    val = node.meta.get("val")
    outputs = len(val) if isinstance(val, (list, tuple)) else 0
    return [target.__name__.split(".")[0]] + ["getitem"] * outputs, 0


@functools.cache
def _kept_ops() -> frozenset[str]:
    """The ops in LOWERINGS that run_decompositions leaves as they are (not in its table: composite ops that are
    in the core set or that mcc keeps whole, and core ones), less the views whose lowering reads their storage."""
    table = _decompositions()
    return frozenset(key for key in LOWERINGS if key not in CORE_FORMS and key not in _STORAGE_VIEWS
                     and _op(key) is not None and _op(key) not in table)


_STORAGE_VIEWS = ("aten.as_strided.default", "aten.unfold.default", "aten.diagonal.default", "aten.alias.default")


@functools.cache
def _in_place_ops() -> dict:
    """In-place overload (aten.relu_.default) -> its functional one (aten.relu.default), for the kept ops that
    are not views and IN_PLACE_FORMS, where both take the same arguments (pow_.Scalar is pow.Tensor_Scalar's)."""
    out = {}
    for key in _kept_ops() | IN_PLACE_FORMS:
        _, packet, overload = key.split(".")
        functional, in_place = _op(key), _op(f"aten.{packet}_.{overload}")
        if in_place is not None and not any(r.alias_info for r in functional._schema.returns) and [
                str(a.type) for a in functional._schema.arguments] == [str(a.type) for a in in_place._schema.arguments]:
            out[in_place] = functional
    return out


def _op(key: str):
    _, packet, overload = key.split(".")
    return getattr(getattr(torch.ops.aten, packet, None), overload, None)


def _aliasing(node) -> bool:
    """Whether `node`'s result may share memory with an input (a view or an in-place op)."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return node.op != "call_function" or target is operator.getitem
    return any(r.alias_info is not None for r in target._schema.returns)


def _in_place(node) -> bool:
    """An in-place op on a tensor that nothing else aliases: the fresh result of a non-aliasing op, written only by
    in-place ops and never viewed. Functionalization then only renames that value, which the lowering does by
    reading the op's result wherever a later node reads the written tensor. (Views of a written tensor make
    functionalization replay them, a second split for one chunk: that the direct lowering does not copy.)"""
    root = node.args[0]
    while isinstance(root, torch.fx.Node) and root.target in _in_place_ops():
        root = root.args[0]
    if not isinstance(root, torch.fx.Node) or root.op != "call_function" or _aliasing(root):
        return False
    group, stack = {root}, [root]
    while stack:
        for user in stack.pop().users:
            if user in group:
                continue
            if user.target in _in_place_ops():  # writes its first argument, only reads the others
                if user.args[0] in group:
                    group.add(user)
                    stack.append(user)
            elif user.op == "call_function" and _aliasing(user):
                return False
    return True


@contextlib.contextmanager
def quiet_torch():
    """Silence what torch says about itself while exporting: a deprecation inside its pytree code; and from the
    TorchScript converter, each dimension its automatic dynamic shapes specialize, each state_dict entry the
    graph leaves unused and each `if self.training` it resolves. None concerns the model, and a CLI user's
    stderr should hold mcc's one-line messages only."""
    specialize_log = logging.getLogger("torch._export.non_strict_utils")
    level = specialize_log.level
    specialize_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
            warnings.filterwarnings("ignore", message="Manually populate")
            warnings.filterwarnings("ignore", message="Pred is a Python constant")
            yield
    finally:
        specialize_log.setLevel(level)


class _Lowering:
    """One walk over an FX graph; `env` maps each FX node to an IR Tensor, a Const, a Python value or a tuple."""

    def __init__(self, ep, name, path, input_names, names):
        self.ep, self.path = ep, path
        self.names_of = names  # FX node -> the name of its core-ATen form (core_names); empty for a decomposed program
        self.written: dict = {}  # FX node -> every FX node that stands for the same tensor, for in-place ops
        self.input_names = list(input_names or [])
        self.graph = Graph(name)
        self.env: dict = {}
        self.names: set[str] = set()
        self.materialized: dict[Const, Tensor] = {}
        self.node = None  # the FX node being lowered, for emit() and fail()

    # ---- the walk ------------------------------------------------------------------------------------
    def run(self) -> Graph:
        sig = self.ep.graph_signature
        others = [s for s in sig.output_specs if s.kind.name != "USER_OUTPUT"]
        if others:
            raise MccError(f"the program writes {others[0].kind.name.lower()} '{others[0].target}'; mcc compiles "
                           "inference graphs: export the model in eval mode", path=self.path)
        specs = {s.arg.name: s for s in sig.input_specs}
        paths = {p for n in self.ep.graph.nodes for p, _ in (n.meta.get("nn_module_stack") or {}).values()}
        self.containers = {p.rsplit(".", 1)[0] for p in paths if "." in p} & paths
        for node in self.ep.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                if node.name not in specs:
                    self.fail(f"input '{node.name}' of the graph has no entry in the program's graph signature; the "
                              f"archive is inconsistent: {_RESAVE}")
                self.env[node] = self._placeholder(node, specs[node.name])
            elif node.op == "call_function":
                if str(node.target) not in SKIPPED and self.names_of.get(node, node.name) is not None:
                    self.env[node] = self._call(node)
            elif node.op == "output":
                self._outputs(node.args[0])
            else:
                self.fail(f"FX '{node.op}' nodes (control flow or submodules) are not supported")
        self.graph.cleanup()
        try:
            self.graph.verify()
        except ValueError as e:
            raise MccError(f"the lowered program is not a valid graph: {e}", path=self.path) from None
        return self.graph

    def _placeholder(self, node, spec):
        if spec.kind.name != "USER_INPUT":
            value = self.ep.state_dict.get(spec.target)
            if value is None:
                value = self.ep.constants.get(spec.target)
            if value is None:
                self.fail(f"the program's signature names {spec.kind.name.lower()} '{spec.target}' for input "
                          f"'{node.name}', which its weights and constants do not hold; the archive is inconsistent: "
                          f"{_RESAVE}")
            return Const(value.detach(), spec.target)
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            self.fail("only tensor inputs are supported")
        if not all(isinstance(d, int) for d in val.shape):
            self.fail(f"input '{node.name}' has dynamic dimensions {tuple(val.shape)}; mcc compiles static shapes: "
                      "export with concrete example inputs and no dynamic_shapes")
        dtype = INPUT_DTYPES.get(val.dtype)
        if dtype is None:
            self.fail(f"input '{node.name}' is {val.dtype}; mcc's PyTorch frontend takes float32 inputs, and int32 or "
                      "int64 ones for indices (token ids)")
        shape = tuple(val.shape)
        i = len(self.graph.inputs)
        name = self.input_names[i] if i < len(self.input_names) else node.name
        layout = "NCHW" if len(shape) == 4 else None
        return self.graph.add_input(self._unique(name), shape, dtype, layout)

    def _call(self, node):
        args = _map(node.args, self.env.__getitem__)
        kwargs = _map(node.kwargs, self.env.__getitem__)
        functional = _in_place_ops().get(node.target)
        if functional is not None:
            return self._in_place(node, functional, args, kwargs)
        if not any(isinstance(v, Tensor) for v in _leaves((args, kwargs))):
            return self._fold(node, node.target, args, kwargs)
        if node.target is operator.getitem:
            value = args[0][args[1]]
            if value is None:
                self.fail(f"output {args[1]} of '{node.args[0].name}' is not supported (only its first output is)")
            return value
        return self._lower(node, str(node.target), args, kwargs)

    def _lower(self, node, key, args, kwargs):
        lowering = LOWERINGS.get(key)
        if lowering is None:
            self.fail("not supported by mcc's PyTorch frontend (the supported ops are the keys of "
                      "mcc.frontend.aten.LOWERINGS); rewrite this part of the model with supported ops")
        try:
            result = lowering(self, *args, **kwargs)
        except TypeError:
            try:  # arguments that do not fit the lowering are the program's fault (a damaged archive), not mcc's
                inspect.signature(lowering).bind(self, *args, **kwargs)
            except TypeError as e:
                self.fail(f"its arguments do not fit the operator ({e}); the archive is inconsistent: {_RESAVE}")
            raise
        self._check_shapes(node, result)
        return result

    def _in_place(self, node, functional, args, kwargs):
        """An in-place op (only on tensors nothing aliases: core_names) as its functional op, whose result every
        later reader of the written tensor then reads, as functionalization rewrites the program."""
        if any(isinstance(v, Tensor) for v in _leaves((args, kwargs))):
            result = self._lower(node, str(functional), args, kwargs)
        else:
            result = self._fold(node, functional, args, kwargs)
        same = self.written.setdefault(node.args[0], [node.args[0]])
        same.append(node)
        self.written[node] = same
        for fx_node in same:
            self.env[fx_node] = result
        return result

    def _fold(self, node, target, args, kwargs):
        """Run a node whose inputs are all known in torch; the result keeps the name of its single constant input."""
        consts = [v for v in _leaves((args, kwargs)) if isinstance(v, Const)]
        unwrap = lambda v: v.value if isinstance(v, Const) else v  # noqa: E731
        with torch.no_grad():
            result = target(*_map(args, unwrap), **_map(kwargs, unwrap))
        name = consts[0].name if len(consts) == 1 else self.node_name
        return _map(result, lambda v: Const(v, name) if isinstance(v, torch.Tensor) else v)

    def _check_shapes(self, node, result):
        """A lowering that disagrees with torch's own shape is a frontend bug; stop at the node that shows it."""
        vals = node.meta.get("val")
        pairs = zip(result, vals) if isinstance(result, tuple) else [(result, vals)]
        for t, v in pairs:
            if isinstance(t, Tensor) and tuple(t.shape) != tuple(v.shape):
                self.fail(f"lowered to shape {t.shape} but torch computes {tuple(v.shape)}")

    def _outputs(self, values):
        for fx_node in values:
            value = self.env.get(fx_node) if isinstance(fx_node, torch.fx.Node) else fx_node
            if not isinstance(value, (Tensor, Const)):
                raise MccError(f"output '{fx_node}' is not a tensor ({type(value).__name__})", path=self.path)
            taken = any(value is t for t in self.graph.inputs + self.graph.outputs)
            if isinstance(value, Const) or taken:
                self.node = fx_node
                value = self.emit("identity", [value])
            self.graph.outputs.append(value)

    # ---- the interface the lowering functions in aten.py use -----------------------------------------
    def emit(self, op: str, inputs: list, n_outputs: int = 1, **attrs):
        """Append one IR node for the current FX node; Const inputs become IR constants. Returns the output
        tensor, or the tuple of them when n_outputs > 1 (as torch returns a multi-output op's results)."""
        ins = [self.materialize(v) if isinstance(v, Const) else v for v in inputs]
        try:
            node = self.graph.add_node(op, ins, attrs, name=self._unique(self.layer_name()), n_outputs=n_outputs,
                                       source=self.location())
        except ValueError as e:
            self.fail(str(e))
        for t in node.outputs:
            self.names.add(t.name)
            if len(t.shape) == 4 and t.layout is None:
                t.layout = "NCHW"
        return node.outputs[0] if n_outputs == 1 else tuple(node.outputs)

    def const(self, value, like: Const | None = None, name: str | None = None) -> Const:
        """A new compile-time value, named after the constant it was derived from (`like`) or `name`."""
        value = torch.as_tensor(value, dtype=torch.float32)
        return Const(value, like.name if like is not None else name or f"{self.layer_name()}.const")

    def materialize(self, c: Const) -> Tensor:
        """The IR constant (float32) for `c`, created once however many nodes read it."""
        t = self.materialized.get(c)
        if t is None:
            data = c.value.detach().to(torch.float32).numpy().copy()
            t = Tensor(self._unique(c.name), data=data)
            self.materialized[c] = t
        return t

    def shape(self, v) -> tuple[int, ...]:
        return tuple(v.value.shape) if isinstance(v, Const) else tuple(v.shape)

    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.node.meta["val"].shape)

    def require_const(self, v, what: str) -> Const:
        if not isinstance(v, Const):
            self.fail(f"needs a constant {what} (a parameter or buffer), got a tensor computed at run time")
        return v

    def layer_name(self) -> str:
        """The path of the leaf nn.Module that ran the node ("features.3.conv", as in its state_dict keys), or
        for code in a container's forward the container's path and the op ("blocks.0.add"); the FX node's name
        for the top-level forward and for programs without module information."""
        stack = self.node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        if not path:
            return self.node_name
        if path not in self.containers:
            return path
        return f"{path}.{_NUMBERED.sub('', self.node_name).lstrip('_')}"  # "add_3" -> "blocks.0.add"

    @property
    def node_name(self) -> str:
        """The FX name of the current node in the core-ATen program (where lowered directly, that of its form)."""
        return self.names_of.get(self.node) or self.node.name

    def location(self) -> str:
        return source_location(self.node, self.node_name)

    def fail(self, message: str):
        where = self.location()
        at = f" at {where}" if where != self.node_name else ""
        what = f"aten op '{self.node.target}'" if self.node.op == "call_function" else self.node.op
        raise MccError(f"{what}{at}: {message}", path=self.path, node=self.node_name)

    def _unique(self, base: str) -> str:
        return claim_unique(self.names, base)


_RESAVE = "re-save the model with torch.export.save"
_NUMBERED = re.compile(r"_\d+$")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def source_location(node, name: str | None = None) -> str:
    """file:line of the innermost frame outside torch in the node's stack trace, else `name` (the FX node's)."""
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    user = [f for f in frames if not f[0].startswith(_TORCH_DIR)] or frames
    return f"{user[-1][0]}:{user[-1][1]}" if user else name or node.name


def _map(value, fn):
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value) if isinstance(value, (torch.fx.Node, Const, torch.Tensor)) else value


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def example_inputs(shapes, *, path, kind: str) -> tuple:
    """Zero tensors of the user's input shapes for a `kind` of file that does not record them.

    Export records shapes, not values, so zeros trace like real data.
    """
    if shapes is None:
        raise MccError(f"is a {kind}, which does not record input shapes: pass input_shapes, e.g. "
                       "input_shapes=[(1, 3, 224, 224)] (mcc compile --input-shape 1,3,224,224), one per input",
                       path=path)
    return tuple(torch.zeros(s) for s in shapes)
