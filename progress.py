"""Progress on stderr for steps that may take more than a second: a line when a step starts and when it ends.

Lines rather than a redrawn bar, so that CI logs and terminals read the same.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def step(self, label: str):
        start = time.perf_counter()
        self.say(f"{label} ...")
        yield
        self.say(f"{label} done in {time.perf_counter() - start:.2f} s")
