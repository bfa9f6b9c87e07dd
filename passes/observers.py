"""Activation range observers: each sees every calibration batch of one tensor and proposes the real range
[lo, hi] (always containing 0) that int8 asymmetric quantization should cover.

- "minmax": the exact extremes. Nothing is clipped, so one outlier stretches the scale for every value.
- "percentile" (or "percentile:P", default P = 99.99): the P-th and (100 - P)-th percentiles, which drop the
  rarest outliers; read off a histogram, interpolated within a bin.
- "mse": the [lo, hi] that minimises the expected squared error of int8 quantization over the observed
  distribution: s^2 / 12 rounding noise per value inside the range (s = (hi - lo) / 255) plus the squared
  distance to the range for every clipped value, searched over a grid of shrink factors of lo and hi.

TensorRT's calibrators (entropy, percentile, MSE in pytorch-quantization) and NNCF's range estimators build a
histogram over a range fixed by a first pass or by the first batch, and re-bin when data falls outside.
mcc's histogram has bins of width 2**k aligned at zero, so widening it merges pairs of bins exactly and
batches of any range accumulate in one pass over the calibration data, with no first pass to find the range.
For the same reason observers merge exactly (fork, merge): calibration observes shares of the samples side by
side on worker threads and adds their counts up in order (calibrate.RangeObservers).
"""

from __future__ import annotations

import copy
import math

import numba
import numpy as np

from ..errors import MccError

OBSERVERS = ("minmax", "percentile", "mse")
DEFAULT_PERCENTILE = 99.99


class MinMaxObserver:
    """The exact minimum and maximum over all batches."""

    settled = True  # later batches may be observed apart (fork) and merged back: extremes do not depend on order

    def __init__(self):
        self.lo, self.hi = math.inf, -math.inf

    def update(self, x: np.ndarray) -> None:
        count, lo, hi = _extremes(_flat(x))
        if count:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def update_batches(self, x: np.ndarray, batch: int) -> None:
        """Update with `x`, several model batches of `batch` samples joined: at once, as the extremes do not
        depend on how the values are grouped."""
        self.update(x)

    def fork(self):
        """A fresh observer like this one, for later batches observed elsewhere (another thread) and merged back."""
        twin = copy.copy(self)
        twin.lo, twin.hi = math.inf, -math.inf
        return twin

    def merge(self, other) -> None:
        """Take in `other`, a fork that observed later batches: as if this observer had observed them."""
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:  # nothing finite was seen
            return 0.0, 0.0
        return min(self.lo, 0.0), max(self.hi, 0.0)


