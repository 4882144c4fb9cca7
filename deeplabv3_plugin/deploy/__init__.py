"""Deployment: the PyTorch fast path (BN folded, channels_last), the ONNX export, int8
quantization, the engines that run the exported graph (ONNX Runtime, OpenVINO) as an mmseg
segmentor, their cache, and which engine ``auto`` picks."""
from .engines import Engine, choose_engine
from .fast_inference import FastInferenceModel
from .segmentor import ExportedSegmentor

__all__ = ['Engine', 'ExportedSegmentor', 'FastInferenceModel', 'choose_engine']
