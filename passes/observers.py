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
side on worker threads and adds their counts up, in any order once the first finite batch has fixed the bin width
(calibrate.RangeObservers).
"""

from __future__ import annotations

import copy
import math
import struct

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
        if self._update_in_window(x):
            return
        count, lo, hi = _extremes(x)
        if not count:
            return
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.exponent is None:
            span = max(hi - lo, max(abs(lo), abs(hi)) * 2.0 ** -20, 2.0 ** -100)
            self.exponent = math.ceil(math.log2(span / self.MAX_BINS))
        first = self._cover(lo, hi)
        _count_bins(x, 2.0 ** self.exponent, first, self.counts)

    def _cover(self, lo: float, hi: float) -> int:
        """Widen the bins until those of lo and hi and the counted ones span fewer than MAX_BINS, grow the counts
        to span them all, and return the first bin's index."""
        while True:  # floor(v / w) is monotonic in v: the extremes give the extreme bins
            w = 2.0 ** self.exponent
            first = min(_bin(lo, w), self.first) if self.counts.size else _bin(lo, w)
            last = max(_bin(hi, w), self.first + self.counts.size - 1)
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

    def _update_in_window(self, x: np.ndarray) -> bool:
        """update in one pass over x where it can (_count_share counts and takes the extremes): values all finite,
        in bins of the current width that a span of MAX_BINS bins holding the current ones can reach, fewer than
        _PIECE. Else False, with nothing changed. The counts at the current width are then merged pairwise
        (_double_width) until they fit MAX_BINS: bins of width 2w hold exactly bins 2k and 2k + 1 of width w, so the
        counts and the width are those of update's two passes (extremes, then counts at the width they call for),
        at 15% less."""
        if self.exponent is None or not 0 < x.size < _PIECE:
            return False
        w = 2.0 ** self.exponent
        low = self.first + self.counts.size - self.MAX_BINS  # the lowest first bin such a span can have
        window = np.zeros(2 * self.MAX_BINS - self.counts.size, np.int64)
        outside, *bits = _count_bins(x, w, low, window, partial=False)
        if outside:
            return False
        lo, hi = _from_bits(x, *bits)
        first, last = _bin(lo, w), _bin(hi, w)  # with nothing counted yet (a fork), the values' bins alone
        if self.counts.size:
            first, last = min(first, self.first), max(last, self.first + self.counts.size - 1)
        grown = window[first - low:last - low + 1]
        grown[self.first - first:self.first - first + self.counts.size] += self.counts
        self.first, self.counts = first, grown
        while self.counts.size > self.MAX_BINS:
            self._double_width()
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        return True

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


def _bin(v: float, w: float) -> int:
    """floor(v / w), also where v / w falls below float64's smallest normal and rounds to -0.0 (-1: as _count_share
    counts v)."""
    k = math.floor(v / w)
    return -1 if k == 0 and v < 0 else k


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


# Compiled passes over a chunk of activations (numpy's isfinite, float64 copy, floor and bincount made the observer
# cost more than the float run it observes: 70 ms per 224x224 MobileNetV2 sample). Bins are exact, as before.
# calibrate's per-sample workers count each sample on one thread, so these are built for the cost per value on one
# thread: 0.7 ns per MobileNetV2 activation value, extremes included, where two numpy passes for the extremes and
# int64 counts in 8 lanes took 1.2 ns.
def _extremes(x: np.ndarray) -> tuple[int, float, float]:
    """(number of finite values, their minimum, their maximum) in float64: from one compiled pass over the values'
    bits (_bit_extremes; numpy's min and max take two) where they show every value finite, else _finite_extremes.
    The sign of a zero extreme means nothing (numpy's own min picks -0.0 or 0.0 by position): floor(-0.0 / w) is
    bin 0 and every use of a range takes -0.0 as 0.0."""
    if x.size:
        bits = _bit_extremes(*_as_bits(x))
        if _all_finite(x, *bits):
            return x.size, *_from_bits(x, *bits)
    return _finite_extremes(x)


@numba.njit(cache=True, nogil=True)
def _bit_extremes(signed, unsigned):
    """(signed maximum, signed minimum, unsigned maximum) of the bits of nonempty values (_from_bits): integer min
    and max, which vectorise, where a float min with NaN semantics does not."""
    signed_max, signed_min, unsigned_max = signed[0], signed[0], unsigned[0]
    for i in range(signed.size):
        signed_max, signed_min = max(signed_max, signed[i]), min(signed_min, signed[i])
        unsigned_max = max(unsigned_max, unsigned[i])
    return signed_max, signed_min, unsigned_max


