"""Pointwise activations, the fused `activation` output stage, and softmax, in float32 numpy.

These are memory-bound one-liners, so numpy (which keeps float32 under NEP 50) is as exact as a compiled
loop and costs no compile time. clamp_value is the one compiled piece: the fused activation of a single value, for
the compiled loops that clamp what they store.
"""

from __future__ import annotations

import numba
import numpy as np

from .registry import kernel

# The clamp each fused activation applies to a producer's result (TFLite's ActivationFunctionWithMinMax).
CLAMPS = {"relu": (0.0, None), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}


def fused_activation(y: np.ndarray, activation: str | None) -> np.ndarray:
    """The float output stage of conv, FC, pool and binary ops: clamp to the fused activation's range."""
    if activation is None:
        return y
    lo, hi = CLAMPS[activation]
    return np.maximum(y, np.float32(lo)) if hi is None else np.clip(y, np.float32(lo), np.float32(hi))


def clamp_bounds(activation: str | None) -> tuple[np.float32, np.float32, bool]:
    """fused_activation as (lo, hi, at_lo) for a kernel that clamps each value in its store: y below lo, or with
    `at_lo` (relu: np.maximum(y, 0), which makes -0.0 +0.0) at or below it, becomes lo; above hi, hi; anything else
    (NaN, with its payload, and -0.0 under np.clip) stays, bit for bit. No activation: (-inf, inf, False), a no-op."""
    if activation is None:
        return np.float32(-np.inf), np.float32(np.inf), False
    lo, hi = CLAMPS[activation]
    return np.float32(lo), np.float32(np.inf if hi is None else hi), hi is None


@numba.njit(cache=True, nogil=True)
def clamp_value(value, lo, hi, at_lo):
    """fused_activation of one value, from clamp_bounds' (lo, hi, at_lo), for the compiled loops that clamp as they
    store (conv.py's kernels, calibrate.LinearMeans): compares and selects, no arithmetic, so a NaN keeps its payload
    and -0.0 its sign unless `at_lo` (np.maximum's relu) makes it lo, as numpy does."""
    value = lo if ((value <= lo) if at_lo else (value < lo)) else value
    return hi if value > hi else value


def _sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88, and 1 / inf is the right 0
        return np.float32(1) / (np.float32(1) + np.exp(-x))


def _relu6_shifted(x):
    return np.clip(x + np.float32(3), np.float32(0), np.float32(6))


_UNARY = {
    "relu": lambda x: fused_activation(x, "relu"),
    "relu6": lambda x: fused_activation(x, "relu6"),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "hardswish": lambda x: x * _relu6_shifted(x) / np.float32(6),  # TFLite's order: multiply, then divide
    "hardsigmoid": lambda x: _relu6_shifted(x) / np.float32(6),
    "silu": lambda x: x * _sigmoid(x),
    "identity": lambda x: x,
}


@kernel(*_UNARY)
def unary(node, inputs):
    return [_UNARY[node.op](inputs[0])]


@kernel("leaky_relu")
def leaky_relu(node, inputs):
    x = inputs[0]
    return [np.where(x >= 0, x, x * np.float32(node.attrs["alpha"]))]


@kernel("prelu")
def prelu(node, inputs):
    x, alpha = inputs
    return [np.where(x >= 0, x, x * alpha)]


@kernel("clip")
def clip(node, inputs):
    return [np.clip(inputs[0], np.float32(node.attrs["min"]), np.float32(node.attrs["max"]))]


@kernel("softmax")
def softmax(node, inputs):
    """exp((x - max) * beta) / sum, the order of TFLite's float reference softmax."""
    x, axis = inputs[0], node.attrs["axis"]
    e = np.exp((x - x.max(axis=axis, keepdims=True)) * np.float32(node.attrs["beta"]))
    return [e / e.sum(axis=axis, keepdims=True)]


# ---- binary activations (issue 18) --------------------------------------------------------------------------
@kernel("binary_activation")
def binary_activation(node, inputs):
    x = inputs[0]
    return [np.where(x >= 0, np.float32(0), np.float32(-node.attrs["magnitude"])).astype(x.dtype)]
