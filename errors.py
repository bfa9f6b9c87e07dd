"""The one error type a user sees: a message that names the file, node or op and what to do.

The CLI prints it as one paragraph and exits with `exit_code` (2 for bad input), so every layer raises
MccError instead of letting a library's traceback reach the user.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile
import traceback
import warnings
from contextlib import contextmanager


class MccError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, path=None, node=None):
        self.path = str(path) if path is not None else None
        self.node = node
        prefix = f"{self.path}: " if self.path else ""
        where = f"node '{node}': " if node else ""
        super().__init__(prefix + where + message)


class FidelityError(MccError):
    """The input was fine, the result is not: an int8 output below --min-sqnr (exit 1, as a failed validation)."""

    exit_code = 1


_OS_ADVICE = {
    errno.EACCES: "permission denied: check the file's and its folder's permissions",
    errno.EPERM: "operation not permitted: check the file's and its folder's permissions",
    errno.ENAMETOOLONG: "the file name is too long for the file system: choose a shorter name",
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EISDIR: "is a folder where a file is expected",
    errno.ENOTDIR: "a part of the path is a file where a folder is expected",
    errno.ENOENT: "no such file or folder",
    errno.ELOOP: "too many levels of symbolic links",
}


def describe_os_error(e: OSError) -> str:
    """One line naming the file and what the operating system refused, with what to do."""
    what = _OS_ADVICE.get(e.errno, e.strerror or type(e).__name__)
    names = [n for n in (e.filename, e.filename2) if n is not None]
    where = " -> ".join(str(n) for n in names)
    return f"{where}: {what}" if where else what


@contextmanager
def quiet_libraries():
    """Keep torch's, onnx's and numpy's log records and warnings off stderr while mcc works: a damaged archive
    makes torch log a whole traceback before mcc's own one-line message, which is the one that says what to do."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnx", "onnxscript", "onnx_ir", "numba")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def save_traceback() -> str:
    """Write the current exception's traceback (and mcc's version and command line) to a file; its path."""
    from . import __version__

    fd, path = tempfile.mkstemp(prefix="mcc-internal-error-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"mcc {__version__}, python {sys.version.split()[0]}\ncommand: {' '.join(sys.argv)}\n\n")
        f.write(traceback.format_exc())
    return path


_BOILERPLATE = ("Original traceback", "Use tlparse", "While executing", "For more information", "from user code",
                "Set TORCH_LOGS", "Exception raised from", "frame #")


def summarize(e: BaseException, limit: int = 300) -> str:
    """`Type: first line` of a library's exception, for inside an MccError: torch's messages run to dozens of lines
    of C++ frames and logging advice, and mcc's errors are one paragraph."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(_BOILERPLATE)]
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def require(module: str, extra: str, purpose: str):
    """Import optional dependency `module`, or an MccError saying which extra installs it: the base install runs,
    reads and validates compiled files without torch or onnxruntime (a Raspberry Pi needs neither)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MccError(f"{purpose} needs {module}, which this installation lacks: pip install 'mcc[{extra}]' "
                       "(or 'mcc[all]')") from None
