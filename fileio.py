"""Writing outputs so that a failure never leaves a half-written file: temporary file in the same folder, then rename.

The temporary file has a short name of its own (`.mcc-XXXXXXXX.tmp`), so any output name the file system
accepts can be written; every OSError on the way is reported against the output path the user gave.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .errors import MccError, describe_os_error


def check_output_path(path) -> Path:
    """Fail before any work if the output cannot be written (missing folder, a folder in the way)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MccError(f"the output folder '{parent}' does not exist; create it first or choose another -o path",
                       path=path)
    if path.is_dir():
        raise MccError("the output path is a folder; give a file name", path=path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MccError(f"the output folder '{parent}' is not writable (permission denied); choose another -o path",
                       path=path)
    try:
        too_long = len(os.fsencode(path.name)) > os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        too_long = False
    if too_long:
        raise MccError("the output file name is too long for the file system; choose a shorter name", path=path)
    return path


def write_atomic(path, data: bytes) -> None:
    path = check_output_path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mcc-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the permissions open() would give
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise MccError(f"could not be written: {describe_os_error(_without_names(e))}", path=path) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def _without_names(e: OSError) -> OSError:
    """The error without the temporary file's name: the user knows the output only by its own name."""
    return OSError(e.errno, e.strerror)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256_soon(path) -> Callable[[], str]:
    """A function returning the sha256 of the file at `path`, which a thread computes meanwhile: compile_model
    hashes its source while loading it (a 14 MB ONNX file read and hashed took 10 ms of a 10-sample compile; file
    reads and hashlib release the GIL, and loading leaves the second core idle). Errors are raised by the call."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(lambda: sha256(Path(path).read_bytes()))
    pool.shutdown(wait=False)
    return future.result
