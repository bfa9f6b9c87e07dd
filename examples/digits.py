"""Write the digits example's files (`python -m mcc.examples.digits FOLDER`): the zoo's trained digits classifier as
`digits.pt2`, its training split as `digits_train.npz` (`x` and integer `labels`, for `--finetune`), the first 128
training images as `digits_calib.npz` (for `--calib`) and the test split as `digits_test.npz` (`x`, `labels`).

Made on demand rather than bundled: scikit-learn ships the images, and the classifier trains in a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .zoo import digits_classifier, digits_split

CALIBRATION_SAMPLES = 128


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
