"""Write the bundled examples (`python -m mcc.examples.build`): the zoo's MobileNetV2-style net as .pt2, sample
inputs for calibration and evaluation (`*_samples.npz`: `x`, batch first), and that net compiled to arm-int8.

They are committed so that the README's first command compiles a real file without any download, and so that a
base install (no torch) can run and validate a real int8 file; this script is how they were made, and remakes
them after the zoo or the compiler changes. torch.export records each node's stack trace with the
absolute paths of the machine that exported it; a committed file must not carry those, so they are dropped
(mcc then names the FX node where it would have named file:line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..compiler import compile_model
from .zoo import ZOO

BUNDLED = ("mobilenet_v2_style",)
SAMPLES = 64  # random normal inputs: calibration for the int8 file, and evaluation data for validate


def main(folder: Path = Path(__file__).parent) -> int:
    for name in BUNDLED:
        model, example = ZOO[name]()
        program = torch.export.export(model, (example,))
        for node in program.graph.nodes:
            node.meta.pop("stack_trace", None)
        path = folder / f"{name}.pt2"
        torch.export.save(program, path)
        samples = folder / f"{name}_samples.npz"
        rng = np.random.default_rng(0)
        np.savez_compressed(samples, x=rng.normal(size=(SAMPLES, *example.shape[1:])).astype(np.float16))
        int8 = folder / f"{name}_int8.tflite"
        compile_model(path, "arm-int8", int8, calib=samples)
        for p in (path, samples, int8):
            print(f"wrote {p} ({p.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
