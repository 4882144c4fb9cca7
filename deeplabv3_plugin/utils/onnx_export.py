"""Export a segmentor to ONNX with dynamic height/width, and check it with ONNX Runtime.

What the graph computes: :class:`SegmentorExportWrapper` -- a raw image batch in the channel order
and value range the mmseg pipeline produces (``LoadImageFromFile`` gives BGR, 0..255) goes
through the model's data preprocessor normalisation (channel flip, ``(x - mean) / std``), the
backbone and the decode head (ASPP *with* image pooling), and the logits are upsampled
bilinearly to the input size, as ``EncoderDecoder`` whole-image inference does. Output:
``logits`` ``(N, num_classes, H, W)``; ``argmax`` over dim 1 is the label map.

Not in the graph: padding or sliding windows (``test_cfg``), test-time augmentation, and the
auxiliary head (a training-only loss). A config whose data preprocessor pads test images to a
canvas (``size``) gives slightly different numbers at the borders and in image pooling than this
unpadded whole-image graph; pad the input yourself to reproduce that.

Dynamic sizes and image pooling, the usual failure: torchvision-style ``AdaptiveAvgPool2d(1)``
followed by ``F.interpolate(size=x.shape[-2:])`` is where exported DeepLabV3 models lose their
dynamic shapes (the pool or the resize get a size baked in). The plugin's ``ImagePooling`` uses
``x.mean(dim=(2, 3), keepdim=True)`` (``ReduceMean``) and broadcasts the pooled vector back with
``expand`` to the runtime size, so nothing depends on the example input's size.

Exporter choice: torch 2.13's default ``torch.onnx.export(..., dynamo=True)`` (``torch.export``
+ onnxscript). It traces symbolic sizes, so the exported ``H`` and ``W`` are real graph inputs and
every shape computation stays symbolic; the legacy TorchScript exporter is deprecated since
torch 2.9. Weights are stored inside the ``.onnx`` file (``external_data=False``; a ResNet-101
DeepLabV3 is ~240 MB, below protobuf's 2 GB limit), so the file is self-contained.
"""
from typing import List, Optional, Sequence, Tuple

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
#: Input sizes must be at least this large: the stem and max pool reduce by 4 and every stride-2
#: 3x3 conv needs a non-empty map; smaller inputs are not meaningful segmentation inputs anyway.
MIN_SIZE = 32


class SegmentorExportWrapper(nn.Module):
    """Raw image batch -> full-resolution logits, the part of inference that belongs in a graph.

    Args:
        segmentor (nn.Module): An mmseg ``EncoderDecoder`` (e.g. the plugin's ``DeepLabV3``) in
            eval mode, with ``data_preprocessor``, ``extract_feat`` and ``decode_head``.
        normalize (bool): Apply the data preprocessor's channel flip and mean/std inside the
            graph (input: 0..255 in the order images are loaded, BGR for mmseg). With False the
            input must already be normalised. Default: True.
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
        """``(N, 3, H, W)`` image -> ``(N, num_classes, H, W)`` logits."""
        x = image
        if self.normalize:
            if self.flip_channels:
                x = x.flip(1)
            x = (x - self.mean) / self.std
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        return nn.functional.interpolate(
            logits, size=image.shape[2:], mode='bilinear', align_corners=self.align_corners)


def export_onnx(model: nn.Module, out_file: str, example_shape: Sequence[int] = (1, 3, 97, 129),
                dynamic: bool = True, normalize: bool = True,
                opset_version: Optional[int] = None) -> nn.Module:
    """Export ``model`` (a segmentor in eval mode) to ``out_file``.

    Args:
        model (nn.Module): The segmentor, see
            :func:`deeplabv3_plugin.apis.inference.build_segmentor`.
        out_file (str): The ``.onnx`` path to write.
        example_shape (Sequence[int]): ``(N, 3, H, W)`` of the example input used for tracing.
            Default: ``(1, 3, 97, 129)``: odd, unequal sizes so that no size coincides with
            another and gets specialised by mistake.
        dynamic (bool): Make batch, height and width dynamic. Default: True.
        normalize (bool): Put the input normalisation in the graph. Default: True.
        opset_version (int | None): ONNX opset; None is the exporter's default.

    Returns:
        nn.Module: The exported wrapper (eval mode), for comparisons with the ONNX model.

    Raises:
        UserInputError: if ``example_shape`` is not ``(N, 3, H, W)`` with H, W >= 32.
    """
    shape = _check_shape(example_shape, 'example_shape')
    wrapper = SegmentorExportWrapper(model, normalize=normalize).eval()
    example = torch.rand(*shape) * 255
    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim('batch', min=1, max=1024)
        height = torch.export.Dim('height', min=MIN_SIZE, max=8192)
        width = torch.export.Dim('width', min=MIN_SIZE, max=8192)
        dynamic_shapes = {'image': {0: batch, 2: height, 3: width}}
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (example, ), out_file, dynamo=True, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
            opset_version=opset_version, external_data=False, optimize=True)
    return wrapper


def run_onnxruntime(onnx_file: str, image: np.ndarray) -> np.ndarray:
    """Run the exported model with ONNX Runtime on the CPU; returns the logits."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    return session.run([OUTPUT_NAME], {INPUT_NAME: image.astype(np.float32)})[0]


def compare_with_pytorch(wrapper: nn.Module, onnx_file: str,
                         shapes: Sequence[Sequence[int]],
                         seed: int = 0) -> List[Tuple[Tuple[int, ...], float, float]]:
    """Run PyTorch and ONNX Runtime on random images of each shape.

    Returns:
        list[tuple]: per shape ``(shape, max |difference|, max |PyTorch logit|)``; the
        scale lets callers judge the difference relative to the logits.
    """
    generator = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        shape = _check_shape(shape, 'shape')
        image = torch.rand(*shape, generator=generator) * 255
        with torch.no_grad():
            expected = wrapper(image).numpy()
        actual = run_onnxruntime(onnx_file, image.numpy())
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
    generator = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        image = torch.rand(*_check_shape(shape, 'shape'), generator=generator) * 255
        with torch.no_grad():
            expected = wrapper(image).argmax(1).numpy()
        actual = run_onnxruntime(onnx_file, image.numpy()).argmax(1)
        results.append((tuple(shape), float((actual == expected).mean())))
    return results


def parse_shape(text: str) -> Tuple[int, ...]:
    """``'1,3,97,129'`` or ``'97x129'`` (H x W, batch 1, 3 channels) -> ``(N, 3, H, W)``."""
    try:
        if 'x' in text.lower():
            height, width = (int(v) for v in text.lower().split('x'))
            shape = (1, 3, height, width)
        else:
            shape = tuple(int(v) for v in text.split(','))
    except ValueError:
        raise UserInputError(f'shape {text!r} is not understood: expected HxW (e.g. 97x129) or '
                             'N,3,H,W (e.g. 2,3,97,129).') from None
    return _check_shape(shape, 'shape')


def _check_shape(shape: Sequence[int], name: str) -> Tuple[int, ...]:
    shape = tuple(shape)
    if (len(shape) != 4 or shape[1] != 3 or shape[0] < 1
            or min(shape[2:]) < MIN_SIZE):
        raise UserInputError(f'{name}={shape} is not allowed: expected (N, 3, H, W) with N >= 1 '
                             f'and H, W >= {MIN_SIZE}.')
    return shape

