"""An exported ONNX model (float32 or int8) as an mmseg segmentor, run by ONNX Runtime.

``tools/test.py CONFIG model.onnx`` tests it through the config's dataset, pipeline, data
preprocessor and metric, so its mIoU compares with the PyTorch model's (``--tta`` too).
"""
from typing import List, Optional

import numpy as np
import torch
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

__all__ = ['ONNXRuntimeSegmentor']


@MODELS.register_module()
class ONNXRuntimeSegmentor(BaseSegmentor):
    """Whole-image inference with an ONNX model of ``tools/export_onnx.py`` (inference only).

    Args:
        onnx_file (str): Exported with the normalisation in the graph (the default).
        data_preprocessor (dict): The config's ``SegDataPreProcessor``.
        align_corners (bool): The decode head's, for resizing logits to the original image.
        threads (int, optional): ONNX Runtime's intra-op threads; None: torch's thread count.
    """

    def __init__(self, onnx_file: str, data_preprocessor: dict, align_corners: bool = False,
                 threads: Optional[int] = None, init_cfg: Optional[dict] = None) -> None:
        import onnxruntime as ort
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(onnx_file, options,
                                            providers=['CPUExecutionProvider'])
        self.onnx_file = onnx_file
        self.align_corners = align_corners

    def _raw_images(self, inputs: torch.Tensor) -> np.ndarray:
        """The preprocessed batch back in the graph's input (BGR, 0..255): padding becomes the
        mean colour, which the graph normalises back to the zeros PyTorch sees."""
        preprocessor = self.data_preprocessor
        images = inputs.float()
        if getattr(preprocessor, '_enable_normalize', False):
            images = images * preprocessor.std + preprocessor.mean
        if getattr(preprocessor, 'channel_conversion', False):
            images = images.flip(1)
        return images.cpu().numpy()

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        logits = self.session.run(None, {'image': self._raw_images(inputs)})[0]
        return torch.from_numpy(logits)

    def predict(self, inputs: torch.Tensor, data_samples: Optional[list] = None) -> list:
        metas = [sample.metainfo for sample in data_samples] if data_samples else None
        return self.postprocess_result(self.encode_decode(inputs, metas), data_samples)

    def _forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None):
        return self.encode_decode(inputs, None)

    def extract_feat(self, inputs: torch.Tensor):
        raise NotImplementedError('ONNXRuntimeSegmentor runs the whole graph: no features')

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        raise NotImplementedError('ONNXRuntimeSegmentor is inference-only')
