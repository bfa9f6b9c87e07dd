"""Range observers: exact extremes, percentiles read off the merging histogram, and the MSE-optimal range."""

import collections
import math

import numpy as np
import pytest

from mcc.errors import MccError
from mcc.ir import Graph, Tensor
from mcc.passes.calibrate import RangeObservers
from mcc.passes.observers import (OBSERVERS, Histogram, MseObserver, _BLOCK, _as_bits, _clipped, _count_bins,
                                  _count_shares, _extremes, _from_bits, make_observer)


def _fake_quant_mse(x, lo, hi):
    """Mean squared error of int8 asymmetric quantization of x over [lo, hi], by actually quantizing."""
    scale = (hi - lo) / 255.0
    zero_point = np.round(-128 - lo / scale)
    q = np.clip(np.round(x / scale) + zero_point, -128, 127)
    return float(np.mean((x - (q - zero_point) * scale) ** 2))


def test_minmax_is_exact_and_contains_zero():
    o = make_observer("minmax")
    o.update(np.array([0.5, 2.0, np.nan, np.inf]))
    o.update(np.array([[1.0, 3.25]]))
    assert o.range() == (0.0, 3.25)  # all positive: widened down to 0; NaN and inf ignored
    o.update(np.array([-7.0]))
    assert o.range() == (-7.0, 3.25)
    assert make_observer("minmax").range() == (0.0, 0.0)


def test_histogram_merges_bins_exactly_when_the_range_grows():
    rng = np.random.default_rng(0)
    small, large = rng.uniform(-0.01, 0.02, 5000), rng.normal(0, 50, 5000)
    h = Histogram()
    h.update(small)
    width_before = 2.0 ** h.exponent
    h.update(large)
    assert 2.0 ** h.exponent > width_before and h.counts.size <= Histogram.MAX_BINS
    assert h.counts.sum() == 10000
    # every value sits in the bin its own floor(x / w) names, however many merges happened
    both = np.concatenate([small, large])
    k = np.floor(both / 2.0 ** h.exponent).astype(np.int64)
    assert np.array_equal(np.bincount(k - h.first, minlength=h.counts.size), h.counts)


def test_percentile_matches_numpy_within_a_bin():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200_000)
    o = make_observer("percentile:99.9")
    for part in np.array_split(x, 7):
        o.update(part)
    lo, hi = o.range()
    width = 2.0 ** o.exponent
    assert abs(hi - np.percentile(x, 99.9)) <= width
    assert abs(lo - np.percentile(x, 0.1)) <= width
    default = make_observer("percentile")
    default.update(x)
    assert hi < default.range()[1] < x.max()  # 99.99 clips less than 99.9, and still clips the maximum


def test_mse_range_beats_minmax_on_heavy_tails():
    x = np.random.default_rng(2).laplace(0.0, 1.0, 100_000)
    mse, minmax = make_observer("mse"), make_observer("minmax")
    for o in (mse, minmax):
        o.update(x)
    lo, hi = mse.range()
    assert minmax.range()[0] < lo < 0 < hi < minmax.range()[1]  # clips both tails
    error = _fake_quant_mse(x, lo, hi)
    assert error < _fake_quant_mse(x, *minmax.range())  # clipping less would cost more rounding ...
    assert error < _fake_quant_mse(x, lo / 2, hi / 2)    # ... and clipping more, more clipping


def test_mse_keeps_one_sided_ranges_one_sided():
    relu = np.maximum(np.random.default_rng(3).standard_normal(50_000), 0)
    o = MseObserver()
    o.update(relu)
    lo, hi = o.range()
    assert lo == 0.0 and 0 < hi <= relu.max()


@pytest.mark.parametrize("spec, message", [("kl", "unknown observer 'kl'"), ("percentile:abc", "not a number"),
                                           ("percentile:20", "outside"), ("mse:3", "takes no value")])
def test_bad_observer_specs_are_refused(spec, message):
    with pytest.raises(MccError, match=message):
        make_observer(spec)


def test_every_named_observer_can_be_made():
    for name in OBSERVERS:
        o = make_observer(name)
        o.update(np.linspace(-1, 3, 1000))
        lo, hi = o.range()
        assert -1 <= lo < 0 < hi <= 3


