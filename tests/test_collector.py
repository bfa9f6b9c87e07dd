"""collector.old_objects_frozen: the objects from before a call are out of the collector's sight during it and back
in it afterwards, also after an exception, in nested calls and in calls from two threads at once; the youngest
generation's threshold is raised for the call and restored after it."""

import gc
import threading
import weakref

import pytest

from mcc.collector import YOUNG_THRESHOLD, old_objects_frozen


class Cycle:
    def __init__(self):
        self.me = self


def test_old_objects_are_frozen_during_the_call_and_collectable_after():
    gc.collect()
    old = Cycle()
    gone = weakref.ref(old)
    del old  # cyclic garbage from before the call

    @old_objects_frozen
    def work():
        assert gc.get_freeze_count() > 0
        gc.collect()  # a full collection inside does not see the old cycle
        assert gone() is not None
        new = Cycle()
        made = weakref.ref(new)
        del new
        gc.collect()  # the call's own cyclic garbage is collected
        assert made() is None
        return 7

    assert work() == 7
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_an_exception_and_nested_calls_unfreeze_once_at_the_end():
    seen = []

    @old_objects_frozen
    def inner():
        seen.append(gc.get_freeze_count())
        raise ValueError("inner failed")

    @old_objects_frozen
    def outer():
        with pytest.raises(ValueError, match="inner failed"):
            inner()
        seen.append(gc.get_freeze_count())  # still frozen: the outer call is not over
        raise KeyError("outer failed")

    with pytest.raises(KeyError):
        outer()
    assert seen[0] > 0 and seen[1] > 0
    assert gc.get_freeze_count() == 0


def test_calls_on_two_threads_share_one_freeze():
    inside, release = threading.Barrier(3), threading.Event()
    counts = []

    @old_objects_frozen
    def work(wait):
        inside.wait()
        if wait:
            release.wait()
        counts.append(gc.get_freeze_count())

    threads = [threading.Thread(target=work, args=(w,)) for w in (False, True)]
    for t in threads:
        t.start()
    inside.wait()  # both are inside
    threads[0].join()  # the first has left; the second is still inside
    assert gc.get_freeze_count() > 0
    release.set()
    threads[1].join()
    assert all(c > 0 for c in counts) and gc.get_freeze_count() == 0


def test_the_young_threshold_is_raised_during_the_call_and_restored_after():
    before = gc.get_threshold()
    seen = []

    @old_objects_frozen
    def work():
        seen.append(gc.get_threshold())
        raise ValueError("failed")

    with pytest.raises(ValueError):
        work()
    assert seen == [(YOUNG_THRESHOLD, *before[1:])] and gc.get_threshold() == before
    gc.set_threshold(2 * YOUNG_THRESHOLD, 5, 5)  # a caller's higher threshold is kept
    try:
        seen.clear()
        with pytest.raises(ValueError):
            work()
        assert seen == [(2 * YOUNG_THRESHOLD, 5, 5)] and gc.get_threshold() == (2 * YOUNG_THRESHOLD, 5, 5)
    finally:
        gc.set_threshold(*before)
