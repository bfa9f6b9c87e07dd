"""Range observers: exact extremes, percentiles read off the merging histogram, and the MSE-optimal range."""

import collections
import math

import numpy as np
import pytest

from mcc.errors import MccError
from mcc.ir import Graph, Tensor
from mcc.passes.calibrate import RangeObservers
from mcc.passes.observers import OBSERVERS, Histogram, MseObserver, _clipped, _count_shares, make_observer


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
    for shares in (2, 3, 5):
        counts = np.zeros(h.counts.size, np.int64)
        _count_shares(x, 2.0 ** -h.exponent, h.first, counts, shares, not nonfinite)
        assert np.array_equal(counts, h.counts)


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
