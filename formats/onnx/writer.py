"""Write an NCHW IR graph (after the to_nchw and legalize_onnx passes) as an ONNX model, float or int8.

A float graph becomes plain ONNX (opset 21). An int8 graph becomes the form that onnxruntime executes in integer
arithmetic: QOperator ops (QLinearConv; com.microsoft QGemm, QLinearAdd, QLinearMul, QLinearAveragePool,
QLinearGlobalAveragePool, QLinearSoftmax), int8 data movement (MaxPool, Pad, Concat, Reshape, Transpose, Min,
Max), int8 Clip for fused activations, and 256-entry lookup tables for the activations onnxruntime has no integer
kernel for (formats.onnx.opmap). Every int8 tensor also carries its scale and zero point in the graph's
`quantization_annotation`, the place ONNX defines for them, so the readback (formats.onnx.reader) restores the
IR's quantization exactly; the scale and zero-point initializers are shared by value, so an annotation never names
an initializer that no operator reads.

Measured with onnxruntime 1.32.0 on this x86-64 host (CPU provider): each form built as a one-operator model,
run at ORT_DISABLE_ALL / ORT_ENABLE_BASIC / ORT_ENABLE_EXTENDED / ORT_ENABLE_ALL, with the kernels that actually
ran read from sess_options.optimized_model_filepath (int8 activations, per-channel int8 weights throughout):

| form | what runs at DISABLE_ALL, BASIC, EXTENDED, ALL |
|---|---|
| QLinearConv (also grouped, depthwise) | QLinearConv; at ALL, com.microsoft QLinearConv (NHWC) between Transposes |
| QDQ int8: DQ -> Conv -> Q | DQ, float Conv, Q at every level: never fused, never integer |
| QDQ, uint8 activations | float at DISABLE_ALL and BASIC; QLinearConv from EXTENDED on |
| com.microsoft QGemm (transB=1, int32 C) | QGemm at every level |
| QDQ int8 Gemm | float at DISABLE_ALL and BASIC; QGemm from EXTENDED on |
| QLinearMatMul | QLinearMatMul at every level, but it has no bias input |
| com.microsoft QLinearAdd, QLinearMul, QLinearAveragePool, QLinearGlobalAveragePool | as written, every level |
| com.microsoft QLinearSoftmax, QLinearSigmoid, QLinearLeakyRelu, QLinearConcat | as written, every level |
| int8 MaxPool, Pad, Clip, Concat, Min, Reshape, Transpose | as written (MaxPool: NhwcMaxPool at ALL) |
| Cast(int8 -> int32) + Gather(int8[256]) in an ai.mcc function | inlined, then as written; a negative index wraps |

So the QOperator form is integer at every optimization level, while QDQ with int8 activations is not fused on x86
(DESIGN.md §2) and QDQ in general only from EXTENDED on: mcc writes QOperator. With power-of-two scales that put
367 of 1,600 products exactly on .5, QLinearConv and QGemm give clip(rint(float32(acc) * float32(s_x * s_w / s_y))
+ zp_y), ties to even, in all 1,600 elements at every level (ties away from zero would differ in those 367). There is
no integer Sub: an int8 sub becomes a float island in legalize_onnx, as does an int8 mean over leading axes.
QLinearConv has no fused activation, and relu6 is not a choice of output range (the range must contain the
quantized 0 and is fixed by calibration): a fused relu / relu6 / relu_n1_to_1 becomes an int8 Clip to the bounds
TFLite clamps to, zp + round(bound / s) ties away from zero, written only when they are narrower than
[-128, 127] (a relu whose output zero point is -128 needs none), so the clamp is the one arm-int8 applies.

On the zoo (tests/test_onnx_backend.py: two inputs each, at DISABLE_ALL and ALL), every operator of an x86-int8
file, fed onnxruntime's own values of its inputs, is within 1 of mcc's runtime under LiteRT's reference rules:
conv2d / depthwise_conv2d differ in 0.1-0.35% of elements (gemmlowp double rounding vs float32 ties to even), mean
in 10-16% (TFLite folds 1/n into its multiplier), mul in 0.2%, and add, fully_connected, quantize, the tables and
data movement in none. End to end the int8 logits differ by up to 6 codes in 3/4 of the elements, as one step
here and there propagates; exactness against onnxruntime is the job of an onnxruntime rule set in the runtime.

onnxruntime's quantizer (onnxruntime.quantization) rewrites a float ONNX model by inserting QDQ pairs or QOperator
nodes from its own calibration, and tf2onnx translates a TFLite int8 model op by op through QDQ. mcc writes the
already quantized IR: the integers (weights, biases, scales, zero points) are the ones the arm-int8 TFLite file
holds, only permuted to NCHW by the to_nchw pass, and the same graph always gives the same bytes.

The model says who wrote it (producer_name "mcc", producer_version, a doc_string naming its inputs and outputs) and,
given a ModelInfo, the input normalization and the labels in metadata_props (ONNX has no schema for them, unlike
TFLite Metadata): "mcc.normalization" as JSON, "mcc.labels" as one label per line, "mcc.labels_output" naming the
output they annotate. onnxruntime returns them from InferenceSession.get_modelmeta().custom_metadata_map.
"""

