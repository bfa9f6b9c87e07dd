"""Python's cyclic garbage collector during a long piece of mcc's work (a compile).

A full collection walks every object the process holds; with torch imported that is some 300,000-400,000 objects,
and one took 0.2 s, in every third 10-sample compile of a .pt2 MobileNetV2 (its loading makes tens of thousands of
objects that live through a few allocation rounds, which is what triggers a full collection). The objects that
existed before the work began are not its garbage, so `old_objects_frozen` moves them out of the collector's sight
(gc.freeze) for the length of the call and back (gc.unfreeze) after it: collections during the call, full ones
included, walk only what the call made, and the process's objects are as collectable afterwards as before.
Servers do the same after start-up (gc.freeze's documentation); mcc undoes it, being a library in someone's process.

For the same length it also collects the youngest generation every YOUNG_THRESHOLD net allocations instead of every
700 (Python's default): a steady 10-sample compile of the bench MobileNetV2 ran 72 young and 6 middle collections
over what it made (IR nodes, tensors, their tables, kernel caches), 11.6 + 18.3 ms with the GIL held (gc.callbacks,
on the loaded 2-core host), where one young collection of 5.7 ms now frees the same few thousand cyclic objects.
Garbage stays bounded: a collection still runs every YOUNG_THRESHOLD allocations.
"""

from __future__ import annotations

import functools
import gc
import threading

_LOCK = threading.Lock()
_DEPTH = 0  # calls inside old_objects_frozen now, on any thread: the first freezes, the last to leave unfreezes
_THRESHOLDS: tuple = ()  # the collector's thresholds when the first call came in, restored by the last to leave
YOUNG_THRESHOLD = 50_000


def old_objects_frozen(fn):
    """`fn` with the objects that exist when it is called frozen (gc.freeze) and the youngest generation collected
    every YOUNG_THRESHOLD allocations (or the caller's threshold, if higher), until it returns or raises. Nested
    and concurrent calls share one freeze, lifted by the last to leave, who restores the thresholds."""
    @functools.wraps(fn)
    def frozen(*args, **kwargs):
        global _DEPTH, _THRESHOLDS
        with _LOCK:
            if _DEPTH == 0:
                gc.freeze()
                _THRESHOLDS = gc.get_threshold()
                gc.set_threshold(max(_THRESHOLDS[0], YOUNG_THRESHOLD), *_THRESHOLDS[1:])
            _DEPTH += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _LOCK:
                _DEPTH -= 1
                if _DEPTH == 0:
                    gc.set_threshold(*_THRESHOLDS)
                    gc.unfreeze()

    return frozen
