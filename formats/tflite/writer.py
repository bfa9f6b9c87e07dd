"""Write an NHWC IR graph, made legal by the legalize_tflite pass, as a TFLite flatbuffer.

The TensorFlow converter lowers a TF/JAX graph through MLIR's TFL dialect, legalizes and optimizes there, then
serializes. mcc has already done all of that on its own IR, so the writer is a plain serializer over one
shared table (opmap): every tensor keeps its IR name, nothing is optimized behind the user's back, and
anything the table cannot express is refused with the IR node's name instead of being silently rewritten.

Every file carries a SignatureDef "serving_default" mapping the model's input and output names to their tensors, as
the TF converter's and litert-torch's files do: LiteRT's signature runner, Android's Interpreter.runSignature and
ai-edge-quantizer address a model through it. The names are the source model's (a TFLite source's own signature
names, which the reader records in graph.origin; otherwise the tensor names without a ':0' style suffix), where the
TF converter uses the SavedModel signature's and litert-torch the forward()'s argument names ("args_0", ...).
"""

from __future__ import annotations

import re

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ... import __version__
from ...errors import MccError
from ...ir import Graph, QuantParams, Tensor
from .. import verified_copy
from ..model_info import ModelInfo
from .metadata import METADATA_NAME, append_files, metadata_buffer
from .opmap import DTYPE_TO_TFLITE, mapping_for

SIGNATURE_KEY = "serving_default"  # the key the TF converter and litert-torch give a model's one signature

BUFFER_ALIGNMENT = 16  # what the TFLite converter uses, so weights can be read in place from an mmap


class _AlignedBuffer(schema.BufferT):
    """A buffer whose bytes start on a 16-byte boundary (the object API would align them to 1)."""

    def __init__(self, raw: bytes):
        super().__init__()
        self.raw = raw

    def Pack(self, builder: flatbuffers.Builder):
        builder.StartVector(1, len(self.raw), BUFFER_ALIGNMENT)
        builder.head -= len(self.raw)
        builder.Bytes[builder.head:builder.head + len(self.raw)] = self.raw
        data = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def _quantization(q: QuantParams) -> schema.QuantizationParametersT:
    qp = schema.QuantizationParametersT()
    qp.scale = np.asarray(q.scale, np.float32)
    qp.zeroPoint = np.asarray(q.zero_point, np.int64)
    qp.quantizedDimension = q.axis or 0
    return qp


class _ModelBuilder:
    """Accumulates tensors, buffers and operator codes in first-use order, which makes the output deterministic."""

    def __init__(self, graph: Graph):
        self.tensors: list[schema.TensorT] = []
        self.index: dict[int, int] = {}
        self.buffers: list[schema.BufferT] = [schema.BufferT()]
        self.names = {t.name for t in graph.tensors()}
        self.opcodes: list[schema.OperatorCodeT] = []
        self.opcode_index: dict[int, int] = {}

    def _add(self, name: str, shape, dtype: str, quant: QuantParams | None, data: np.ndarray | None) -> int:
        if dtype not in DTYPE_TO_TFLITE:
            raise MccError(f"tensor '{name}' has dtype {dtype}, which TFLite cannot hold")
        t = schema.TensorT()
        t.name = name
        t.shape = np.asarray(shape, np.int32)
        t.type = DTYPE_TO_TFLITE[dtype]
        if quant is not None:
            t.quantization = _quantization(quant)
        if data is not None:
            t.buffer = len(self.buffers)
            self.buffers.append(_AlignedBuffer(np.ascontiguousarray(data, data.dtype.newbyteorder("<")).tobytes()))
        self.tensors.append(t)
        return len(self.tensors) - 1

    def tensor(self, t: Tensor | None) -> int:
        if t is None:
            return -1
        if id(t) not in self.index:
            self.index[id(t)] = self._add(t.name, t.shape, t.dtype, t.quant, t.data)
        return self.index[id(t)]

    def param(self, base: str, data: np.ndarray, quant: QuantParams | None) -> int:
        """A constant parameter input (axes, shape, perm, paddings) that the IR keeps as an attribute."""
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return self._add(name, data.shape, str(data.dtype), quant, data)

    def opcode(self, code: int) -> int:
        if code not in self.opcode_index:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = 1  # every float kernel's first version; LiteRT resolves any version it registers
            self.opcode_index[code] = len(self.opcodes)
            self.opcodes.append(oc)
        return self.opcode_index[code]


