"""The runtime's kernels, one small module per kind of op; importing the package fills KERNELS."""

from . import activations, batch_norm, conv, elementwise, fully_connected, pool, reduce, shape_ops  # noqa: F401
from .registry import KERNELS, kernel

__all__ = ["KERNELS", "kernel"]
