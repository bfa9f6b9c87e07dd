"""Reading user arrays (.npz by input name, or .npy for a single input) and matching them to a graph's inputs.

Users hold data in the source model's layout (NCHW for PyTorch) while an emitted TFLite model takes NHWC:
a 4-D array whose shape is the NCHW form of an NHWC input is transposed, and the match says so.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import MccError


def read_arrays(path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise MccError("no such data file", path=path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise MccError(f"not a readable .npz/.npy file ({e}); save arrays with numpy.savez or numpy.save", path=path) from None
    if isinstance(loaded, np.ndarray):
        return {"": loaded}
    with loaded:
        return {k: loaded[k] for k in loaded.files}


def match_inputs(arrays: dict[str, np.ndarray], inputs, path=None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map arrays to graph inputs (batch on axis 0, any batch size); returns (feeds, notes about transposes)."""
    if len(arrays) == 1 and len(inputs) == 1:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    missing = [t.name for t in inputs if t.name not in arrays]
    if missing:
        raise MccError(f"no array for model input(s) {missing}; the file has {sorted(arrays)}. "
                       f"Save one array per input, named after it", path=path)
    feeds, notes = {}, []
    for t in inputs:
        a = arrays[t.name]
        if a.ndim == len(t.shape) - 1:
            a = a[None]
        if a.ndim != len(t.shape):
            raise MccError(f"array '{t.name}' has shape {list(a.shape)}, the model expects {list(t.shape)} "
                           f"(batch first)", path=path)
        if tuple(a.shape[1:]) != tuple(t.shape[1:]):
            if t.layout == "NHWC" and tuple(a.shape[2:]) + (a.shape[1],) == tuple(t.shape[1:]):
                a = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
                notes.append(f"input '{t.name}' given as NCHW, transposed to the model's NHWC")
            else:
                raise MccError(f"array '{t.name}' has shape {list(a.shape)}, the model expects {list(t.shape)} "
                               f"(batch first)", path=path)
        if not np.issubdtype(a.dtype, np.floating) and t.dtype.startswith("float"):
            raise MccError(f"array '{t.name}' has dtype {a.dtype}, the model expects {t.dtype}", path=path)
        feeds[t.name] = a.astype(t.dtype, copy=False)
    return feeds, notes


def run_in_batches(run, feeds: dict[str, np.ndarray], model_batch: int) -> dict[str, np.ndarray]:
    """Run `run(feeds) -> dict` on slices of `model_batch` samples and concatenate, so a model exported with
    batch 1 can be fed a whole data file."""
    n = len(next(iter(feeds.values())))
    if any(len(v) != n for v in feeds.values()):
        raise MccError(f"input arrays differ in batch size: { {k: len(v) for k, v in feeds.items()} }")
    if n % model_batch:
        raise MccError(f"{n} samples do not split into batches of {model_batch}, the model's batch size")
    parts = [run({k: v[i:i + model_batch] for k, v in feeds.items()}) for i in range(0, n, model_batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