def signature_names(graph: Graph) -> dict[str, str]:
    """{tensor name: signature name} of the graph's inputs and outputs: the names the source model's users know
    (recorded by the TFLite reader under origin["signature"]), else the tensor name without a ':N' suffix where
    that stays unique among the inputs, and among the outputs."""
    recorded = graph.origin.get("signature", {})
    names = {}
    for tensors in (graph.inputs, graph.outputs):
        wanted = [recorded.get(t.name, re.sub(r":\d+$", "", t.name)) for t in tensors]
        for t, name in zip(tensors, wanted):
            names[t.name] = name if wanted.count(name) == 1 else t.name
    return names


def _signature(g: Graph, sub: schema.SubGraphT) -> schema.SignatureDefT:
    names = signature_names(g)

    def tensor_maps(tensors, indices):
        maps = []
        for t, i in zip(tensors, indices):
            m = schema.TensorMapT()
            m.name, m.tensorIndex = names[t.name], i
            maps.append(m)
        return maps

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs, sig.outputs = tensor_maps(g.inputs, sub.inputs), tensor_maps(g.outputs, sub.outputs)
    return sig


def write_tflite(graph: Graph, info: ModelInfo | None = None) -> bytes:
    """The TFLite flatbuffer of `graph` (NHWC, legal for TFLite), with its "serving_default" signature and, given
    `info`, TFLite Metadata and the label file packed after it; the same graph always gives the same bytes."""
    g = verified_copy(graph, "TFLite")
    mb = _ModelBuilder(g)
    sub = schema.SubGraphT()
    sub.name = g.name
    sub.inputs = [mb.tensor(t) for t in g.inputs]
    sub.operators = []
    for node in g.nodes:
        m = mapping_for(node)
        fields, params = m.encode(node)
        op = schema.OperatorT()
        op.opcodeIndex = mb.opcode(m.code)
        inputs = list(node.inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        x_quant = node.inputs[0].quant
        constants = {k: mb.param(f"{node.name}/{k}", params[k], x_quant if k in m.like_input else None)
                     for k in m.leading + m.params}
        ir_inputs = [mb.tensor(t) for t in inputs]
        ir_inputs[:len(m.input_order)] = [ir_inputs[i] for i in m.input_order]
        op.inputs = [constants[k] for k in m.leading] + ir_inputs + [constants[k] for k in m.params]
        op.outputs = [mb.tensor(t) for t in node.outputs]
        op.builtinOptionsType, op.builtinOptions = m.options_object(fields)
        sub.operators.append(op)
    sub.outputs = [mb.tensor(t) for t in g.outputs]
    sub.tensors = mb.tensors

    model = schema.ModelT()
    model.version = 3
    model.description = f"mcc {__version__}"
    model.operatorCodes = mb.opcodes
    model.subgraphs = [sub]
    model.signatureDefs = [_signature(g, sub)]
    if info is not None:
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(mb.buffers)
        mb.buffers.append(_AlignedBuffer(metadata_buffer(g.name, model.description, g.inputs, g.outputs,
                                                         signature_names(g), info)))
        model.metadata = [entry]
    model.buffers = mb.buffers
    # Sized up front (the weights, 12 bytes per quantization scale and zero point, a generous 256 bytes per tensor
    # and operator): grown from 1 KB, the builder copied a 4 MB model through 12 doublings. The bytes do not depend
    # on it (flatbuffers aligns from the buffer's end).
    size = (sum(len(b.raw) + BUFFER_ALIGNMENT for b in mb.buffers[1:]) + 4096
            + sum(12 * len(t.quantization.scale) for t in mb.tensors if t.quantization is not None)
            + 256 * (len(mb.tensors) + len(sub.operators)))
    builder = flatbuffers.Builder(size)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    if info is not None and info.labels:
        data = append_files(data, {info.labels_file: "".join(f"{n}\n" for n in info.labels).encode()})
    return data
