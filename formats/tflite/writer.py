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
from dataclasses import dataclass

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


@dataclass
class _TensorRecord:
    name: str
    shape: np.ndarray  # int32
    type: int
    buffer: int  # 0: no data
    quant: QuantParams | None


@dataclass
class _OperatorRecord:
    opcode: int
    inputs: np.ndarray  # int32 tensor indices, -1 for an omitted optional input
    outputs: np.ndarray
    options_type: int
    options: object  # a ...OptionsT of the schema's object API, or None


class _ModelBuilder:
    """Accumulates tensors, buffers and operator codes in first-use order, which makes the output deterministic."""

    def __init__(self, graph: Graph):
        self.tensors: list[_TensorRecord] = []
        self.index: dict[int, int] = {}
        self.buffers: list[bytes | None] = [None]  # buffer 0 is the empty one every tensor without data points at
        self.names = {t.name for t in graph.tensors()}
        self.opcodes: list[int] = []
        self.opcode_index: dict[int, int] = {}

    def _add(self, name: str, shape, dtype: str, quant: QuantParams | None, data: np.ndarray | None) -> int:
        if dtype not in DTYPE_TO_TFLITE:
            raise MccError(f"tensor '{name}' has dtype {dtype}, which TFLite cannot hold")
        buffer = 0
        if data is not None:
            buffer = len(self.buffers)
            self.buffers.append(np.ascontiguousarray(data, data.dtype.newbyteorder("<")).tobytes())
        self.tensors.append(_TensorRecord(name, np.asarray(shape, np.int32), DTYPE_TO_TFLITE[dtype], buffer, quant))
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
            self.opcode_index[code] = len(self.opcodes)
            self.opcodes.append(code)
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


# ---- serialization -------------------------------------------------------------------------------------------
# The tables go straight into a flatbuffers.Builder in the order the schema's object API (ModelT.Pack) packs them,
# so the bytes are the object API's (test_tflite_backend's test_writer_packs_tables_as_the_object_api; the 564
# files the tflite tests write came out byte-identical to the previous writer's). A ...T object per tensor and
# operator, packed with every slot, index lists prepended one element at a time and default-valued slots that
# flatbuffers then drops cost 1 to 2 ms of the 13.5 ms a MobileNetV2 took; the flatbuffers Builder's own calls are
# the rest. Builtin options stay on the object API: one small table per op.


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    """A vector of table offsets."""
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _tables(b: flatbuffers.Builder, items, write) -> int:
    return _offsets(b, [write(b, x) for x in items])


def _buffer(b: flatbuffers.Builder, raw: bytes | None) -> int:
    """A Buffer table; its bytes start on a 16-byte boundary (the object API would align them to 1)."""
    data = None
    if raw is not None:
        b.StartVector(1, len(raw), BUFFER_ALIGNMENT)
        b.head -= len(raw)
        b.Bytes[b.head:b.head + len(raw)] = raw
        data = b.EndVector()
    schema.BufferStart(b)
    if data is not None:
        schema.BufferAddData(b, data)
    return schema.BufferEnd(b)


def _quantization(b: flatbuffers.Builder, q: QuantParams) -> int:
    scale = b.CreateNumpyVector(np.asarray(q.scale, np.float32))
    zero_point = b.CreateNumpyVector(np.asarray(q.zero_point, np.int64))
    schema.QuantizationParametersStart(b)
    schema.QuantizationParametersAddScale(b, scale)
    schema.QuantizationParametersAddZeroPoint(b, zero_point)
    schema.QuantizationParametersAddQuantizedDimension(b, q.axis or 0)
    return schema.QuantizationParametersEnd(b)


def _tensor(b: flatbuffers.Builder, t: _TensorRecord) -> int:
    shape = b.CreateNumpyVector(t.shape)
    name = b.CreateString(t.name)
    quant = None if t.quant is None else _quantization(b, t.quant)
    schema.TensorStart(b)
    schema.TensorAddShape(b, shape)
    schema.TensorAddType(b, t.type)
    schema.TensorAddBuffer(b, t.buffer)
    schema.TensorAddName(b, name)
    if quant is not None:
        schema.TensorAddQuantization(b, quant)
    return schema.TensorEnd(b)


def _operator(b: flatbuffers.Builder, op: _OperatorRecord) -> int:
    inputs, outputs = b.CreateNumpyVector(op.inputs), b.CreateNumpyVector(op.outputs)
    options = None if op.options is None else op.options.Pack(b)
    schema.OperatorStart(b)
    schema.OperatorAddOpcodeIndex(b, op.opcode)
    schema.OperatorAddInputs(b, inputs)
    schema.OperatorAddOutputs(b, outputs)
    schema.OperatorAddBuiltinOptionsType(b, op.options_type)
    if options is not None:
        schema.OperatorAddBuiltinOptions(b, options)
    return schema.OperatorEnd(b)


def _operator_code(b: flatbuffers.Builder, code: int) -> int:
    schema.OperatorCodeStart(b)
    schema.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES))
    schema.OperatorCodeAddVersion(b, 1)  # every float kernel's first version; LiteRT resolves any version it registers
    schema.OperatorCodeAddBuiltinCode(b, code)
    return schema.OperatorCodeEnd(b)


