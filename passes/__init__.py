"""Graph rewrites. Importing this package registers every pass with the manager."""

from . import (binarize, depthwise_separable, eliminate_dead, equalize, fold_batchnorm, fold_constants,
               fuse_activations, layout, legalize_onnx, legalize_tflite, low_rank, prune, quantize_int8,
               transpose_conv_to_conv)
from . import finetune  # fine-tuning with distillation (issue 17); imports torch only when it trains
from .manager import PASSES, PassContext, PassRecord, register_pass, run_pipeline

__all__ = ["PASSES", "PassContext", "PassRecord", "register_pass", "run_pipeline"]
