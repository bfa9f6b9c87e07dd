"""Decode a TFLite sparse tensor (SparsityParameters: traversal order, block map, DENSE / SPARSE_CSR dimensions)
into the dense array it stands for, so sparse weights behind DENSIFY land in the IR as ordinary constants.

TFLite's FormatConverter (tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc) walks the
compressed levels recursively and copies one value per leaf. mcc expands the same levels breadth-first with
numpy, one level at a time (a DENSE level multiplies every position by its size, a SPARSE_CSR level replaces
each position by its run of stored indices), which visits the leaves in the same order without recursion, and
it checks every segment and index against the shape, where the C++ walk skips what does not fit.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema


def _vector(v, what: str) -> np.ndarray:
    """The int values of a SparseIndexVector (Int32Vector, Uint16Vector or Uint8Vector)."""
    if v is None or v.values is None:
        raise ValueError(f"a SPARSE_CSR dimension has no {what}")
    return np.asarray(v.values, np.int64).reshape(-1)


def _expanded_sizes(shape, order, block_map, dims) -> list[int]:
    """Size of each expanded dimension: the original ones (divided by their block size) then the block ones."""
    rank, n = len(shape), len(shape) + len(block_map)
    if sorted(order) != list(range(n)) or sorted(order[:rank]) != list(range(rank)):
        raise ValueError(f"traversal order {order} is not the {rank} original dimensions then the "
                         f"{len(block_map)} block dimensions")
    if len(dims) != n or sorted(set(block_map)) != sorted(block_map) or any(not 0 <= b < rank for b in block_map):
        raise ValueError(f"{len(dims)} dimension records and block map {block_map} do not fit a rank-{rank} "
                         f"tensor with traversal order {order}")
    sizes = list(shape) + [0] * len(block_map)
    for k, axis in enumerate(block_map):
        meta = dims[order.index(rank + k)]
        block = meta.denseSize
        if meta.format != schema.DimensionType.DENSE or block < 1 or shape[axis] % block:
            raise ValueError(f"block dimension {k} must be DENSE with a size dividing {shape[axis]}")
        sizes[axis], sizes[rank + k] = shape[axis] // block, block
    return sizes


def densify(values: np.ndarray, shape, sparsity: schema.SparsityParametersT) -> np.ndarray:
    """The dense array of `shape` whose stored (non-zero) `values`, in traversal order, `sparsity` describes;
    ValueError when the description does not fit the shape or the number of values."""
    order = [int(d) for d in (sparsity.traversalOrder if sparsity.traversalOrder is not None else [])]
    block_map = [int(d) for d in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    dims = sparsity.dimMetadata or []
    sizes = _expanded_sizes(tuple(shape), order, block_map, dims)
    positions = np.zeros(1, np.int64)          # each leaf-so-far's position in the current level's storage
    index: list[np.ndarray] = []               # per level, each leaf-so-far's index along that level's dimension
    for level, axis in enumerate(order):
        meta = dims[level]
        if meta.format == schema.DimensionType.DENSE:
            size = meta.denseSize
            if size != sizes[axis]:
                raise ValueError(f"DENSE level {level} has size {size}, dimension {axis} is {sizes[axis]}")
            index = [np.repeat(a, size) for a in index] + [np.tile(np.arange(size), len(positions))]
            positions = (positions[:, None] * size + np.arange(size)).reshape(-1)
            continue
        segments, indices = _vector(meta.arraySegments, "array segments"), _vector(meta.arrayIndices, "array indices")
        fits = (len(segments) > (positions.max() + 1 if len(positions) else 0) and segments[0] >= 0
                and np.all(np.diff(segments) >= 0) and segments[-1] <= len(indices)
                and np.all((indices >= 0) & (indices < sizes[axis])))
        if not fits:
            raise ValueError(f"SPARSE_CSR level {level} has segments or indices outside dimension {axis} "
                             f"(size {sizes[axis]}) or its {len(indices)} stored indices")
        counts = segments[positions + 1] - segments[positions]
        offsets = np.cumsum(counts) - counts
        positions = np.repeat(segments[positions] - offsets, counts) + np.arange(int(counts.sum()))
        index = [np.repeat(a, counts) for a in index] + [indices[positions]]
    if len(positions) != values.size:
        raise ValueError(f"the sparsity describes {len(positions)} stored values, the buffer holds {values.size}")
    rank = len(shape)
    coords = [index[order.index(axis)] for axis in range(rank)]
    for k, axis in enumerate(block_map):
        coords[axis] = coords[axis] * sizes[rank + k] + index[order.index(rank + k)]
    dense = np.zeros(shape, values.dtype)
    dense[tuple(coords)] = values.reshape(-1)
    return dense