class Histogram(MinMaxObserver):
    """Counts in bins [k * w, (k + 1) * w) with w = 2**exponent, at most MAX_BINS of them, plus exact extremes."""

    MAX_BINS = 2048

    def __init__(self):
        super().__init__()
        self.exponent: int | None = None
        self.first = 0                           # bin index of counts[0]
        self.counts = np.zeros(0, np.int64)

    def update(self, x: np.ndarray) -> None:
        x = _flat(x)
        count, lo, hi = _extremes(x)
        if not count:
            return
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.exponent is None:
            span = max(hi - lo, max(abs(lo), abs(hi)) * 2.0 ** -20, 2.0 ** -100)
            self.exponent = math.ceil(math.log2(span / self.MAX_BINS))
        first = self._cover(lo, hi)
        _count_bins(x, 2.0 ** self.exponent, first, self.counts, count == x.size)

    def _cover(self, lo: float, hi: float) -> int:
        """Widen the bins until those of lo and hi and the counted ones span fewer than MAX_BINS, grow the counts
        to span them all, and return the first bin's index."""
        while True:  # floor(v / w) is monotonic in v: the extremes give the extreme bins
            w = 2.0 ** self.exponent
            first = min(math.floor(lo / w), self.first) if self.counts.size else math.floor(lo / w)
            last = max(math.floor(hi / w), self.first + self.counts.size - 1)
            if last - first < self.MAX_BINS:
                break
            self._double_width()
        if first != self.first or last - first + 1 != self.counts.size:
            grown = np.zeros(last - first + 1, np.int64)
            grown[self.first - first:self.first - first + self.counts.size] = self.counts
            self.first, self.counts = first, grown
        return first

    def update_batches(self, x: np.ndarray, batch: int) -> None:
        """The same histogram as updating batch by batch, in order, at the cost of one update: only the first
        batch with finite values depends on the grouping (it fixes the first bin width). After it, widening is
        the smallest power of two at which the extremes seen so far span fewer than MAX_BINS bins, and a bin of
        width 2w holds exactly bins 2k and 2k + 1 of width w (floor(x / 2w) = floor(floor(x / w) / 2)), so one
        update with the rest gives the counts that one update per batch would. A value without a batch axis (0-d,
        a torch sum to a scalar) is one batch."""
        if np.ndim(x) == 0:
            self.update(x)
            return
        start = 0
        while self.exponent is None and start < len(x):
            self.update(x[start:start + batch])
            start += batch
        if start < len(x):
            self.update(x[start:])

    @property
    def settled(self) -> bool:
        """Whether later batches may be observed apart (fork) and merged: once the first finite batch has fixed the
        bin width; the batch that fixes it must be observed here, in order."""
        return self.exponent is not None

    def fork(self):
        """A histogram with this one's bin width and nothing counted (settled ones only)."""
        twin = super().fork()
        twin.first, twin.counts = 0, np.zeros(0, np.int64)
        return twin

    def merge(self, other) -> None:
        """Add the counts of `other`, a fork of this settled histogram that observed later batches: the counts and
        width that observing them here gives. Observed here, the width would end at the smallest power of two, at
        least the first batch's, at which all the extremes span fewer than MAX_BINS bins (the bins of a width
        nest in those of the next, so the span only shrinks as it doubles); each side's width is the smallest for
        its own extremes, so both are at most that one, and widening to the larger of the two, then as update
        widens for the other's extremes, reaches it; counts of nesting bins add up exactly."""
        if not other.counts.size:  # nothing finite: lo and hi are infinities, nothing to add
            return
        while self.exponent < other.exponent:
            self._double_width()
        first = self._cover(other.lo, other.hi)
        while other.exponent < self.exponent:
            other._double_width()
        self.counts[other.first - first:other.first - first + other.counts.size] += other.counts
        super().merge(other)

    def _double_width(self) -> None:
        """Merge bins pairwise: bin k of width w lies inside bin floor(k / 2) of width 2w."""
        if self.counts.size:
            index = np.arange(self.first, self.first + self.counts.size) // 2
            first = int(index[0])
            self.counts = np.bincount(index - first, weights=self.counts).astype(np.int64)
            self.first = first
        self.exponent += 1

    def bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(left edges, right edges, counts) of the non-empty span, edges clamped to the exact extremes."""
        w = 2.0 ** self.exponent
        left = (self.first + np.arange(self.counts.size)) * w
        return np.maximum(left, self.lo), np.minimum(left + w, self.hi), self.counts


class PercentileObserver(Histogram):
    """The (100 - P)-th and P-th percentiles of all values seen."""

    def __init__(self, percentile: float = DEFAULT_PERCENTILE):
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise MccError(f"observer percentile {percentile} is outside (50, 100]; use e.g. 'percentile:99.99'")
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        if self.exponent is None:
            return 0.0, 0.0
        left, right, counts = self.bins()
        cumulative = np.cumsum(counts)
        total = float(cumulative[-1])

        def quantile(q: float) -> float:
            rank = q * total
            i = min(int(np.searchsorted(cumulative, rank, side="left")), counts.size - 1)
            before = float(cumulative[i] - counts[i])
            fraction = (rank - before) / counts[i] if counts[i] else 0.0
            return float(left[i] + min(max(fraction, 0.0), 1.0) * (right[i] - left[i]))

        tail = (100.0 - self.percentile) / 100.0
        return min(quantile(tail), 0.0), max(quantile(1.0 - tail), 0.0)


class MseObserver(Histogram):
    """The range with the least expected squared int8 quantization error over the histogram."""

    SHRINK = np.linspace(1.0, 0.05, 40)  # candidate fractions of the observed lo and hi

    def range(self) -> tuple[float, float]:
        lo, hi = MinMaxObserver.range(self)
        if self.exponent is None or hi == lo:
            return lo, hi
        left, right, counts = self.bins()
        centers, counts = (left + right) / 2.0, counts.astype(np.float64)
        los = lo * self.SHRINK if lo < 0 else np.zeros(1)
        his = hi * self.SHRINK if hi > 0 else np.zeros(1)
        # a value is clipped by lo or by hi, never both (lo <= 0 <= hi), so the error of a (lo, hi) pair is
        # lo's clipping + hi's clipping + rounding noise on the rest: 2 x 40 sums over the bins, not 40 x 40
        below_n, below_error = _clipped(los, centers, counts, -1.0)
        above_n, above_error = _clipped(his, centers, counts, 1.0)
        clipped_n = below_n[:, None] + above_n[None, :]
        clipped_error = below_error[:, None] + above_error[None, :]
        step = (his[None, :] - los[:, None]) / 255.0
        error = clipped_error + (counts.sum() - clipped_n) * step ** 2 / 12.0
        i, j = np.unravel_index(np.argmin(error), error.shape)  # first minimum: the widest such range
        return float(los[i]), float(his[j])


@numba.njit(cache=True, nogil=True)
def _clipped(bounds, centers, counts, side):
    """For each bound b: the count of values in the bins it clips and their squared distance to it, the bins' values
    taken at their centres, on the side `side` (-1: below b, 1: above it). The sums over the bins are numpy's (its
    pairwise summation, _pairwise_sum), so the range is the one numpy's [40, bins] temporaries gave, 4x faster."""
    n = centers.size
    clipped, error = np.empty(bounds.size), np.empty(bounds.size)
    number, square = np.empty(n), np.empty(n)
    for i in range(bounds.size):
        for k in range(n):
            d = max(side * (centers[k] - bounds[i]), 0.0)
            number[k] = counts[k] * (1.0 if d > 0.0 else 0.0)
            square[k] = counts[k] * (d * d)
        clipped[i], error[i] = 0.0 + _pairwise_sum(number, 0, n), 0.0 + _pairwise_sum(square, 0, n)
    return clipped, error


