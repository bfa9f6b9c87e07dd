"""Read a TorchScript archive (torch.jit.save) by converting it to a torch.export program.

TorchScript is torch's older, deprecated graph format; torch ships a converter to ExportedProgram
(torch._export.converter.TS2EPConverter), so mcc lowers both formats through one path instead of keeping a
second translator for TorchScript's own IR. The archive records no input shapes, so the user supplies them.
"""

from __future__ import annotations

from ..errors import MccError, summarize
from ..ir import Graph


def load_torchscript(path, input_shapes: list[tuple[int, ...]] | None) -> Graph:
    import torch
    from torch._export.converter import TS2EPConverter

    from .torch_export import example_inputs, lower, quiet_torch

    inputs = example_inputs(input_shapes, path=path, kind="TorchScript archive")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError subclasses with C++ messages; the user needs one message
        raise MccError(f"could not be read as a TorchScript archive ({summarize(e)})", path=path) from e
    try:
        with quiet_torch():
            converted = TS2EPConverter(module, inputs).convert()
            ep = torch.export.export(converted.module(), inputs)  # re-exported for the static shapes mcc compiles
    except Exception as e:
        raise MccError(f"TorchScript to torch.export conversion failed with input_shapes={input_shapes} "
                       f"({summarize(e)}); check the shapes, or save the model with torch.export.save",
                       path=path) from e
    names = [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
    return lower(ep, name=path.stem, path=path, input_names=names)