@pytest.mark.parametrize("spec", ["mse", "percentile", "percentile:99.9", "minmax"])
def test_a_chunk_of_batches_gives_the_counts_of_one_update_per_batch(spec):
    """Calibration runs many samples at once (calibrate.in_chunks); the ranges must not depend on it."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        batch, k = int(rng.integers(1, 3)), int(rng.integers(2, 9))
        scale = 10.0 ** rng.uniform(-6, 6, size=(k * batch, 1))  # later batches force the bins to widen
        x = ((rng.standard_normal((k * batch, 40)) + rng.uniform(-3, 3)) * scale).astype(np.float32)
        if trial % 5 == 0:
            x[:batch] = np.nan  # the first batch has nothing finite: the second fixes the bin width
        one, chunked = make_observer(spec), make_observer(spec)
        for i in range(0, len(x), batch):
            one.update(x[i:i + batch])
        split = int(rng.integers(0, k + 1)) * batch
        chunked.update_batches(x[:split], batch)
        chunked.update_batches(x[split:], batch)
        assert chunked.range() == one.range()
        if hasattr(one, "counts"):
            assert (chunked.exponent, chunked.first) == (one.exponent, one.first)
            assert np.array_equal(chunked.counts, one.counts)
        assert chunked.range() != make_observer(spec).range() or not np.isfinite(x).any()


@pytest.mark.parametrize("nonfinite", [False, True])
def test_counts_shared_by_threads_are_those_of_one_pass(nonfinite):
    """A large value is counted in slices, one per thread, whose counts are added: the same counts as one pass."""
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal(700_001).astype(np.float32), 0)  # a relu's runs of zeros
    if nonfinite:
        x[rng.integers(0, x.size, 50)] = np.nan
        x[7] = np.inf
    h = Histogram()
    h.update(x)
    finite = x[np.isfinite(x)]
    k = np.floor(finite.astype(np.float64) / 2.0 ** h.exponent).astype(np.int64)
    assert np.array_equal(np.bincount(k - h.first, minlength=h.counts.size), h.counts)
    scalars = np.float32(2.0 ** -h.exponent), np.float32(h.first)
    for shares in (2, 3, 5):
        counts = np.zeros(h.counts.size, np.int64)
        outside, *bits = _count_shares(x, *_as_bits(x), *scalars, counts, shares, True)
        assert np.array_equal(counts, h.counts) and outside == x.size - finite.size
        if nonfinite:  # not partial: nothing is counted where a value is outside the bins
            assert _count_shares(x, *_as_bits(x), *scalars, counts, shares, False)[0] == outside
            assert np.array_equal(counts, h.counts)
        else:
            assert _from_bits(x, *bits) == (finite.min(), finite.max())


def test_clipped_sums_are_numpy_s_bit_for_bit():
    """MseObserver's per-bound sums (_clipped) reproduce numpy's pairwise row sums of the [bounds, bins] products,
    so the chosen range does not move by a bit."""
    rng = np.random.default_rng(12)
    for n in list(range(1, 300, 7)) + [1000, 2047, 2048]:
        centers = np.sort(rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3))
        counts = rng.integers(0, 10 ** int(rng.integers(1, 9)), n).astype(np.float64)
        bounds = np.abs(centers).max() * MseObserver.SHRINK
        for side, differences in ((-1.0, -bounds[:, None] - centers), (1.0, centers - bounds[:, None])):
            clipped = np.maximum(differences, 0.0)
            number, error = _clipped(-bounds if side < 0 else bounds, centers, counts, side)
            assert np.array_equal(number, (counts * (clipped > 0.0)).sum(axis=1))
            assert np.array_equal(error.view(np.int64), (counts * clipped ** 2).sum(axis=1).view(np.int64)), n


def _awkward_values(rng, n, dtype):
    """Values that test the exactness of counting: runs of zeros and -0.0, float32 subnormals (and tiny negatives,
    whose bin is -1, not 0), the largest and smallest normals, values on bin edges, NaN and infinities."""
    f = np.finfo(dtype)
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)).astype(dtype)
    x[rng.random(n) < 0.4] = 0.0
    special = np.array([-0.0, f.smallest_subnormal, -f.smallest_subnormal, f.tiny, -f.tiny, f.max, -f.max, f.eps,
                        -f.eps, 1.0, -1.0, 0.5, -0.5, 2.0 ** -60, -(2.0 ** -60), np.nan, np.inf, -np.inf], dtype)
    where = rng.integers(0, n, 3 * special.size)
    x[where] = np.resize(special, where.size)
    return x


def _exact_bins(finite, exponent):
    """floor(v / 2**exponent) for float64 v, a value smaller than the bin width taken as -1 or 0 by its sign, as
    v * 2**-exponent may round to (-)0 in float64 too where it falls below the smallest normal."""
    small = np.abs(finite) < 2.0 ** exponent
    return np.where(small, np.where(finite < 0, -1.0, 0.0), np.floor(finite * 2.0 ** -exponent)).astype(np.int64)


def _reference_counts(x, exponent, first, size):
    return np.bincount(_exact_bins(x[np.isfinite(x)].astype(np.float64), exponent) - first, minlength=size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counts_and_extremes_are_numpy_s(dtype):
    """Compiled extremes and counts against plain numpy, for sizes around the block size and with every kind of
    awkward value; then the histogram of several updates, which widens its bins, against numpy's counts."""
    rng = np.random.default_rng(13)
    sizes = [1, 2, _BLOCK - 1, _BLOCK, _BLOCK + 1, 3 * _BLOCK + 5, 10_007]
    for n in sizes:
        for trial in range(5):
            x = _awkward_values(rng, n, dtype)
            if trial == 1:
                x = x[np.isfinite(x)] if np.isfinite(x).any() else np.zeros(1, dtype)
            if trial == 2:
                x = np.abs(x)  # no negatives: -0.0 may be an extreme
            if trial == 3:  # subnormals and zeros only: bins finer than float32's smallest step
                x = np.where(np.isfinite(x), x, 0).astype(np.float64)
                x = (np.sign(x) * rng.integers(0, 50, n) * np.finfo(np.float32).smallest_subnormal).astype(dtype)
            finite = x[np.isfinite(x)].astype(np.float64)
            count, lo, hi = _extremes(x)
            assert count == finite.size
            if count:
                assert (lo, hi) == (finite.min(), finite.max())
            else:
                lo = hi = 0.0
            # the finest bins the histogram uses (at least 2**-100 wide; the span halved, as float64 could overflow)
            fit = math.ceil(math.log2(max(hi / 2 - lo / 2, 2.0 ** -101))) + 1 - int(math.log2(Histogram.MAX_BINS))
            for exponent in (fit, fit + 1, fit + 9):
                k = _exact_bins(finite, exponent)
                first = int(k.min()) if k.size else 0
                size = int(k.max()) - first + 1 if k.size else 1
                counts = np.full(size, 5, np.int64)  # counts are added to what is there
                _count_bins(x, 2.0 ** exponent, first, counts)
                assert np.array_equal(counts - 5, _reference_counts(x, exponent, first, size)), (n, exponent)
    h, seen = Histogram(), []
    for n in sizes:
        with np.errstate(over="ignore"):  # the largest values may become infinities
            x = _awkward_values(rng, n, dtype) * dtype(10.0 ** rng.uniform(-30, 30))
        h.update(x)
        seen.append(x)
        both = np.concatenate(seen)
        if h.exponent is None:  # nothing finite yet
            assert not np.isfinite(both).any() and h.counts.size == 0
            continue
        assert np.array_equal(h.counts, _reference_counts(both, h.exponent, h.first, h.counts.size))