def _all_finite(x: np.ndarray, signed_max: int, signed_min: int, unsigned_max: int) -> bool:
    """Whether no value of x is NaN or infinite, from the extremes of their bits: +inf and the NaNs without the
    sign bit are the largest signed, -inf and the NaNs with it the largest unsigned."""
    infinity = np.array([np.inf, -np.inf], x.dtype)
    return signed_max < infinity.view(f"i{x.itemsize}")[0] and unsigned_max < infinity.view(f"u{x.itemsize}")[1]


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


# values per thread at least: below this, one thread counts them all. A parallel region's wake-up and join cost more
# than counting a MobileNetV2 activation (1.2M values at most): in the caller's first calibration chunk (numba's 2
# threads) a sample cost 0.79 ns/value of the caller's CPU counted on one thread, 2.8 to 11 in shares of 128K values
_SHARE = 1 << 20
_BLOCK = 128      # values whose bins one vectorised loop computes before they are counted
_SPARE = 64       # slots after the bins for zeros, and as many for values outside the bins
_PIECE = 1 << 30  # values counted in int32 before they are added to the int64 counts (a multiple of _BLOCK)


def _count_bins(x: np.ndarray, width: float, first: int, counts: np.ndarray, partial: bool = True):
    """counts[floor(v / width) - first] += 1 for every v of x in a bin of counts, in one compiled pass (_count_share)
    shared by numba's threads: each counts its own slice of x into its own counts, added up at the end (integer
    counts: the sum does not depend on how x was cut). width is a power of two, so v * (1 / width) is v / width
    exactly, without a division per value. Returns (values outside the bins, NaN and infinities among them, and
    the extremes of the values' bits, _from_bits); with values outside and not `partial`, counts are unchanged."""
    inv, base = _scalars(x, width, first)
    signed, unsigned = _as_bits(x)
    shares = x.size // _SHARE
    if shares > 1:  # numba's thread count asked only then: it costs as much as counting a small value
        shares = min(numba.get_num_threads(), shares)
    if shares < 2:
        return _count_share(x, signed, unsigned, inv, base, counts, partial)
    return _count_shares(x, signed, unsigned, inv, base, counts, shares, partial)


def _scalars(x: np.ndarray, width: float, first: int):
    """1 / width and first in x's own float type where it holds them exactly (_count_share's arithmetic is then
    exact in it), else in float64."""
    inv, base = 1.0 / width, float(first)
    kind = x.dtype.type
    return (kind(inv), kind(base)) if kind(inv) == inv and kind(base) == base else (inv, base)


# a float type's signed and unsigned integer types of the same size (dtypes looked up, not parsed from a name), and
# the packings of its bits as both and as the float (_from_bits: 0.1 us where numpy scalars' views take 0.7)
_BITS = {np.dtype(t): (np.dtype(f"i{np.dtype(t).itemsize}"), np.dtype(f"u{np.dtype(t).itemsize}")) for t in _FLOATS}
_PACKS = {np.dtype(np.float32): tuple(map(struct.Struct, "iIf")),
          np.dtype(np.float64): tuple(map(struct.Struct, "qQd"))}


