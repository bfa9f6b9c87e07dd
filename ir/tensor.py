"""Tensors of the IR: a name, a physical shape, a dtype, a layout, optional quantization, optional constant data.

Like onnx-graphsurgeon, a tensor is either a variable (produced by a node or a graph input) or a constant
(it holds `data`, a plain numpy array that passes replace rather than mutate, so graph copies may share it).
`shape` is always the physical memory order; `layout` says how a 4-D activation's axes are named
("NCHW" or "NHWC"), and the layout pass is the only place that changes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
LAYOUTS = ("NCHW", "NHWC")
# numpy 2 builds str(dtype) anew on every call (2.6 us; graph copies and readers make thousands of tensors): the
# names by dtype (native byte order; any other dtype falls back to str() and is refused below as before)
_NAMES = {np.dtype(d): d for d in DTYPES}
_ITEMSIZE = {d: np.dtype(d).itemsize for d in DTYPES}


@dataclass
class QuantParams:
    """Affine quantization real = scale * (q - zero_point), per tensor (axis None) or per channel along `axis`.

    Scales are free-form float32 values (binary weights use {-a, +a} with a per channel), never constrained
    to powers of two, so every later compression scheme fits the same record.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if self.scale.shape != self.zero_point.shape:
            raise ValueError(f"quantization scale {self.scale.shape} and zero point {self.zero_point.shape} differ in shape")

    def to_json(self) -> dict:
        return {"scale": [float(s) for s in self.scale], "zero_point": [int(z) for z in self.zero_point], "axis": self.axis}

    @staticmethod
    def from_json(d: dict) -> "QuantParams":
        return QuantParams(np.array(d["scale"], np.float32), np.array(d["zero_point"], np.int64), d.get("axis"))

    def __eq__(self, other):
        return (isinstance(other, QuantParams) and self.axis == other.axis
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))


class Tensor:
    # readers / writers: the nodes whose inputs / outputs hold this tensor, kept by ir.node.Edges (weakly, with a
    # count per node); Graph.consumers and Graph.producer read them and keep the graph's members.
    __slots__ = ("name", "shape", "dtype", "layout", "quant", "data", "readers", "writers")

    def __init__(self, name: str, shape=(), dtype: str = "float32", layout: str | None = None,
                 quant: QuantParams | None = None, data: np.ndarray | None = None):
        if data is not None:
            data = np.asarray(data)
            shape, dtype = data.shape, _NAMES.get(data.dtype) or str(data.dtype)
        if dtype not in _ITEMSIZE:
            raise ValueError(f"tensor '{name}': dtype {dtype} is not one of {DTYPES}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"tensor '{name}': layout {layout} is not one of {LAYOUTS}")
        self.name = name
        self.shape = tuple(map(int, shape))
        self.dtype = dtype
        self.layout = layout
        self.quant = quant
        self.data = data
        self.readers: dict | None = None  # created when first linked
        self.writers: dict | None = None

    def clone(self) -> "Tensor":
        """A new, unlinked tensor with the same fields (data and quantization shared): Graph.copy's, which need not
        check again what this tensor's construction checked."""
        t = Tensor.__new__(Tensor)
        t.name, t.shape, t.dtype, t.layout, t.quant, t.data = (self.name, self.shape, self.dtype, self.layout,
                                                               self.quant, self.data)
        t.readers = t.writers = None
        return t

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * _ITEMSIZE[self.dtype]

    def __repr__(self):
        kind = "Constant" if self.is_constant else "Variable"
        return f"{kind}({self.name}: {self.dtype}{list(self.shape)}{' @' + self.layout if self.layout else ''})"
