"""The digits example: its files for the CLI, and the one set-up the accuracy tests and benchmarks share.

`python -m mcc.examples.digits FOLDER` writes the zoo's trained digits classifier as `digits.pt2`, its training
split as `digits_train.npz` (`x` and integer `labels`, for `--finetune`), the first 128 training images as
`digits_calib.npz` (for `--calib`) and the test split as `digits_test.npz` (`x`, `labels`). Made on demand rather
than bundled: scikit-learn ships the images, and the classifier trains in a second.

`digits_case(name)` gives a trained digits model (the classifier, or the ResNet on upsampled digits) loaded into
mcc's IR with its splits and calibration samples, and `litert_accuracy` scores an emitted .tflite on the test
split in LiteRT: the pruning test and bench_pruning measure through these, so they measure the same thing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .zoo import digits_classifier, digits_resnet, digits_split, digits_upsampled_split

CALIBRATION_SAMPLES = 128
MODELS = {"digits_classifier": (digits_classifier, digits_split),
          "digits_resnet": (digits_resnet, digits_upsampled_split)}


@dataclass
class DigitsCase:
    """A trained digits model, its IR (NCHW, as loaded from torch) and its data as numpy arrays."""

    model: torch.nn.Module
    example: torch.Tensor
    graph: object  # mcc.ir.Graph
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def calib(self) -> dict[str, np.ndarray]:
        return {"x": self.x_train[:CALIBRATION_SAMPLES]}


def digits_case(name: str) -> DigitsCase:
    """MODELS[name] trained (seeded: the same weights every run) and loaded with from_module."""
    from ..frontend.torch_export import from_module

    build, split_of = MODELS[name]
    model, example = build()
    split = split_of()
    return DigitsCase(model, example, from_module(model, (example,)), split.x_train.numpy(), split.y_train.numpy(),
                      split.x_test.numpy(), split.y_test.numpy())


def litert_accuracy(data: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a .tflite (NHWC input, float at its interface, int8 inside) in LiteRT with its default
    kernels (XNNPACK), one sample per invoke; x is NCHW, as the splits hold it."""
    from ..runtime.litert import make_interpreter

    interp = make_interpreter(data, "default")
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    if i["dtype"] != np.float32:
        raise ValueError(f"the model's input is {i['dtype']}, expected float32 (an int8 file with a float interface)")
    q = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    hits = 0
    for k in range(len(q)):
        interp.set_tensor(i["index"], q[k:k + 1])
        interp.invoke()
        hits += int(interp.get_tensor(o["index"]).argmax() == y[k])
    return hits / len(q)


def main(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    model, example = digits_classifier()
    torch.export.save(torch.export.export(model, (example,)), folder / "digits.pt2")
    split = digits_split()
    x_train, y_train = split.x_train.numpy(), split.y_train.numpy()
    np.savez(folder / "digits_train.npz", x=x_train, labels=y_train)
    np.savez(folder / "digits_calib.npz", x=x_train[:CALIBRATION_SAMPLES])
    np.savez(folder / "digits_test.npz", x=split.x_test.numpy(), labels=split.y_test.numpy())
    for name in ("digits.pt2", "digits_train.npz", "digits_calib.npz", "digits_test.npz"):
        print(f"wrote {folder / name} ({(folder / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m mcc.examples.digits FOLDER", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