@numba.njit(cache=True, nogil=True)
def _pairwise_sum(a, start, n):
    """numpy's pairwise summation of a[start:start + n] (pairwise_sum in its loops_utils.h: blocks of at most 128
    values, halved at multiples of 8, each block summed by _block_sum, the halves' sums added left + right), which
    its add.reduce over a contiguous row adds to 0.0. The recursion is walked with an explicit stack: numba's cache
    of a recursive function crashed the process that loaded it."""
    starts, sizes, stage = np.empty(64, np.int64), np.empty(64, np.int64), np.empty(64, np.int64)
    sums = np.empty(64)
    top, done = 0, 0
    starts[0], sizes[0], stage[0] = start, n, 0
    while top >= 0:
        s, m = starts[top], sizes[top]
        half = m // 2 - (m // 2) % 8
        if m <= 128:
            sums[done] = _block_sum(a, s, m)
            done += 1
            top -= 1
        elif stage[top] < 2:  # push the left half, then the right half
            stage[top] += 1
            left = stage[top] == 1
            top += 1
            starts[top], sizes[top], stage[top] = (s, half, 0) if left else (s + half, m - half, 0)
        else:
            done -= 1
            sums[done - 1] = sums[done - 1] + sums[done]
            top -= 1
    return sums[0]


@numba.njit(cache=True, nogil=True)
def _block_sum(a, start, n):
    """numpy's sum of at most 128 values: one running sum below 8, else eight, added pairwise, then the rest."""
    if n < 8:
        total = -0.0
        for i in range(start, start + n):
            total += a[i]
        return total
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    for i in range(start + 8, start + n - n % 8, 8):
        r0, r1, r2, r3 = r0 + a[i], r1 + a[i + 1], r2 + a[i + 2], r3 + a[i + 3]
        r4, r5, r6, r7 = r4 + a[i + 4], r5 + a[i + 5], r6 + a[i + 6], r7 + a[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(start + n - n % 8, start + n):
        total += a[i]
    return total


def make_observer(spec: str):
    """A new observer for `spec`: "minmax", "percentile", "percentile:99.9" or "mse"."""
    name, _, arg = spec.partition(":")
    if name not in OBSERVERS:
        raise MccError(f"unknown observer '{spec}'; choose one of {', '.join(OBSERVERS)} "
                       "(percentile takes a value, e.g. 'percentile:99.9')")
    if arg and name != "percentile":
        raise MccError(f"observer '{name}' takes no value, got '{spec}'")
    if name == "minmax":
        return MinMaxObserver()
    if name == "mse":
        return MseObserver()
    try:
        return PercentileObserver(float(arg) if arg else DEFAULT_PERCENTILE)
    except ValueError:
        raise MccError(f"observer '{spec}': '{arg}' is not a number; write e.g. 'percentile:99.9'") from None


_FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}


