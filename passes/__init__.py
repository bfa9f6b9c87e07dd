"""Graph rewrites. Importing this package registers every pass with the manager."""

from . import (depthwise_separable, eliminate_dead, equalize, fold_batchnorm, fold_constants, fuse_activations, layout,
               legalize_onnx, legalize_tflite, low_rank, quantize_int8, transpose_conv_to_conv)
from .manager import PASSES, PassContext, PassRecord, register_pass, run_pipeline

__all__ = ["PASSES", "PassContext", "PassRecord", "register_pass", "run_pipeline"]
