"""Reading user arrays (.npz by input name, or .npy for a single input) and matching them to a graph's inputs.

Users hold data in the source model's layout (NCHW for PyTorch) while an emitted TFLite model takes NHWC:
a 4-D array whose shape is the NCHW form of an NHWC input is transposed, and the match says so.

The files are read here rather than with np.load, which reads .npz members lazily (a damaged member then fails
wherever the array is first touched, with zipfile's or numpy's exception), returns a member that is not an array as
raw bytes, and allocates an array of the size its header claims before finding the data is not there. Each
member's header is checked against the bytes the member actually holds before any data is read, object arrays (a
pickle) and non-numeric dtypes are refused, and every failure names the file and the member.
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import MccError, describe_os_error

_NPY_MAGIC = b"\x93NUMPY"
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# What a damaged header makes numpy's parser raise (it evaluates the header text as a Python literal).
_BAD_HEADER = (ValueError, TypeError, SyntaxError, tokenize.TokenError, RecursionError)
# What zipfile raises on a damaged archive or member: a bad CRC is BadZipFile, a bad deflate stream zlib.error,
# an encrypted member RuntimeError, an unsupported method or zip version NotImplementedError, a damaged
# directory offset OSError or ValueError (a negative seek).
_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError, OSError,
            OverflowError)
_CHUNK = 1 << 20  # read in pieces that stay in cache: a zip member's read copies through one
NUMERIC = "biuf"   # numpy dtype kinds mcc feeds to models: bool, signed and unsigned integers, floats
_SAVE = "save the arrays again with numpy.savez (or numpy.save for one array)"


def read_arrays(path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file by name (a member `x.npy` is array `x`), or of a .npy file under the name ''."""
    path = Path(path)
    if not path.is_file():
        raise MccError("no such data file", path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if head == _NPY_MAGIC:
                f.seek(0)
                return {"": _read_npy(f, path.stat().st_size, path, None)}
    except OSError as e:
        raise MccError(describe_os_error(e), path=path) from None
    if head.startswith(b"PK"):
        return _read_npz(path)
    raise MccError(f"is not a .npz or .npy file (it starts with {head!r}); {_SAVE}", path=path)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except _BAD_ZIP as e:
        raise MccError(f"is a damaged .npz (zip) archive ({type(e).__name__}: {e}); {_SAVE}", path=path) from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name in arrays:
                raise MccError(f"holds two arrays named '{name}'; {_SAVE}", path=path)
            try:
                with archive.open(info) as f:
                    arrays[name] = _read_npy(f, info.file_size, path, info.filename)
            except _BAD_ZIP as e:
                raise MccError(f"member '{info.filename}' is damaged ({type(e).__name__}: {e}); {_SAVE}",
                               path=path) from None
    return arrays


def _read_npy(f, size: int, path: Path, member: str | None) -> np.ndarray:
    """One .npy stream of `size` bytes: header checked against the data it holds, then the data."""
    what = f"member '{member}'" if member is not None else "the array"
    if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise MccError(f"{what} is not a .npy array (no \\x93NUMPY header); {_SAVE}", path=path)
    version = tuple(f.read(2))
    if version not in _HEADERS:
        raise MccError(f"{what} is in .npy format version {'.'.join(map(str, version))}; mcc reads versions 1.0 and "
                       f"2.0 (what numpy writes for numeric arrays): {_SAVE}", path=path)
    try:
        shape, fortran, dtype = _HEADERS[version](f)
    except _BAD_HEADER as e:
        raise MccError(f"{what} has a damaged .npy header ({type(e).__name__}: {e}); {_SAVE}", path=path) from None
    if dtype.hasobject:
        raise MccError(f"{what} holds Python objects (dtype {dtype}), which only unpickling can read and mcc never "
                       "unpickles data: save numeric arrays", path=path)
    if dtype.kind not in NUMERIC or dtype.itemsize == 0:
        raise MccError(f"{what} has dtype {dtype}; mcc reads numeric arrays (bool, integer, float): convert it "
                       "before saving", path=path)
    if any(type(d) is not int or d < 0 for d in shape):   # numpy lets (True,) and (-1,) through
        raise MccError(f"{what} has the impossible shape {list(shape)}; {_SAVE}", path=path)
    needed, held = int(np.prod(shape, dtype=object)) * dtype.itemsize, size - f.tell()
    if needed != held:
        raise MccError(f"{what} is {dtype}{list(shape)}, {needed:,} bytes of data, but holds {held:,}: it is truncated "
                       f"or damaged; {_SAVE}", path=path)
    data = np.empty(needed, np.uint8)  # numpy's allocation (huge pages when large), filled in place, never joined
    got = 0
    while got < needed:
        n = f.readinto(data[got:got + _CHUNK])
        if not n:
            break
        got += n
    if got != needed or f.read(1):   # reading to the end also makes zipfile check the member's CRC
        raise MccError(f"{what} is {dtype}{list(shape)}, {needed:,} bytes of data, but {got:,} could be read: it is "
                       f"truncated or damaged; {_SAVE}", path=path)
    flat = data.view(dtype)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def match_inputs(arrays: dict[str, np.ndarray], inputs, path=None,
                 contiguous: bool = True) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map arrays to graph inputs (batch on axis 0, any batch size); returns (feeds, notes about transposes).
    With `contiguous=False` a transposed array is a view, for a caller that copies each batch where it runs
    (calibration_batches: 375 samples of 224x224 were 225 MB copied at once, where a batch's 0.6 MB stays in cache)."""
    if len(arrays) == 1 and len(inputs) == 1:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    missing = [t.name for t in inputs if t.name not in arrays]
    if missing:
        raise MccError(f"no array for model input(s) {missing}; the file has {sorted(arrays)}. "
                       f"Save one array per input, named after it", path=path)
    feeds, notes = {}, []
    for t in inputs:
        a = arrays[t.name]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in NUMERIC:
            found = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise MccError(f"array '{t.name}' is {found}; mcc feeds numeric arrays (bool, integer, float)", path=path)
        if a.ndim == len(t.shape) - 1:
            a = a[None]
        if a.ndim != len(t.shape):
            raise MccError(f"array '{t.name}' has shape {list(a.shape)}, the model expects {list(t.shape)} "
                           f"(batch first)", path=path)
        if tuple(a.shape[1:]) != tuple(t.shape[1:]):
            if t.layout == "NHWC" and tuple(a.shape[2:]) + (a.shape[1],) == tuple(t.shape[1:]):
                a = a.transpose(0, 2, 3, 1)
                a = np.ascontiguousarray(a) if contiguous else a
                notes.append(f"input '{t.name}' given as NCHW, transposed to the model's NHWC")
            else:
                raise MccError(f"array '{t.name}' has shape {list(a.shape)}, the model expects {list(t.shape)} "
                               f"(batch first)", path=path)
        if not np.issubdtype(a.dtype, np.floating) and t.dtype.startswith("float"):
            raise MccError(f"array '{t.name}' has dtype {a.dtype}, the model expects {t.dtype}", path=path)
        if a.ndim and not a.shape[0]:
            raise MccError(f"array '{t.name}' holds no samples (shape {list(a.shape)}); give at least one", path=path)
        feeds[t.name] = a.astype(t.dtype, copy=False)
    return feeds, notes


def run_in_batches(run, feeds: dict[str, np.ndarray], model_batch: int) -> dict[str, np.ndarray]:
    """Run `run(feeds) -> dict` on slices of `model_batch` samples and concatenate, so a model exported with
    batch 1 can be fed a whole data file."""
    n = len(next(iter(feeds.values()))) if feeds else 0
    if not n:
        raise MccError("there are no samples to run: the input arrays are empty")
    if any(len(v) != n for v in feeds.values()):
        raise MccError(f"input arrays differ in batch size: { {k: len(v) for k, v in feeds.items()} }")
    if n % model_batch:
        raise MccError(f"{n} samples do not split into batches of {model_batch}, the model's batch size")
    parts = [run({k: v[i:i + model_batch] for k, v in feeds.items()}) for i in range(0, n, model_batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