def test_histogram_in_one_pass_widens_as_with_two():
    """Later updates count at the current width and merge bins pairwise after (Histogram._update_in_window): the
    counts are numpy's, the extremes exact, and the width the finest at which everything seen spans at most
    MAX_BINS bins, as when the extremes pick it before counting."""
    rng = np.random.default_rng(14)
    h, seen, start = Histogram(), [], None
    for step in range(40):
        x = rng.standard_normal(int(rng.integers(1, 3000))) * 1.15 ** step  # a spread growing on both sides
        x = (np.maximum(x, 0) if step % 5 == 4 else x + step % 3).astype(np.float32)
        if step == 17:
            x[5 % x.size] = np.nan  # one pass refuses it: the two-pass update takes over
        h.update(x)
        seen.append(x)
        start = h.exponent if start is None else start
        both = np.concatenate(seen).astype(np.float64)
        finite = both[np.isfinite(both)]
        assert (h.lo, h.hi) == (finite.min(), finite.max())
        assert np.array_equal(h.counts, _reference_counts(both, h.exponent, h.first, h.counts.size))
        k = _exact_bins(finite, h.exponent - 1)
        assert h.exponent == start or k.max() - k.min() + 1 > Histogram.MAX_BINS  # the finest that fits
    assert h.exponent > start + 2


