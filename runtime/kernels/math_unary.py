"""Elementwise math (neg, abs, sqrt, rsqrt, square, exp, log, erf, gelu) and pow, in float32.

numpy keeps float32 throughout (NEP 50); erf, which numpy lacks, is C's erff-equivalent math.erf per element in a
numba loop, so the base install needs no scipy. gelu follows TFLite's float reference formulas (erf, or the tanh
approximation), which is also what torch and onnxruntime compute, up to float rounding.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .registry import kernel


@numba.njit(cache=True, nogil=True)
def _erf_flat(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


def erf(x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.empty_like(flat)
    _erf_flat(flat, out)
    return out.reshape(x.shape)


def _rsqrt(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float32(1) / np.sqrt(x)


def _log(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def _sqrt(x):
    with np.errstate(invalid="ignore"):
        return np.sqrt(x)


def _exp(x):
    with np.errstate(over="ignore"):
        return np.exp(x)


_UNARY = {"neg": np.negative, "abs": np.abs, "sqrt": _sqrt, "rsqrt": _rsqrt, "square": np.square, "exp": _exp,
          "log": _log, "erf": erf}

_SQRT_2_OVER_PI = np.float32(math.sqrt(2 / math.pi))


@kernel(*_UNARY)
def unary(node, inputs):
    return [_UNARY[node.op](inputs[0]).astype(np.float32, copy=False)]


@kernel("gelu")
def gelu(node, inputs):
    x = inputs[0]
    half = np.float32(0.5)
    if node.attrs["approximate"] == "tanh":
        inner = _SQRT_2_OVER_PI * (x + np.float32(0.044715) * x * x * x)
        return [half * x * (np.float32(1) + np.tanh(inner))]
    return [half * x * (np.float32(1) + erf(x * np.float32(1 / math.sqrt(2))))]


@kernel("pow")
def pow_(node, inputs):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return [np.power(inputs[0], inputs[1]).astype(np.float32, copy=False)]
