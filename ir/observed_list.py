"""A list that routes every in-place change through one hook, so its owner can keep an index current.

Node edge lists keep tensors' reader and writer tables (ir/node.py) and the graph's node list keeps its member set
(ir/graph.py) this way; a pass edits them as plain lists.
"""

from __future__ import annotations


class ObservedList(list):
    """Subclasses implement `_edit(method, *args)`, which must call `method(self, *args)` and return its result."""

    __slots__ = ()

    def _edit(self, method, *args):
        raise NotImplementedError

    def __setitem__(self, i, v):
        self._edit(list.__setitem__, i, v)

    def __delitem__(self, i):
        self._edit(list.__delitem__, i)

    def __iadd__(self, items):
        self._edit(list.extend, list(items))
        return self

    def append(self, item):
        self._edit(list.append, item)

    def extend(self, items):
        self._edit(list.extend, list(items))

    def insert(self, i, item):
        self._edit(list.insert, i, item)

    def pop(self, i=-1):
        return self._edit(list.pop, i)

    def remove(self, item):
        self._edit(list.remove, item)

    def clear(self):
        self._edit(list.clear)

    def sort(self, *, key=None, reverse=False):
        self._edit(lambda lst: list.sort(lst, key=key, reverse=reverse))

    def reverse(self):
        self._edit(list.reverse)

    def __reduce__(self):  # a plain list when copied or pickled: the index belongs to the live owner
        return list, (list(self),)