def _flat(x) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(-1) if x.dtype in _FLOATS else x.astype(np.float64).reshape(-1)


# One compiled pass each over a chunk of activations (numpy's isfinite, float64 copy, floor and bincount made the
# observer cost more than the float run it observes: 70 ms per 224x224 MobileNetV2 sample). Values are taken in
# float64, exactly, as before.
def _extremes(x: np.ndarray) -> tuple[int, float, float]:
    """(number of finite values, their minimum, their maximum) in float64: numpy's vectorised min and max, which are
    exact, when both come out finite (a NaN or an infinity would be one of them), else _finite_extremes."""
    if x.size:
        lo, hi = x.min(), x.max()
        if math.isfinite(lo) and math.isfinite(hi):
            return x.size, float(lo), float(hi)
    return _finite_extremes(x)


@numba.njit(cache=True, nogil=True)
def _finite_extremes(x):
    """(number of finite values, their minimum, their maximum) in float64."""
    count, lo, hi = 0, math.inf, -math.inf
    for v in x:
        f = np.float64(v)
        if math.isfinite(f):
            count += 1
            lo, hi = min(lo, f), max(hi, f)
    return count, lo, hi


_LANES = 8
_SHARE = 1 << 17  # values per thread at least: below this, one thread counts them all


def _count_bins(x: np.ndarray, width: float, first: int, counts: np.ndarray, all_finite: bool) -> None:
    """counts[floor(v / width) - first] += 1 for every finite v (`all_finite`: every v is), in one compiled pass
    shared by numba's threads: each counts its own slice of x into its own counts, added up at the end (integer
    counts: the sum does not depend on how x was cut). width is a power of two, so v * (1 / width) is v / width
    exactly, without a division per value."""
    if x.size < 2 * _SHARE:
        _count_share(x, 1.0 / width, first, counts, all_finite)
    else:
        _count_shares(x, 1.0 / width, first, counts, min(numba.get_num_threads(), x.size // _SHARE), all_finite)


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_shares(x, inv, first, counts, shares, all_finite):
    """_count_share of `shares` equal slices of x at once, each into its own counts, then added to `counts`."""
    parts = np.zeros((shares, counts.size), np.int64)
    for p in numba.prange(shares):
        _count_share(x[x.size * p // shares:x.size * (p + 1) // shares], inv, first, parts[p], all_finite)
    for p in range(shares):
        counts += parts[p]


@numba.njit(cache=True, nogil=True)
def _count_share(x, inv, first, counts, all_finite):
    """counts[floor(v * inv) - first] += 1 for every finite v of x. With every value finite, consecutive values go
    to _LANES separate count rows, added at the end, so a run of equal values (a relu's zeros) does not make each
    increment wait for the previous one: 2x faster."""
    if not all_finite:
        for v in x:
            f = np.float64(v)
            if math.isfinite(f):
                counts[np.int64(math.floor(f * inv)) - first] += 1
        return
    lanes = np.zeros((_LANES, counts.size), np.int64)
    whole = x.size - x.size % _LANES
    for i in range(0, whole, _LANES):  # from 0 on a slice: a loop from an offset measured 30% slower
        for j in range(_LANES):
            lanes[j, np.int64(math.floor(np.float64(x[i + j]) * inv)) - first] += 1
    for i in range(whole, x.size):
        counts[np.int64(math.floor(np.float64(x[i]) * inv)) - first] += 1
    for j in range(_LANES):
        counts += lanes[j]