from __future__ import annotations

import json

import numpy as np
from onnx import TensorAnnotation, helper, numpy_helper

from ... import __version__
from ...errors import MccError
from ...ir import Graph, Node, QuantParams, Tensor
from ...ir.names import claim_unique
from .. import FormatArithmetic, verified_copy
from ..model_info import ModelInfo
from .opmap import (DTYPE_TO_ONNX, IR_VERSION, MCC_DOMAIN, MS_DOMAIN, OPSET, TABLE_OPS, TABLE_RULES,
                         is_int8, mapping_for, table_op)

FUNCTION_INPUTS = ["x", "x_scale", "x_zero_point", "y_scale", "y_zero_point", "table"]


def _per_tensor(q: QuantParams | None) -> bool:
    return q is not None and q.axis is None and q.scale.size == 1


def _function(op: str):
    """The ai.mcc function of a table op: y = table[int32(x)], with the quantization parameters as inputs (unread
    by the body, but they say what the table maps) and the IR op's attributes as function attributes."""
    body = [helper.make_node("Cast", ["x"], ["index"], to=DTYPE_TO_ONNX["int32"]),
            helper.make_node("Gather", ["table", "index"], ["y"], axis=0)]
    doc = (f"int8 {op} as a 256-entry lookup table, computed by mcc with the {TABLE_RULES} arithmetic from the "
           "input and output scales and zero points")
    return helper.make_function(MCC_DOMAIN, op, FUNCTION_INPUTS, ["y"], body, [helper.make_opsetid("", OPSET)],
                                attributes=list(TABLE_OPS[op]), doc_string=doc)