def _subgraph(b: flatbuffers.Builder, name: str, mb: _ModelBuilder, inputs: np.ndarray, outputs: np.ndarray,
              operators: list[_OperatorRecord]) -> int:
    tensors = _tables(b, mb.tensors, _tensor)
    inputs, outputs = b.CreateNumpyVector(inputs), b.CreateNumpyVector(outputs)
    operators = _tables(b, operators, _operator)
    name = b.CreateString(name)
    schema.SubGraphStart(b)
    schema.SubGraphAddTensors(b, tensors)
    schema.SubGraphAddInputs(b, inputs)
    schema.SubGraphAddOutputs(b, outputs)
    schema.SubGraphAddOperators(b, operators)
    schema.SubGraphAddName(b, name)
    return schema.SubGraphEnd(b)


def _tensor_map(b: flatbuffers.Builder, entry: tuple[str, int]) -> int:
    name = b.CreateString(entry[0])
    schema.TensorMapStart(b)
    schema.TensorMapAddName(b, name)
    schema.TensorMapAddTensorIndex(b, entry[1])
    return schema.TensorMapEnd(b)


def _signature(b: flatbuffers.Builder, g: Graph, inputs: np.ndarray, outputs: np.ndarray) -> int:
    names = signature_names(g)
    inputs = _tables(b, [(names[t.name], int(i)) for t, i in zip(g.inputs, inputs)], _tensor_map)
    outputs = _tables(b, [(names[t.name], int(i)) for t, i in zip(g.outputs, outputs)], _tensor_map)
    key = b.CreateString(SIGNATURE_KEY)
    schema.SignatureDefStart(b)
    schema.SignatureDefAddInputs(b, inputs)
    schema.SignatureDefAddOutputs(b, outputs)
    schema.SignatureDefAddSignatureKey(b, key)
    schema.SignatureDefAddSubgraphIndex(b, 0)
    return schema.SignatureDefEnd(b)


def _metadata(b: flatbuffers.Builder, buffer: int) -> int:
    name = b.CreateString(METADATA_NAME)
    schema.MetadataStart(b)
    schema.MetadataAddName(b, name)
    schema.MetadataAddBuffer(b, buffer)
    return schema.MetadataEnd(b)


def write_tflite(graph: Graph, info: ModelInfo | None = None) -> bytes:
    """The TFLite flatbuffer of `graph` (NHWC, legal for TFLite), with its "serving_default" signature and, given
    `info`, TFLite Metadata and the label file packed after it; the same graph always gives the same bytes."""
    g = verified_copy(graph, "TFLite")
    mb = _ModelBuilder(g)
    inputs = np.array([mb.tensor(t) for t in g.inputs], np.int32)
    operators = []
    for node in g.nodes:
        m = mapping_for(node)
        fields, params = m.encode(node)
        opcode = mb.opcode(m.code)
        node_inputs = list(node.inputs)
        while node_inputs and node_inputs[-1] is None:
            node_inputs.pop()
        x_quant = node.inputs[0].quant
        constants = {k: mb.param(f"{node.name}/{k}", params[k], x_quant if k in m.like_input else None)
                     for k in m.leading + m.params}
        ir_inputs = [mb.tensor(t) for t in node_inputs]
        ir_inputs[:len(m.input_order)] = [ir_inputs[i] for i in m.input_order]
        op_inputs = [constants[k] for k in m.leading] + ir_inputs + [constants[k] for k in m.params]
        op_outputs = [mb.tensor(t) for t in node.outputs]
        operators.append(_OperatorRecord(opcode, np.array(op_inputs, np.int32), np.array(op_outputs, np.int32),
                                         *m.options_object(fields)))
    outputs = np.array([mb.tensor(t) for t in g.outputs], np.int32)

    description = f"mcc {__version__}"
    metadata = None
    if info is not None:
        metadata = len(mb.buffers)
        mb.buffers.append(metadata_buffer(g.name, description, g.inputs, g.outputs, signature_names(g), info))
    # Sized up front (the weights, 12 bytes per quantization scale and zero point, a generous 256 bytes per tensor
    # and operator): grown from 1 KB, the builder copied a 4 MB model through 12 doublings. The bytes do not depend
    # on it (flatbuffers aligns from the buffer's end).
    size = (sum(len(raw) + BUFFER_ALIGNMENT for raw in mb.buffers[1:]) + 4096
            + sum(12 * np.size(t.quant.scale) for t in mb.tensors if t.quant is not None)
            + 256 * (len(mb.tensors) + len(operators)))
    b = flatbuffers.Builder(size)
    # ModelT.Pack's order: operator codes, subgraphs, description, buffers, metadata, signatures, then the table
    codes = _tables(b, mb.opcodes, _operator_code)
    subgraphs = _offsets(b, [_subgraph(b, g.name, mb, inputs, outputs, operators)])
    description = b.CreateString(description)
    buffers = _tables(b, mb.buffers, _buffer)
    metadata = None if metadata is None else _offsets(b, [_metadata(b, metadata)])
    signatures = _offsets(b, [_signature(b, g, inputs, outputs)])
    schema.ModelStart(b)
    schema.ModelAddVersion(b, 3)
    schema.ModelAddOperatorCodes(b, codes)
    schema.ModelAddSubgraphs(b, subgraphs)
    schema.ModelAddDescription(b, description)
    schema.ModelAddBuffers(b, buffers)
    if metadata is not None:
        schema.ModelAddMetadata(b, metadata)
    schema.ModelAddSignatureDefs(b, signatures)
    b.Finish(schema.ModelEnd(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    if info is not None and info.labels:
        data = append_files(data, {info.labels_file: "".join(f"{n}\n" for n in info.labels).encode()})
    return data
