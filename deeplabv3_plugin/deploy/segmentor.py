"""An exported graph (float32 or int8) as an mmseg segmentor: ``tools/test.py`` scores it with the
config's data, pipeline, canvas, TTA and metric, like the PyTorch model."""
from typing import List, Optional

import numpy as np
import torch
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

from .runtimes import make_runner

__all__ = ['ExportedSegmentor', 'exported_model_cfg']


@MODELS.register_module()
class ExportedSegmentor(BaseSegmentor):
    """Whole-image inference with an exported graph (normalisation inside) run by ``backend``
    (``'onnxruntime'`` or ``'openvino'``), with the config's ``data_preprocessor`` and
    ``align_corners``, and the head's ``out_channels`` (classes; 1: binary, as mmseg's heads);
    ``precision`` and ``threads`` as :func:`~.runtimes.make_runner`."""

    def __init__(self, onnx_file: str, data_preprocessor: dict, backend: str = 'onnxruntime',
                 precision: str = 'fp32', align_corners: bool = False, out_channels: int = 2,
                 threads: Optional[int] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.out_channels = out_channels  # SegTTAModel merges softmax scores when > 1
        self.run = make_runner(backend, onnx_file, precision, threads)
        self.onnx_file, self.backend, self.precision = onnx_file, backend, precision
        self.align_corners = align_corners

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        # The graph takes BGR 0..255: padding becomes the mean colour, normalised back to zero.
        images, preprocessor = inputs.float(), self.data_preprocessor
        if getattr(preprocessor, '_enable_normalize', False):
            images = images * preprocessor.std + preprocessor.mean
        if getattr(preprocessor, 'channel_conversion', False):
            images = images.flip(1)
        array = np.ascontiguousarray(images.cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.run(array))

    def predict(self, inputs: torch.Tensor, data_samples: Optional[list] = None) -> list:
        return self.postprocess_result(self.encode_decode(inputs, None), data_samples)

    def _forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None):
        return self.encode_decode(inputs, None)

    def extract_feat(self, inputs: torch.Tensor):
        raise NotImplementedError(f'ExportedSegmentor runs the whole graph with {self.backend}: '
                                  'no features')

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        raise NotImplementedError('ExportedSegmentor is inference-only')


def exported_model_cfg(model_cfg: dict, onnx_file: str, backend: str = 'onnxruntime',
                       precision: str = 'fp32') -> dict:
    """The ``ExportedSegmentor`` config standing in for ``model_cfg`` (an ``EncoderDecoder``'s):
    its data preprocessor, ``align_corners`` and classes."""
    head = model_cfg['decode_head']
    return dict(type='ExportedSegmentor', onnx_file=onnx_file, backend=backend,
                precision=precision, data_preprocessor=model_cfg['data_preprocessor'],
                align_corners=head.get('align_corners', False),
                out_channels=head.get('out_channels') or head['num_classes'])