class _Writer:
    """Implements opmap.Emit. Initializers, value infos, annotations and functions accumulate in first-use order,
    which makes the output deterministic."""

    def __init__(self, graph: Graph, arithmetic: FormatArithmetic, info: ModelInfo | None):
        self.g, self.arithmetic, self.info = graph, arithmetic, info
        self.taken = {t.name for t in graph.tensors()}
        self.interface = {t.name for t in graph.inputs + graph.outputs}
        self.initializers: list = []
        self.constants: dict[int, str] = {}
        self.shared: dict[tuple, tuple[str, str]] = {}
        self.value_info: dict[str, tuple[str, tuple]] = {}
        self.annotations: dict[str, tuple[str, str]] = {}
        self.nodes: list = []
        self.domains: set = set()
        self.functions: dict[str, object] = {}

    def _unique(self, base: str) -> str:
        return claim_unique(self.taken, base)

    def _initializer(self, name: str, data: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(data, order="C"), name))
        return name

    # ---- opmap.Emit ---------------------------------------------------------------------------------
    def name(self, t: Tensor) -> str:
        if t.dtype not in DTYPE_TO_ONNX:
            raise MccError(f"tensor '{t.name}' has dtype {t.dtype}, which ONNX cannot hold")
        if t.is_constant:
            if id(t) not in self.constants:
                self.constants[id(t)] = self._initializer(t.name, t.data)
        elif t.name not in self.interface:
            self.value_info.setdefault(t.name, (t.dtype, t.shape))
        if _per_tensor(t.quant) and t.name not in self.annotations:
            self.annotations[t.name] = self.qparams(t)
        return t.name

    def param(self, base: str, data: np.ndarray) -> str:
        return self._initializer(self._unique(base), data)

    def qparams(self, t: Tensor) -> tuple[str, str]:
        q = t.quant
        if q is None:
            raise MccError(f"int8 tensor '{t.name}' has no quantization parameters; run the quantize_int8 pass")
        shape = () if q.axis is None and q.scale.size == 1 else (-1,)
        scale = q.scale.astype(np.float32).reshape(shape)
        zero_point = q.zero_point.astype(t.dtype).reshape(shape)
        key = (scale.shape, scale.tobytes(), zero_point.dtype.str, zero_point.tobytes())
        if key not in self.shared:
            self.shared[key] = (self.param(f"{t.name}/scale", scale), self.param(f"{t.name}/zero_point", zero_point))
        return self.shared[key]

    def temp(self, like: Tensor, base: str) -> str:
        name = self._unique(base)
        self.value_info[name] = (like.dtype, like.shape)
        if _per_tensor(like.quant):
            self.annotations[name] = self.qparams(like)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs) -> None:
        self.domains.add(domain)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, domain=domain, **attrs))

    def table(self, node: Node) -> str:
        op = table_op(node)
        if op not in self.functions:
            self.functions[op] = _function(op)
        return self.param(f"{node.name}/table", self.arithmetic.lookup_table(node))

    def activation_bounds(self, op: str, activation: str | None, q: QuantParams) -> tuple[int, int]:
        return self.arithmetic.activation_bounds(op, activation, q)

    # ---- the model ---------------------------------------------------------------------------------------
    def model(self):
        def info(name, dtype, shape):
            return helper.make_tensor_value_info(name, DTYPE_TO_ONNX[dtype], list(shape))

        graph = helper.make_graph(
            self.nodes, self.g.name, [info(t.name, t.dtype, t.shape) for t in self.g.inputs],
            [info(t.name, t.dtype, t.shape) for t in self.g.outputs], self.initializers,
            value_info=[info(n, dt, s) for n, (dt, s) in self.value_info.items()])
        for name, (scale, zero_point) in self.annotations.items():
            a = TensorAnnotation(tensor_name=name)
            for key, value in (("SCALE_TENSOR", scale), ("ZERO_POINT_TENSOR", zero_point)):
                a.quant_parameter_tensor_names.add(key=key, value=value)
            graph.quantization_annotation.append(a)
        opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, 1) for d in (MS_DOMAIN, MCC_DOMAIN)
                                                      if d in self.domains]
        model = helper.make_model(graph, opset_imports=opsets, functions=list(self.functions.values()),
                                  producer_name="mcc", producer_version=__version__, ir_version=IR_VERSION,
                                  doc_string=self.doc_string())
        helper.set_model_props(model, self.props())
        return model

    def doc_string(self) -> str:
        def io(tensors):
            return ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in tensors)

        return f"'{self.g.name}' written by mcc {__version__}; inputs {io(self.g.inputs)}; outputs {io(self.g.outputs)}"

    def props(self) -> dict[str, str]:
        props = {"mcc.table_rules": TABLE_RULES} if any(is_int8(n) for n in self.g.nodes) else {}
        info = self.info
        if info is not None and info.mean:
            props["mcc.normalization"] = json.dumps({"input": info.input_name, "mean": list(info.mean),
                                                     "std": list(info.std), "channel_axis": 1,
                                                     "formula": "(x - mean) / std"})
        if info is not None and info.labels:
            props["mcc.labels_output"] = info.output_name
            props["mcc.labels"] = "".join(f"{n}\n" for n in info.labels)
        return props


def write_onnx(graph: Graph, arithmetic: FormatArithmetic, info: ModelInfo | None = None) -> bytes:
    """The ONNX model of `graph` (NCHW, legal for ONNX); the same graph always gives the same bytes. `arithmetic`
    computes the int8 lookup tables and fused-activation bounds with TABLE_RULES (runtime/format_arithmetic.py)."""
    g = verified_copy(graph, "ONNX")
    nhwc = next((t.name for t in g.tensors() if t.layout == "NHWC"), None)
    if nhwc is not None:
        raise MccError(f"tensor '{nhwc}' is NHWC, but ONNX's spatial operators read NCHW; run the to_nchw pass "
                       "first (the x86 targets do)")
    w = _Writer(g, arithmetic, info)
    for t in g.inputs:
        w.name(t)
    for node in g.nodes:
        mapping_for(node).encode(w, node)
    for t in g.outputs:
        w.name(t)
    return w.model().SerializeToString(deterministic=True)
