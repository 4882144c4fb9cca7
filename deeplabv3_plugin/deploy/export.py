"""ONNX export (dynamic batch/height/width) of ``EncoderDecoder``'s whole-image inference on raw
BGR 0..255 images, normalisation included, and its check with ONNX Runtime."""
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from deeplabv3_plugin.errors import UserInputError

__all__ = ['SegmentorExportWrapper', 'export_onnx', 'run_onnxruntime', 'compare_with_pytorch',
           'parse_shape']

INPUT_NAME = 'image'
OUTPUT_NAME = 'logits'
#: Smallest input height/width: stem and max pool reduce by 4, each stride-2 conv needs a map.
MIN_SIZE = 32


class SegmentorExportWrapper(nn.Module):
    """Raw image batch -> full-resolution logits of an eval-mode ``EncoderDecoder``; with
    ``normalize`` the data preprocessor's channel flip and mean/std are in the graph."""

    def __init__(self, segmentor: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.segmentor, self.normalize = segmentor, normalize
        preprocessor = segmentor.data_preprocessor
        self.flip_channels = bool(getattr(preprocessor, 'channel_conversion', False))
        enabled = bool(getattr(preprocessor, '_enable_normalize', False))
        for name, default in (('mean', torch.zeros(3)), ('std', torch.ones(3))):
            value = getattr(preprocessor, name).detach().clone() if enabled else default
            self.register_buffer(name, value.reshape(1, -1, 1, 1).float(), persistent=False)
        self.align_corners = bool(segmentor.decode_head.align_corners)

    def forward(self, image: Tensor) -> Tensor:
        x = image.flip(1) if self.normalize and self.flip_channels else image
        x = (x - self.mean) / self.std if self.normalize else x
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        return nn.functional.interpolate(
            logits, size=image.shape[2:], mode='bilinear', align_corners=self.align_corners)


def export_onnx(model: nn.Module, out_file: str, example_shape: Sequence[int] = (1, 3, 97, 129),
                normalize: bool = True, opset_version=None) -> nn.Module:
    """Export ``model`` (an eval-mode segmentor, see ``apis.build_segmentor``) to ``out_file``;
    returns the exported wrapper. The example's odd, unequal sizes specialise no size."""
    wrapper = SegmentorExportWrapper(model, normalize=normalize).eval()
    dim = torch.export.Dim
    dynamic_shapes = {INPUT_NAME: {0: dim('batch', min=1, max=1024),
                                   2: dim('height', min=MIN_SIZE, max=8192),
                                   3: dim('width', min=MIN_SIZE, max=8192)}}
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (torch.rand(*example_shape) * 255, ), out_file, dynamo=True,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
            opset_version=opset_version, external_data=False, optimize=True)
    return wrapper


def run_onnxruntime(onnx_file: str, image: np.ndarray) -> np.ndarray:
    """Run the exported model with ONNX Runtime on the CPU; returns the logits."""
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    return session.run([OUTPUT_NAME], {INPUT_NAME: image.astype(np.float32)})[0]


def compare_with_pytorch(wrapper: nn.Module, onnx_file: str, shapes: Sequence[Sequence[int]],
                         seed: int = 0) -> List[Tuple[Tuple[int, ...], float, float, float]]:
    """Per shape, on a seeded random image: ``(shape, max |ONNX - PyTorch|, max |PyTorch
    logit|, fraction of argmax pixels equal)``."""
    generator, results = torch.Generator().manual_seed(seed), []
    for shape in shapes:
        image = torch.rand(*shape, generator=generator) * 255
        with torch.no_grad():
            expected = wrapper(image).numpy()
        actual = run_onnxruntime(onnx_file, image.numpy())
        if actual.shape != expected.shape:
            raise RuntimeError(f'ONNX Runtime returned logits of shape {actual.shape} for input '
                               f'{tuple(shape)}, PyTorch {expected.shape}: the graph is not '
                               'dynamic in that size.')
        results.append((tuple(shape), float(np.abs(actual - expected).max()),
                        float(np.abs(expected).max()),
                        float((actual.argmax(1) == expected.argmax(1)).mean())))
    return results


def parse_shape(text: str) -> Tuple[int, ...]:
    """``'1,3,97,129'`` or ``'97x129'`` (H x W, batch 1, 3 channels) -> ``(N, 3, H, W)``."""
    parts = ['1', '3'] + text.lower().split('x') if 'x' in text.lower() else text.split(',')
    try:
        shape = tuple(int(v) for v in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or shape[1] != 3 or shape[0] < 1 or min(shape[2:]) < MIN_SIZE:
        raise UserInputError(f'shape {text!r} is not allowed: expected HxW (e.g. 97x129) or '
                             f'N,3,H,W (e.g. 2,3,97,129) with N >= 1 and H, W >= {MIN_SIZE}.')
    return shape
