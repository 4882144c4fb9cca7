"""Export a segmentor to ONNX with dynamic batch/height/width, and check it with ONNX Runtime.

The graph takes raw images as the mmseg pipeline loads them (BGR, 0..255), normalises them,
runs backbone and decode head (ASPP with image pooling) and upsamples the logits to the input
size, as ``EncoderDecoder`` whole-image inference does. Padding, sliding windows, test-time
augmentation and the auxiliary head are not in it. Exporter: torch's ``dynamo=True`` (symbolic
sizes; the TorchScript exporter is deprecated), weights inside the file.
"""
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from deeplabv3_plugin.engine.errors import UserInputError

__all__ = [
    'SegmentorExportWrapper', 'export_onnx', 'run_onnxruntime', 'compare_with_pytorch',
    'compare_labels', 'parse_shape'
]

INPUT_NAME = 'image'
OUTPUT_NAME = 'logits'
#: Smallest input height/width: stem and max pool reduce by 4, each stride-2 conv needs a map.
MIN_SIZE = 32


class SegmentorExportWrapper(nn.Module):
    """Raw image batch -> full-resolution logits, the part of inference that belongs in a graph.

    Args:
        segmentor (nn.Module): An mmseg ``EncoderDecoder`` in eval mode.
        normalize (bool): Put the data preprocessor's channel flip and mean/std in the graph;
            with False the input must be normalised already. Default: True.
    """

    def __init__(self, segmentor: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.normalize = normalize
        preprocessor = segmentor.data_preprocessor
        self.flip_channels = bool(getattr(preprocessor, 'channel_conversion', False))
        enabled = bool(getattr(preprocessor, '_enable_normalize', False))
        mean = preprocessor.mean.detach().clone() if enabled else torch.zeros(1, 3, 1, 1)
        std = preprocessor.std.detach().clone() if enabled else torch.ones(1, 3, 1, 1)
        self.register_buffer('mean', mean.reshape(1, -1, 1, 1).float(), persistent=False)
        self.register_buffer('std', std.reshape(1, -1, 1, 1).float(), persistent=False)
        self.align_corners = bool(segmentor.decode_head.align_corners)

    def forward(self, image: Tensor) -> Tensor:
        x = image
        if self.normalize:
            x = ((x.flip(1) if self.flip_channels else x) - self.mean) / self.std
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        return nn.functional.interpolate(
            logits, size=image.shape[2:], mode='bilinear', align_corners=self.align_corners)


def export_onnx(model: nn.Module, out_file: str, example_shape: Sequence[int] = (1, 3, 97, 129),
                dynamic: bool = True, normalize: bool = True, opset_version=None) -> nn.Module:
    """Export ``model`` (a segmentor in eval mode, see ``apis.build_segmentor``) to ``out_file``.

    The default example has odd, unequal sizes so that no size is specialised by coincidence.
    Returns the exported wrapper, for comparisons with the ONNX model.
    """
    wrapper = SegmentorExportWrapper(model, normalize=normalize).eval()
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = {'image': {0: torch.export.Dim('batch', min=1, max=1024),
                                    2: torch.export.Dim('height', min=MIN_SIZE, max=8192),
                                    3: torch.export.Dim('width', min=MIN_SIZE, max=8192)}}
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


def _both(wrapper: nn.Module, onnx_file: str, shapes: Sequence[Sequence[int]],
          seed: int) -> Iterator[Tuple[Tuple[int, ...], np.ndarray, np.ndarray]]:
    """Per shape: PyTorch's and ONNX Runtime's logits of one seeded random image."""
    generator = torch.Generator().manual_seed(seed)
    for shape in shapes:
        image = torch.rand(*shape, generator=generator) * 255
        with torch.no_grad():
            expected = wrapper(image).numpy()
        yield tuple(shape), expected, run_onnxruntime(onnx_file, image.numpy())


def compare_with_pytorch(wrapper: nn.Module, onnx_file: str, shapes: Sequence[Sequence[int]],
                         seed: int = 0) -> List[Tuple[Tuple[int, ...], float, float]]:
    """Per shape ``(shape, max |ONNX - PyTorch|, max |PyTorch logit|)``."""
    results = []
    for shape, expected, actual in _both(wrapper, onnx_file, shapes, seed):
        if actual.shape != expected.shape:
            raise RuntimeError(f'ONNX Runtime returned logits of shape {actual.shape} for input '
                               f'{shape}, PyTorch {expected.shape}: the exported graph is not '
                               'dynamic in that size.')
        results.append((shape, float(np.abs(actual - expected).max()),
                        float(np.abs(expected).max())))
    return results


def compare_labels(wrapper: nn.Module, onnx_file: str, shapes: Sequence[Sequence[int]],
                   seed: int = 0) -> List[Tuple[Tuple[int, ...], float]]:
    """Per shape, the fraction of argmax pixels the ONNX model (e.g. int8) shares with PyTorch."""
    return [(shape, float((actual.argmax(1) == expected.argmax(1)).mean()))
            for shape, expected, actual in _both(wrapper, onnx_file, shapes, seed)]


def parse_shape(text: str) -> Tuple[int, ...]:
    """``'1,3,97,129'`` or ``'97x129'`` (H x W, batch 1, 3 channels) -> ``(N, 3, H, W)``."""
    try:
        if 'x' in text.lower():
            shape = (1, 3) + tuple(int(v) for v in text.lower().split('x'))
        else:
            shape = tuple(int(v) for v in text.split(','))
    except ValueError:
        shape = ()
    if len(shape) != 4 or shape[1] != 3 or shape[0] < 1 or min(shape[2:]) < MIN_SIZE:
        raise UserInputError(f'shape {text!r} is not allowed: expected HxW (e.g. 97x129) or '
                             f'N,3,H,W (e.g. 2,3,97,129) with N >= 1 and H, W >= {MIN_SIZE}.')
    return shape
