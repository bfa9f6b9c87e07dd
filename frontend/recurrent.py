"""LSTM and GRU layers unrolled over their fixed sequence length into ops the IR already has.

Both frontends lower through here: the ONNX LSTM / GRU nodes and torch's aten.lstm.input / aten.gru.input (kept
whole by torch_export, so one module unrolls both). A frontend hands over numpy weights per layer and direction
in torch's gate order (LSTM i, f, g, o; GRU r, z, n: ONNX's i, o, f, c and z, r, h are reordered by the ONNX
lowering) and the sequence as one [B, features] tensor per time step; this module emits, per step, two
fully_connected (input and recurrent projection), add, split, sigmoid, tanh, mul and sub, and records the note
"LSTM 'name' unrolled over T steps" in graph.origin["notes"] (the compile report's source.origin).

Why unroll rather than emit TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM (which the TFLite converter and onnx2tf emit):
the unrolled ops already have float and int8 kernels, both writers, layout and quantizer support, so an LSTM is
exact in float and quantizes with int8 kernels that are measured bit-exact against LiteRT and onnxruntime, for
TFLite and ONNX targets alike. The fused builtin has int8 arithmetic of its own (int16 cell state, per-gate
scales) that would need its own measured rules and has no ONNX counterpart. The price is a graph that grows
with T (about 13 ops per LSTM step and direction); the fused op remains an optional later step.

A zero initial state (torch's default, ONNX's absent initial_h / initial_c) costs nothing: the first step's
recurrent projection folds into the bias, and f * c0 disappears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GATES = {"LSTM": 4, "GRU": 3}


@dataclass
class Cell:
    """One direction of one layer: w_ih [G*H, I], w_hh [G*H, H], biases [G*H], gate blocks in torch's order."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    name: str                      # prefix of its constants' names, e.g. "rnn.l0_reverse"

    @property
    def hidden(self) -> int:
        return self.w_hh.shape[1]


def time_steps(cx, x, axis: int) -> list:
    """x split along its time `axis` into one tensor per step with that axis dropped."""
    shape = cx.shape(x)
    parts = [x] if shape[axis] == 1 else list(cx.emit("split", [x], n_outputs=shape[axis], axis=axis,
                                                      sizes=[1] * shape[axis]))
    rest = [d for i, d in enumerate(shape) if i != axis]
    return [cx.emit("reshape", [p], shape=rest) for p in parts]


def stack(cx, pieces: list, axis: int, shape) -> object:
    """Concatenate [B, n] pieces along `axis` (0: step-major rows, 1: batch-major columns) and reshape to `shape`:
    how per-step results become a [T, ..., B, H] or [B, T, ..., H] sequence without a transpose."""
    joined = pieces[0] if len(pieces) == 1 else cx.emit("concat", list(pieces), axis=axis)
    return joined if tuple(cx.shape(joined)) == tuple(shape) else cx.emit("reshape", [joined], shape=list(shape))


def select(cx, state, axis: int, index: int):
    """Entry `index` along `axis` of a [D, B, H] / [B, D, H] initial state: a [B, H] tensor, or a numpy array
    when the state is known at compile time (None stands for zeros and stays None)."""
    if state is None or isinstance(state, np.ndarray):
        return None if state is None or not state.any() else np.take(state, index, axis=axis)
    shape = cx.shape(state)
    if shape[axis] > 1:
        state = cx.emit("slice", [state], starts=[index], ends=[index + 1], axes=[axis], steps=[1])
    return cx.emit("reshape", [state], shape=[d for i, d in enumerate(shape) if i != axis])


def unroll(cx, kind: str, steps: list, cell: Cell, h0=None, c0=None, reverse=False, linear_before_reset=True):
    """Run one direction of one layer over `steps` ([B, I] tensors). h0 / c0 are [B, H] tensors, numpy arrays or
    None (zeros). Returns (h of every step in time order, last h, last c (None for GRU))."""
    known_zero = lambda s: isinstance(s, np.ndarray) and not s.any()  # noqa: E731
    h, c = (None if known_zero(s) else s for s in (h0, c0))
    k = _Constants(cx, cell, kind, linear_before_reset)
    step = _lstm_step if kind == "LSTM" else _gru_step
    hs = []
    for x_t in (reversed(steps) if reverse else steps):
        h, c = step(k, x_t, h, c)
        hs.append(h)
    return (hs[::-1] if reverse else hs), h, c


def note(cx, kind: str, name: str, steps: int) -> None:
    cx.graph.origin.setdefault("notes", []).append(f"{kind} '{name}' unrolled over {steps} steps")