def _as_bits(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x's values as the signed and the unsigned integers of their bits (views)."""
    signed, unsigned = _BITS[x.dtype]
    return x.view(signed), x.view(unsigned)


def _from_bits(x: np.ndarray, signed_max: int, signed_min: int, unsigned_max: int) -> tuple[float, float]:
    """(minimum, maximum) of x's values, all finite, from the extremes of their bits (_count_share): the signed
    maximum is the largest value where one is >= +0.0, else the signed minimum is; the unsigned maximum is the most
    negative value where one has its sign set, else the signed minimum is the smallest."""
    signed, unsigned, real = _PACKS[x.dtype]
    smallest = real.unpack(signed.pack(signed_min))[0]
    lo = real.unpack(unsigned.pack(unsigned_max))[0] if unsigned_max >> (8 * x.itemsize - 1) else smallest
    return lo, real.unpack(signed.pack(signed_max))[0] if signed_max >= 0 else smallest


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_shares(x, signed, unsigned, inv, base, counts, shares, partial):
    """_count_share of `shares` equal slices of x at once, each into its own counts, then added to `counts`."""
    parts = np.zeros((shares, counts.size), np.int64)
    outside = np.zeros(shares, np.int64)
    signed_max, signed_min = np.empty(shares, signed.dtype), np.empty(shares, signed.dtype)
    unsigned_max = np.empty(shares, unsigned.dtype)
    for p in numba.prange(shares):
        start, stop = x.size * p // shares, x.size * (p + 1) // shares
        outside[p], signed_max[p], signed_min[p], unsigned_max[p] = _count_share(
            x[start:stop], signed[start:stop], unsigned[start:stop], inv, base, parts[p], True)
    if partial or not outside.sum():
        for p in range(shares):
            counts += parts[p]
    return outside.sum(), signed_max.max(), signed_min.min(), unsigned_max.max()


@numba.njit(cache=True, nogil=True)
def _count_share(x, signed, unsigned, inv, base, counts, partial):
    """counts[floor(v * inv) - base] += 1 for every v of x (nonempty) in a bin of counts (inv a power of two, base
    the integer first bin), and the extremes of x's bits `signed` and `unsigned` (_from_bits gives x's extremes,
    where all are finite, without a second pass over x); returns (values outside the bins, NaN and infinities among
    them, signed maximum, signed minimum, unsigned maximum). With values outside and not `partial`, counts are left
    as they were (x of fewer than _PIECE values: the slots are added once).

    In x's float type (8 values per vector instruction become 16 in float32), which is exact: v * inv only moves
    v's exponent, unless it falls below the smallest normal, where floor gives 0 for a positive value and -1 for a
    negative one (restored where the product rounded to -0.0); floor(v * inv) and base are integers whose difference
    is a bin index (< 2**12), so it is exact. Blocks of _BLOCK values: a loop without stores to the counts finds
    their slots, which vectorises, then a second adds 1 at each slot, into int32 counts that stay in L1 (int64
    counts in 8 lanes, 128 KB zeroed and summed per call, took 2x longer), indexed by unsigned integers (numba adds
    a wraparound for a negative signed index: updates took 1.35x longer). A zero (a relu's: 46% of MobileNetV2's
    activations) goes to one of _SPARE slots after the bins, chosen by position, added to bin 0 at the end, so that
    a run of zeros does not make one count's increments wait for each other (20% faster); a value outside the bins
    to one of _SPARE more."""
    span = counts.size
    slots = np.zeros(span + 2 * _SPARE, np.int32)
    zero_slot = (span + np.arange(_BLOCK) % _SPARE).astype(np.uint32)
    outside_slot = (zero_slot + _SPARE).astype(np.uint32)
    at = np.empty(_BLOCK, np.uint32)
    size = np.float32(span)
    signed_max, signed_min, unsigned_max = signed[0], signed[0], unsigned[0]
    outside = np.int64(0)
    for start in range(0, x.size, _BLOCK):
        n = min(_BLOCK, x.size - start)  # sliced: x[start + i] may be negative for numba, which then gathers
        block, block_signed, block_unsigned = x[start:start + n], signed[start:start + n], unsigned[start:start + n]
        for i in range(n):
            v = block[i]
            signed_max, signed_min = max(signed_max, block_signed[i]), min(signed_min, block_signed[i])
            unsigned_max = max(unsigned_max, block_unsigned[i])
            y = v * inv
            k = np.floor(-np.float32(0.5) if y == 0 and v < 0 else y) - base
            bin_slot, zero, away = np.uint32(k), zero_slot[i], outside_slot[i]  # loads outside the selects: no
            at[i] = bin_slot if k >= 0 and k < size and v != 0 else zero if v == 0 else away  # masked gathers
        for i in range(n):
            slots[at[i]] += 1
        if (start + n) % _PIECE == 0 or start + n == x.size:
            outside += _add_slots(slots, counts, base, partial)
    return outside, signed_max, signed_min, unsigned_max


@numba.njit(cache=True, nogil=True)
def _add_slots(slots, counts, base, partial):
    """Add _count_share's int32 slots to the int64 counts (with values outside the bins only if `partial`), the
    zeros' to bin 0; empty them; return the number of values outside."""
    span = counts.size
    zeros, outside = np.int64(0), np.int64(0)
    for k in range(span, span + _SPARE):
        zeros += slots[k]
        outside += slots[k + _SPARE]
    if zeros and not 0 <= -np.int64(base) < span:  # zeros outside the bins
        outside += zeros
        zeros = 0
    if partial or not outside:
        for k in range(span):
            counts[k] += slots[k]
        if zeros:
            counts[-np.int64(base)] += zeros
    slots[:] = 0
    return outside
