"""onnxruntime as the peer that mcc's runtime is compared against for ONNX files, as runtime.litert is for TFLite.

Kernel sets are graph optimization levels of the CPU execution provider: "ort-none" (ORT_DISABLE_ALL), "ort-basic",
"ort-extended" and "ort-all" (ORT_ENABLE_ALL, onnxruntime's default), since the level decides which kernels run
(at ORT_ENABLE_ALL QLinearConv becomes an NHWC com.microsoft kernel between Transposes). onnxruntime has no
option like LiteRT's experimental_preserve_all_tensors: a session with `keep_all` runs a copy of the model in
which every node output is also a graph output, the way onnx-graphsurgeon's users debug a model. onnxruntime is
imported only when called, so the runtime still installs where onnxruntime does not.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import require

LEVELS = {"ort-none": "ORT_DISABLE_ALL", "ort-basic": "ORT_ENABLE_BASIC", "ort-extended": "ORT_ENABLE_EXTENDED",
          "ort-all": "ORT_ENABLE_ALL"}


def expose_all(model: bytes) -> bytes:
    """The model with every node output of its main graph also a graph output, typed from its value_info (an
    output onnx has no type for is listed untyped, and onnxruntime infers it)."""
    m = onnx.load_from_string(model)
    g = m.graph
    typed = {vi.name: vi for vi in g.value_info}
    listed = {o.name for o in g.output}
    for node in g.node:
        for name in node.output:
            if name and name not in listed:
                g.output.append(typed.get(name) or onnx.helper.make_empty_tensor_value_info(name))
                listed.add(name)
    return m.SerializeToString(deterministic=True)


def make_session(model: bytes, kernels: str = "ort-all", keep_all: bool = False):
    """An onnxruntime CPU session at the optimization level `kernels` names; with keep_all, of expose_all(model)."""
    ort = require("onnxruntime", "ort", "comparing with onnxruntime")

    if kernels not in LEVELS:
        raise ValueError(f"unknown onnxruntime kernel set '{kernels}'; one of {tuple(LEVELS)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[kernels])
    options.log_severity_level = 3  # keep_all outputs defeat some fusions, which onnxruntime would warn about
    return ort.InferenceSession(expose_all(model) if keep_all else model, options,
                                providers=["CPUExecutionProvider"])


def run_ort(model: bytes, feeds: dict[str, np.ndarray], kernels: str = "ort-all", keep_all: bool = False,
            session=None) -> dict[str, np.ndarray]:
    """Outputs by name (with keep_all every node output by name) of one run on `feeds` (one model batch)."""
    session = session or make_session(model, kernels, keep_all)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {k: np.asarray(v, order="C") for k, v in feeds.items()})))


def version() -> str:
    return require("onnxruntime", "ort", "comparing with onnxruntime").__version__
