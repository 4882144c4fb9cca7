"""The fast inference path: channels_last, BN folded into convolutions, optional bf16/compile.

CPU inference is dominated by the dilated block4 and ASPP convolutions (paper Sec. 3.3): NHWC
is oneDNN's native layout, folding BN saves a pass over every activation, bf16 pays only with
native bf16 (AVX512-BF16/AMX). Only bf16 changes numerics beyond rounding.
"""
import copy
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from mmseg.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..utils.cpu_features import bf16_slowdown, cpu_features

__all__ = ['FastInferenceModel', 'fuse_conv_bn', 'fold_bn_into_conv', 'register_conv_bn_pairs']

# For one module type: its (conv attribute, norm attribute) pairs whose conv feeds only that norm.
PairFinder = Callable[[nn.Module], List[Tuple[str, str]]]


def _convmodule_pairs(module: ConvModule) -> List[Tuple[str, str]]:
    # A norm before the conv would need its shift applied to the zero padding: not foldable.
    if (not module.with_norm or module.with_spectral_norm
            or module.order.index('norm') < module.order.index('conv')):
        return []
    return [('conv', module.norm_name)]


def _block_pairs(module: BasicBlock) -> List[Tuple[str, str]]:
    pairs = [('conv1', module.norm1_name), ('conv2', module.norm2_name)]
    return pairs + ([('conv3', module.norm3_name)] if isinstance(module, Bottleneck) else [])


def _sequential_pairs(module: nn.Sequential) -> List[Tuple[str, str]]:
    # Adjacent children of a Sequential are a real data-flow pair (deep stem, downsample).
    names = list(module._modules)
    return [(a, b) for a, b in zip(names, names[1:]) if isinstance(module._modules[a], nn.Conv2d)
            and isinstance(module._modules[b], _BatchNorm)]


_PAIR_FINDERS: Dict[type, PairFinder] = {
    ConvModule: _convmodule_pairs,
    BasicBlock: _block_pairs,
    Bottleneck: _block_pairs,
    ResNet: lambda m: [] if m.deep_stem else [('conv1', m.norm1_name)],
    nn.Sequential: _sequential_pairs,
}


def register_conv_bn_pairs(module_type: type, finder: PairFinder) -> None:
    """Teach :func:`fuse_conv_bn` the conv -> BN pairs of another module type (a fact of its
    ``forward``, not of its children); subclasses use their nearest registered base's."""
    _PAIR_FINDERS[module_type] = finder


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Absorb an eval-mode BatchNorm into the preceding convolution, in place (float64 maths)."""
    if bn.training or bn.running_var is None:
        raise ValueError(f'Cannot fold {type(bn).__name__} in training mode or with '
                         'track_running_stats=False: folding uses the running statistics; call '
                         'model.eval() first')

    weight, bias = fuse_conv_bn_weights(*[None if t is None else t.double() for t in (
        conv.weight, conv.bias, bn.running_mean, bn.running_var)], bn.eps,
        *[None if t is None else t.double() for t in (bn.weight, bn.bias)])
    grad, dtype = conv.weight.requires_grad, conv.weight.dtype
    conv.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=grad)
    conv.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=grad)


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every known conv -> BN pair of an eval-mode model in place; returns their number.

    Folded BNs become ``nn.Identity``, so strides/dilations (and output-stride switching) stay,
    but the ``state_dict`` loses the BN entries: fold a copy, keep training the original.
    """
    finders = [(parent, next((_PAIR_FINDERS[k] for k in type(parent).__mro__
                              if k in _PAIR_FINDERS), lambda m: [])) for parent in model.modules()]
    todo = [(parent, getattr(parent, conv), norm) for parent, finder in finders
            for conv, norm in finder(parent)]
    # Plain convs only: subclasses such as deformable convs compute something else.
    todo = [(parent, conv, norm) for parent, conv, norm in todo
            if isinstance(conv, nn.Conv2d) and isinstance(getattr(parent, norm), _BatchNorm)
            and getattr(parent, norm).running_var is not None]
    for parent, conv, norm in todo:
        fold_bn_into_conv(conv, getattr(parent, norm))
        setattr(parent, norm, nn.Identity())
    return len(todo)


def _network(model: EncoderDecoder) -> List[nn.Module]:
    return [model.backbone] + ([model.neck] if model.with_neck else []) + [model.decode_head]


def _use_bf16(model: EncoderDecoder) -> None:
    """bf16 network with bf16 conv weights stored once; logits leave the head in float32."""
    device_type = next(model.parameters()).device.type

    def bf16(forward: Callable, float_output: bool) -> Callable:
        def run(*args, **kwargs):
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                output = forward(*args, **kwargs)
            return output.float() if float_output else output
        return run

    for module in _network(model):
        for conv in module.modules():
            if isinstance(conv, nn.Conv2d):
                conv.to(torch.bfloat16)
        module.forward = bf16(module.forward, module is model.decode_head)


class FastInferenceModel(nn.Module):
    """An eval-only segmentor on the fast path, with the wrapped segmentor's interface.

    Other attributes (``dataset_meta``, ``cfg``, ``decode_head`` ...) are the segmentor's, so
    mmengine's loops, mmseg's APIs and ``SegTTAModel`` take it as the segmentor. It is put in
    eval mode (its ``test_output_stride`` applies) before folding; ``bf16`` and ``compile``
    change an ``EncoderDecoder``'s backbone and head; ``copy_model`` keeps ``model`` trainable.
    """

    def __init__(self, model: BaseSegmentor, channels_last: bool = True, fuse_bn: bool = True,
                 bf16: bool = False, compile: bool = False, copy_model: bool = True) -> None:
        super().__init__()
        if not isinstance(model, BaseSegmentor) or (
                (bf16 or compile) and not isinstance(model, EncoderDecoder)):
            raise TypeError('FastInferenceModel wraps an mmseg segmentor (BaseSegmentor; an '
                            f'EncoderDecoder for bf16/compile), got {type(model).__name__}; '
                            "for test-time augmentation wrap the SegTTAModel's .module")
        model = copy.deepcopy(model) if copy_model else model
        model.eval()
        self.num_fused_bn = fuse_conv_bn(model) if fuse_bn else 0
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if bf16:
            if next(model.parameters()).device.type == 'cpu' and not cpu_features().native_bf16:
                warnings.warn('bf16=True on a CPU without AVX512-BF16/AMX: bfloat16 is emulated '
                              f'there, {bf16_slowdown():.1f}x the float32 time of a convolution '
                              '(measured now)')
            _use_bf16(model)
        if compile:
            # Instance ``forward``s, because mmseg's heads call ``self.forward`` in ``predict``.
            for module in _network(model):
                module.forward = torch.compile(module.forward, options={'freezing': True})
        self.module, self.channels_last, self.bf16 = model, channels_last, bf16
        super().train(False)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == 'module':
                raise
            return getattr(self.module, name)

    def train(self, mode: bool = True) -> 'FastInferenceModel':
        if mode:
            raise RuntimeError('FastInferenceModel is inference-only (BN may be folded); train '
                               'the original segmentor instead')
        return super().train(False)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[Sequence] = None,
                mode: str = 'tensor'):
        """``mode='predict'`` (``SegDataSample`` list) or ``'tensor'`` (float32 logits)."""
        if mode not in ('predict', 'tensor'):
            raise ValueError(f"FastInferenceModel supports mode='predict' or 'tensor', got "
                             f'mode={mode!r} (it is inference-only)')
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.module(inputs, data_samples, mode=mode)

    def test_step(self, data) -> list:
        return self(**self.module.data_preprocessor(data, False), mode='predict')

    val_step = test_step
