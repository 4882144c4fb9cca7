"""Inference API and mmseg's inferencer for the plugin's configs (the model builder and the fast
path re-exported from the checkpoint and deploy rooms)."""
from ..checkpoint.segmentor import build_segmentor
from ..deploy.fast_inference import (FastInferenceModel, fold_bn_into_conv, fuse_conv_bn,
                                     register_conv_bn_pairs)
from .inference import inference_model, init_model
from .inferencer import DeepLabV3Inferencer

__all__ = ['DeepLabV3Inferencer', 'FastInferenceModel', 'build_segmentor',
           'fold_bn_into_conv', 'fuse_conv_bn', 'init_model', 'inference_model',
           'register_conv_bn_pairs']
