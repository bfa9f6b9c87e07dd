"""LiteRT, the TFLite interpreter, as the peer that mcc's runtime is compared against.

Kernel sets (DESIGN.md §2): "ref" is OpResolverType.BUILTIN_REF (TFLite's reference kernels), "default" is the
default resolver with the XNNPACK delegate. LiteRT is imported only when called, so the runtime still installs
where LiteRT does not.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np

KERNELS = ("ref", "default")


def make_interpreter(model: bytes, kernels: str = "ref", keep_all: bool = False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if kernels not in KERNELS:
        raise ValueError(f"unknown LiteRT kernel set '{kernels}'; one of {KERNELS}")
    resolver = OpResolverType.BUILTIN_REF if kernels == "ref" else OpResolverType.AUTO
    with _BUILDING, warnings.catch_warnings(), native_stderr_silenced():
        warnings.simplefilter("ignore", UserWarning)  # keep_all's "for debugging only": debugging is validate's job
        interp = Interpreter(model_content=model, experimental_op_resolver_type=resolver,
                             experimental_preserve_all_tensors=keep_all, num_threads=1)
        interp.allocate_tensors()
    return interp


# one interpreter built at a time (validate builds a peer on each worker thread): the warning filters and file
# descriptor 2 are the process's, and two threads' saves and restores interleaved would leave them changed for good
_BUILDING = threading.Lock()


@contextlib.contextmanager
def native_stderr_silenced():
    """LiteRT's C++ logs "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to file descriptor 2, below
    Python's sys.stderr; a CLI user's stderr holds mcc's own lines only, so the descriptor points at /dev/null
    while the interpreter is built."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run_litert(model: bytes, feeds: dict[str, np.ndarray], kernels: str = "ref", keep_all: bool = False,
               interpreter=None) -> dict[str, np.ndarray]:
    """Outputs by name (every tensor by name with keep_all) of one invocation on `feeds` (one model batch)."""
    interp = interpreter or make_interpreter(model, kernels, keep_all)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.asarray(feeds[d["name"]], order="C"))  # a 0-d input stays 0-d
    interp.invoke()
    if keep_all:
        out = {}
        for d in interp.get_tensor_details():
            try:
                out[d["name"]] = interp.get_tensor(d["index"]).copy()
            except ValueError:  # tensors without data (e.g. optional inputs)
                continue
        return out
    return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}