def _observed_apart(spec, x, batch, split, cuts, ahead):
    """What calibrate.float_run makes of `x` (model batches of `batch` rows) with workers: rows [:split] observed in
    order, then shares cut at `cuts`, each observed by a fork taken when the share is handed out, at most `ahead`
    shares before the merges of the earlier ones (in_order's look-ahead), merged in order."""
    graph = Graph()
    graph.inputs.append(Tensor("x", (batch, x.shape[1])))
    main, t = RangeObservers(graph, spec), graph.inputs[0]
    main.see(t, x[:split])
    forks, stashed = collections.deque(), 0
    for lo, hi in zip([split] + cuts, cuts + [len(x)]):
        twin = main.fork()
        stashed += not main.by_name["x"].settled
        twin.see(t, x[lo:hi])
        forks.append(twin)
        if len(forks) > ahead:
            main.merge(forks.popleft())
    while forks:
        main.merge(forks.popleft())
    return main.by_name["x"], stashed


def _same_as_one_run(spec, x, batch, split, cuts, ahead):
    """Assert that x observed apart (_observed_apart) is x observed one batch at a time; return the number of
    shares whose values were copied to be observed in order."""
    one = make_observer(spec)
    for i in range(0, len(x), batch):
        one.update_batches(x[i:i + batch], batch)
    apart, stashed = _observed_apart(spec, x, batch, split, cuts, ahead)
    assert apart.range() == one.range() and (apart.lo, apart.hi) == (one.lo, one.hi)
    if hasattr(one, "counts"):
        assert (apart.exponent, apart.first) == (one.exponent, one.first)
        assert np.array_equal(apart.counts, one.counts)
    assert apart.range() != make_observer(spec).range() or not np.isfinite(x).any()
    return one, stashed


