"""An exported ONNX model (float32 or int8) as an mmseg segmentor: ``tools/test.py CONFIG
model.onnx`` scores it with the config's data and metric, like the PyTorch model."""
from typing import List, Optional

import torch
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

__all__ = ['ONNXRuntimeSegmentor']


@MODELS.register_module()
class ONNXRuntimeSegmentor(BaseSegmentor):
    """Whole-image inference with a ``tools/export_onnx.py`` model (normalisation in the graph),
    ``data_preprocessor`` and ``align_corners`` of the config; ``threads`` None: torch's."""

    def __init__(self, onnx_file: str, data_preprocessor: dict, align_corners: bool = False,
                 threads: Optional[int] = None, init_cfg: Optional[dict] = None) -> None:
        import onnxruntime as ort
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(onnx_file, options,
                                            providers=['CPUExecutionProvider'])
        self.onnx_file, self.align_corners = onnx_file, align_corners

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        # The graph takes BGR 0..255: padding becomes the mean colour, normalised back to zero.
        images, preprocessor = inputs.float(), self.data_preprocessor
        if getattr(preprocessor, '_enable_normalize', False):
            images = images * preprocessor.std + preprocessor.mean
        if getattr(preprocessor, 'channel_conversion', False):
            images = images.flip(1)
        return torch.from_numpy(self.session.run(None, {'image': images.cpu().numpy()})[0])

    def predict(self, inputs: torch.Tensor, data_samples: Optional[list] = None) -> list:
        return self.postprocess_result(self.encode_decode(inputs, None), data_samples)

    def _forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None):
        return self.encode_decode(inputs, None)

    def extract_feat(self, inputs: torch.Tensor):
        raise NotImplementedError('ONNXRuntimeSegmentor runs the whole graph: no features')

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        raise NotImplementedError('ONNXRuntimeSegmentor is inference-only')
