"""minimum and maximum (TFLite's MINIMUM / MAXIMUM, which legalize_tflite uses for a clip with arbitrary bounds).

Written as TFLite's reference comparison `a < b ? a : b` rather than np.minimum, so a NaN behaves as there.
"""

from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("minimum", "maximum")
def minimum_maximum(node, inputs):
    a, b = inputs
    return [np.where(a < b if node.op == "minimum" else a > b, a, b)]