@pytest.mark.parametrize("spec", ["mse", "percentile", "minmax"])
def test_shares_observed_apart_and_merged_give_the_observer_of_one_run(spec):
    """Calibration observes shares of the samples on worker threads and merges them (RangeObservers.fork, merge):
    ranges, counts, bin width and extremes are those of one update per batch, in order, also where later shares
    widen the bins, hold NaN and infinities, or where nothing finite came before (the first finite batch, which
    fixes the bin width, is then observed in order from copies)."""
    # two shares handed out before any finite value was merged; the second's own first batch would pick a wider
    # bin (1024 + 2**-13 is past a power of two) than the first's, which holds both (1024 - 2**-14): its values
    # must be counted at the width the first one fixed
    x = np.repeat(np.float32([np.nan, 1024 - 2.0 ** -14, 1024 + 2.0 ** -13]), 40).reshape(3, 40)
    one, stashed = _same_as_one_run(spec, x, 1, 1, [2], 2)
    assert spec == "minmax" or (stashed == 2 and one.exponent == -21)
    # finite shares counted in one pass (Histogram._update_in_window) into a fork: their bins lie in the fork's
    # window but away from bin 0 and from the bins counted before; the fork's counts span their bins only
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(0.1, 2.0, (1, 400)), rng.uniform(1.5, 1.9, (6, 400))]).astype(np.float32)
    _same_as_one_run(spec, x, 1, 1, [3, 5], 2)
    rng = np.random.default_rng(3)
    widened = stashed = 0
    for trial in range(80):
        batch, k = int(rng.integers(1, 3)), int(rng.integers(4, 12))
        scale = 10.0 ** np.sort(rng.uniform(-6, 6, size=(k * batch, 1)), axis=0)  # later shares widen the bins
        x = ((rng.standard_normal((k * batch, 40)) + rng.uniform(-3, 3)) * scale).astype(np.float32)
        x[rng.integers(0, x.shape[0], 3), rng.integers(0, 40, 3)] = [np.nan, np.inf, -np.inf]
        if trial % 4 == 0:
            x[:int(rng.integers(1, k)) * batch] = np.nan  # nothing finite in the first batches, maybe shares
        if trial % 16 == 1:
            x[:] = np.inf
        split = int(rng.integers(1, 3)) * batch
        cuts = sorted({int(c) * batch for c in rng.integers(split // batch + 1, k, size=int(rng.integers(0, 5)))})
        one, stash = _same_as_one_run(spec, x, batch, split, cuts, int(rng.integers(1, 5)))
        stashed += stash
        if hasattr(one, "counts") and one.exponent is not None:
            first = next(x[i:i + batch] for i in range(0, len(x), batch) if np.isfinite(x[i:i + batch]).any())
            own = math.ceil(math.log2(np.ptp(first[np.isfinite(first)]) / Histogram.MAX_BINS))
            widened += one.exponent > own
    assert spec == "minmax" or (widened > 20 and stashed > 5)  # the cases above were exercised


def _observed_by_workers(spec, x, batch, split, cuts, ahead, rng):
    """_observed_apart where each share goes to one of 3 workers at random, whose settled observers' forks count all
    its shares (RangeObservers.fork with `kept`) and are merged at the end in a random order, after the shares'
    copies of values (observed in order, share by share)."""
    graph = Graph()
    graph.inputs.append(Tensor("x", (batch, x.shape[1])))
    main, t = RangeObservers(graph, spec), graph.inputs[0]
    main.see(t, x[:split])
    workers = [main.kept_forks() for _ in range(3)]
    forks, kept_counted = collections.deque(), 0
    for lo, hi in zip([split] + cuts, cuts + [len(x)]):
        mine = workers[int(rng.integers(0, 3))]
        twin = main.fork(mine)
        kept_counted += twin.by_name["x"] is mine.by_name.get("x")
        twin.see(t, x[lo:hi])
        forks.append((twin, mine))
        if len(forks) > ahead:
            main.merge(*forks.popleft())
    while forks:
        main.merge(*forks.popleft())
    for i in rng.permutation(3):
        main.merge(workers[i])
    return main.by_name["x"], kept_counted


@pytest.mark.parametrize("spec", ["mse", "percentile", "minmax"])
def test_a_worker_s_forks_counting_many_shares_give_the_observer_of_one_run(spec):
    """Settled observers forked once per worker (RangeObservers.fork's `kept`) count that worker's shares, in no
    particular order, and are merged at the end in any order: ranges, counts, bin width and extremes are those of
    one update per batch, in order, also where later shares widen the bins or come before the first finite one."""
    rng = np.random.default_rng(8)
    kept = 0
    for trial in range(60):
        batch, k = int(rng.integers(1, 3)), int(rng.integers(5, 14))
        scale = 10.0 ** rng.permutation(np.sort(rng.uniform(-6, 6, size=(k * batch, 1)), axis=0))
        x = ((rng.standard_normal((k * batch, 40)) + rng.uniform(-3, 3)) * scale).astype(np.float32)
        x[rng.integers(0, x.shape[0], 3), rng.integers(0, 40, 3)] = [np.nan, np.inf, -np.inf]
        if trial % 4 == 0:
            x[:int(rng.integers(1, k)) * batch] = np.nan
        split = int(rng.integers(1, 3)) * batch
        cuts = sorted({int(c) * batch for c in rng.integers(split // batch + 1, k, size=int(rng.integers(2, 7)))})
        one = make_observer(spec)
        for i in range(0, len(x), batch):
            one.update_batches(x[i:i + batch], batch)
        apart, counted = _observed_by_workers(spec, x, batch, split, cuts, int(rng.integers(1, 4)), rng)
        kept += counted
        assert apart.range() == one.range() and (apart.lo, apart.hi) == (one.lo, one.hi)
        if hasattr(one, "counts"):
            assert (apart.exponent, apart.first) == (one.exponent, one.first)
            assert np.array_equal(apart.counts, one.counts)
    assert kept > 100  # shares were counted by the workers' forks
