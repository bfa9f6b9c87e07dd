"""Writing outputs so that a failure never leaves a half-written file: temporary file in the same folder, then rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import MccError


def check_output_path(path) -> Path:
    """Fail before any work if the output cannot be written (missing folder, a folder in the way)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MccError(f"the output folder '{parent}' does not exist; create it first or choose another -o path",
                       path=path)
    if path.is_dir():
        raise MccError("the output path is a folder; give a file name", path=path)
    return path


def write_atomic(path, data: bytes) -> None:
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the permissions open() would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
