"""Inference API, mmseg's inferencer for the plugin's configs, and the fast inference path."""
from .fast_inference import (FastInferenceModel, fold_bn_into_conv, fuse_conv_bn,
                             register_conv_bn_pairs)
from .hooks import FastInferenceHook
from .inference import build_segmentor, inference_model, init_model
from .inferencer import DeepLabV3Inferencer

__all__ = ['DeepLabV3Inferencer', 'FastInferenceModel', 'FastInferenceHook', 'build_segmentor',
           'fold_bn_into_conv', 'fuse_conv_bn', 'init_model', 'inference_model',
           'register_conv_bn_pairs']
