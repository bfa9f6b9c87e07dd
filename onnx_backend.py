"""mcc as an ONNX backend (onnx.backend.base.Backend): compile a ModelProto with mcc, run the file mcc EMITS.

    rep = MccBackend.prepare(model, "CPU", target="arm-fp32")    # or arm-int8 / x86-int8 with calib={...}
    outputs = rep.run([x])                                       # the source model's order, names and layout

onnxruntime's and onnx's reference backends run the ModelProto they are given; this one runs what mcc compiled it
to, in the peer that deploys it (LiteRT for .tflite targets, onnxruntime for .onnx targets), so onnx's backend
test suite measures the whole compiler: frontend, passes, writer, and the emitted file in a real runtime. Inputs
and outputs keep the source's layout (the compile report names each tensor's layout before and after the
`to_nhwc` pass) and dtype. A model mcc refuses raises MccError with mcc's message, naming the model instead of the
private temporary file the compiler read it from.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .compiler import CompileResult, compile_model
from .errors import MccError
from .targets import get_target


def _permutation(src: str | None, dst: str | None) -> tuple[int, ...] | None:
    """The axes that turn a tensor in layout `src` into layout `dst` (None when there is nothing to do)."""
    if not src or not dst or src == dst:
        return None
    return tuple(src.index(axis) for axis in dst)


class MccRep(BackendRep):
    """An emitted file ready to run: LiteRT (`kernels` "default" = XNNPACK or "ref") for TFLite, onnxruntime (at
    an optimization level of runtime.ort.LEVELS) for ONNX."""

    def __init__(self, result: CompileResult, target: str, kernels: str | None = None,
                 output_dtypes: list | None = None):
        self.result = result
        self.target = get_target(target)
        self.source_inputs = result.report["source"]["inputs"]
        self.source_outputs = result.report["source"]["outputs"]
        # what run returns: the source file's declared types where given (an ONNX int64 Shape is int32 or float in
        # mcc's IR), else the IR's view of the source
        self.output_dtypes = output_dtypes or [t["dtype"] for t in self.source_outputs]
        emitted = result.report["output"]
        self.emitted_inputs = {t["name"]: t for t in emitted["inputs"]}
        self.emitted_outputs = emitted["outputs"]   # the source's outputs, in order; a name may differ (an output
        # that is an input or a constant of the compiled graph takes that tensor's name)
        if len(self.emitted_outputs) != len(self.source_outputs):
            raise MccError(f"the compiled model has {len(self.emitted_outputs)} output(s), the source "
                           f"{len(self.source_outputs)}; cannot return the source's outputs")
        if self.target.backend == "tflite":
            from .runtime.litert import make_interpreter, run_litert

            interpreter = make_interpreter(result.data, kernels or "default")
            self._run = lambda feeds: run_litert(result.data, feeds, interpreter=interpreter)
        else:
            from .runtime.ort import make_session, run_ort

            session = make_session(result.data, kernels or "ort-all")
            self._run = lambda feeds: run_ort(result.data, feeds, session=session)

    def run(self, inputs, **kwargs):
        """`inputs`: a list in the source model's input order, or a dict by input name; arrays in the source's
        layout. Returns a namedtuple of the outputs by the source's names, in its layout and dtypes."""
        if isinstance(inputs, dict):
            inputs = [inputs[t["name"]] for t in self.source_inputs]
        if len(inputs) != len(self.source_inputs):
            raise MccError(f"the model has {len(self.source_inputs)} input(s) "
                           f"({', '.join(t['name'] for t in self.source_inputs)}), {len(inputs)} given")
        feeds = {}
        for src, value in zip(self.source_inputs, inputs):
            dst = self.emitted_inputs.get(src["name"])
            if dst is None:  # an input the compiled model does not read
                continue
            value = np.asarray(value)
            perm = _permutation(src["layout"], dst["layout"])
            feeds[src["name"]] = (value if perm is None else value.transpose(perm)).astype(dst["dtype"])
        produced = self._run(feeds)
        outputs = []
        for src, dst, dtype in zip(self.source_outputs, self.emitted_outputs, self.output_dtypes):
            value = produced[dst["name"]]
            perm = _permutation(dst["layout"], src["layout"])
            outputs.append((value if perm is None else value.transpose(perm)).astype(dtype))
        return namedtupledict("Outputs", [t["name"] for t in self.source_outputs])(*outputs)


class MccBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", target: str = "arm-fp32", calib=None,
                options: dict | None = None, kernels: str | None = None, **kwargs) -> MccRep:
        """Compile `model` for `target` (int8 targets take `calib`: arrays by input name, batch first, in the
        source's layout; `options` are pass options as for compile_model) and return the emitted file ready to
        run. The model goes through a private temporary folder, since mcc's ONNX reader takes a path (external
        data resolves beside it); nothing is left behind."""
        if not cls.supports_device(device):
            raise MccError(f"device '{device}': mcc's emitted files run on the CPU; pass device='CPU'")
        if (options or {}).get("io") == "int8":
            raise MccError("the ONNX backend feeds and returns the source model's float tensors; compile without "
                           "io='int8'")
        name = model.graph.name or "model"
        with tempfile.TemporaryDirectory(prefix="mcc-backend-") as folder:
            path = Path(folder) / "model.onnx"
            path.write_bytes(model.SerializeToString())
            try:
                result = compile_model(path, target, calib=calib, options=options)
            except MccError as e:
                message = str(e).removeprefix(f"{e.path}: ") if e.path else str(e)
                raise MccError(message.replace(str(path), name), path=f"ONNX model '{name}'") from None
        declared = [onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)
                    if o.type.tensor_type.elem_type else None for o in model.graph.output]
        return MccRep(result, target, kernels, None if None in declared else declared)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.split(":")[0].upper() == "CPU"


prepare = MccBackend.prepare
run_model = MccBackend.run_model
supports_device = MccBackend.supports_device
