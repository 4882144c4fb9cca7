"""Inference API, mmseg's inferencer for the plugin's configs, and the fast inference path."""
from .fast_inference import (FastInferenceModel, cpu_supports_bf16, fold_bn_into_conv,
                             fuse_conv_bn, register_conv_bn_pairs)
from .hooks import FastInferenceHook
from .inference import inference_model, init_model
from .inferencer import DeepLabV3Inferencer

__all__ = [
    'DeepLabV3Inferencer', 'FastInferenceModel', 'FastInferenceHook', 'cpu_supports_bf16',
    'fold_bn_into_conv', 'fuse_conv_bn', 'init_model', 'inference_model', 'register_conv_bn_pairs'
]
