"""Pre-packed constants: a kernel turns a weight into the layout its loop wants once, not on every call.

XNNPACK packs weights when the delegate prepares a model and onnxruntime when a session is created; both own
the model for its lifetime. mcc's kernels are plain functions over a node and its arrays, so the packed form is
cached against the constant array itself and dropped when that array is garbage collected: the first run of a
graph pays the packing, later runs (validation over hundreds of samples, calibration) reuse it, and nothing has
to be invalidated when a pass replaces a constant, since the new array is a new key.
"""

from __future__ import annotations

import weakref
from typing import Callable, Hashable

import numpy as np

_PACKED: dict[int, dict[Hashable, object]] = {}  # id(array) -> key -> packed form


def packed(array: np.ndarray, key: Hashable, build: Callable[[np.ndarray], object]):
    """build(array), computed once per (array, key) while `array` lives. `key` names the packing (and anything
    besides the array it depends on, e.g. the layout), so one weight can be packed several ways. The array must
    not be mutated in place after it was packed (IR constants are not)."""
    forms = _PACKED.get(id(array))
    if forms is None:
        forms = _PACKED[id(array)] = {}
        weakref.finalize(array, _PACKED.pop, id(array), None)
    if key not in forms:
        forms[key] = build(array)
    return forms[key]
