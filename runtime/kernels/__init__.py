"""The runtime's kernels, one small module per kind of op.

Importing the package imports every module in it (in name order), and each module registers its kernels in
KERNELS, so adding an op's kernel is adding a module, with no list to keep in step.
"""

import importlib
import pkgutil

from .registry import KERNELS, kernel

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["KERNELS", "kernel"]