class _Constants:
    """The cell's weights as the frontend's constants, made once and shared by every step, and the emitting
    helpers of a step. Biases that can be are summed into the input projection's; GRU's b_hn stays with the
    recurrent projection when r multiplies it (linear_before_reset, torch's GRU)."""

    def __init__(self, cx, cell: Cell, kind: str, linear_before_reset: bool):
        n, b_ih, b_hh = cell.hidden, cell.b_ih, cell.b_hh
        self.cx, self.cell, self.n, self.linear_before_reset = cx, cell, n, linear_before_reset
        self.w_x, self.w_h, self.b_h, bias, self.w_hn = cell.w_ih, cell.w_hh, np.zeros_like(b_hh), b_ih + b_hh, None
        if kind == "GRU" and linear_before_reset:
            bias = np.concatenate([bias[:2 * n], b_ih[2 * n:]])
            self.b_h = np.concatenate([np.zeros(2 * n, b_hh.dtype), b_hh[2 * n:]])
        elif kind == "GRU":
            self.w_h, self.b_h = cell.w_hh[:2 * n], self.b_h[:2 * n]
            self.w_hn = self.const(cell.w_hh[2 * n:], "w_hn")
        if kind == "LSTM":   # torch's (i, f, g, o) blocks as (i, g, o, f): a zero cell state needs only the first 3
            order = [0, 2, 3, 1]
            self.w_x, self.w_h, bias = (a.reshape(4, n, *a.shape[1:])[order].reshape(a.shape)
                                        for a in (cell.w_ih, cell.w_hh, bias))
        self.x_weight, self.x_bias = self.const(self.w_x, "w_ih"), self.const(bias, "bias")
        self.h_weight = self.const(self.w_h, "w_hh")
        self.h_bias = self.const(self.b_h, "b_hh") if self.b_h.any() else None

    def const(self, value, suffix: str):
        return self.cx.const(np.asarray(value, np.float32), name=f"{self.cell.name}.{suffix}")

    def emit(self, op, *inputs, **attrs):
        """One node; a numpy operand (a state known at compile time) becomes a constant."""
        ins = [self.const(v, "state") if isinstance(v, np.ndarray) else v for v in inputs]
        return self.cx.emit(op, ins, **attrs)

    def split(self, x, sizes):
        return self.cx.emit("split", [x], n_outputs=len(sizes), axis=1, sizes=sizes)

    def input_projection(self, x_t):
        return self.emit("fully_connected", x_t, self.x_weight, self.x_bias)

    def recurrent_projection(self, h):
        """h @ w_h.T (+ GRU's b_hn): an IR tensor, or a numpy array when h is known (None: zeros)."""
        if h is None or isinstance(h, np.ndarray):
            return (self.b_h if h is None else h @ self.w_h.T + self.b_h).astype(np.float32)
        return self.emit("fully_connected", h, self.h_weight, *([self.h_bias] if self.h_bias is not None else []))

    def add(self, a, b):
        """a + b, nothing emitted when b is known to be zero."""
        return a if isinstance(b, np.ndarray) and not b.any() else self.emit("add", a, b)


def _lstm_step(k: _Constants, x_t, h, c):
    gates, n = k.add(k.input_projection(x_t), k.recurrent_projection(h)), k.n
    if c is None:   # f * 0 is not computed: f's columns are cut off, as a split output nobody reads would not run
        i, g, o = k.split(k.emit("slice", gates, starts=[0], ends=[3 * n], axes=[1], steps=[1]), [n] * 3)
        f = None
    else:
        i, g, o, f = k.split(gates, [n] * 4)
    ig = k.emit("mul", k.emit("sigmoid", i), k.emit("tanh", g))
    c = ig if c is None else k.emit("add", k.emit("mul", k.emit("sigmoid", f), c), ig)
    o = k.emit("sigmoid", o)
    return k.emit("mul", o, k.emit("tanh", c)), c


def _gru_step(k: _Constants, x_t, h, _):
    n = k.n
    gx_rz, gx_n = k.split(k.input_projection(x_t), [2 * n, n])
    hp = k.recurrent_projection(h)
    if isinstance(hp, np.ndarray):
        hp_rz, hp_n = hp[..., :2 * n], hp[..., 2 * n:]
    elif k.linear_before_reset:
        hp_rz, hp_n = k.split(hp, [2 * n, n])
    else:
        hp_rz, hp_n = hp, None
    rz = k.add(gx_rz, hp_rz)
    # r multiplies W_hn h + b_hn (linear_before_reset) or h: nothing when those are zero, and then it is cut off
    # rather than computed into a tensor nobody reads (LiteRT's XNNPACK would not expose it to a comparison).
    if h is None and not (k.linear_before_reset and hp_n.any()):
        z, reset = k.emit("sigmoid", k.emit("slice", rz, starts=[n], ends=[2 * n], axes=[1], steps=[1])), None
    else:
        r, z = k.split(k.emit("sigmoid", rz), [n, n])
        if k.linear_before_reset:           # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            reset = k.emit("mul", r, hp_n)
        else:                               # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn), b_hn in the bias
            reset = k.emit("fully_connected", k.emit("mul", r, h), k.w_hn)
    new = k.emit("tanh", gx_n if reset is None else k.emit("add", gx_n, reset))
    # h' = (1 - z) * n + z * h, computed as n + z * (h - n): three ops instead of five, and no constant 1.
    if h is None:
        return k.emit("sub", new, k.emit("mul", z, new)), None
    return k.emit("add", new, k.emit("mul", z, k.emit("sub", h, new))), None
