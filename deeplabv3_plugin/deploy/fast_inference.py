"""The fast inference path for the dilated block4 and ASPP convolutions (paper Sec. 3.3):
channels_last (oneDNN's layout), BN folded into convolutions, optional bf16 and compile."""
import copy
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from mmseg.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..cpu_features import resolve_bf16

__all__ = ['FastInferenceModel', 'fuse_conv_bn', 'fold_bn_into_conv', 'register_conv_bn_pairs']


def _convmodule_pairs(module: ConvModule) -> List[Tuple[str, str]]:
    # A norm before the conv would need its shift applied to the zero padding: not foldable.
    foldable = module.with_norm and not module.with_spectral_norm and (
        module.order.index('norm') > module.order.index('conv'))
    return [('conv', module.norm_name)] if foldable else []


def _block_pairs(module: BasicBlock) -> List[Tuple[str, str]]:
    pairs = [('conv1', module.norm1_name), ('conv2', module.norm2_name)]
    return pairs + ([('conv3', module.norm3_name)] if isinstance(module, Bottleneck) else [])


def _sequential_pairs(module: nn.Sequential) -> List[Tuple[str, str]]:
    # Adjacent children of a Sequential are a real data-flow pair (deep stem, downsample).
    names = list(module._modules)
    return [(a, b) for a, b in zip(names, names[1:]) if isinstance(module._modules[a], nn.Conv2d)
            and isinstance(module._modules[b], _BatchNorm)]


# Per module type, its (conv, norm) attribute pairs whose conv feeds only that norm.
_PAIR_FINDERS = {
    ConvModule: _convmodule_pairs,
    BasicBlock: _block_pairs,
    Bottleneck: _block_pairs,
    ResNet: lambda m: [] if m.deep_stem else [('conv1', m.norm1_name)],
    nn.Sequential: _sequential_pairs,
}


def register_conv_bn_pairs(module_type: type,
                           finder: Callable[[nn.Module], List[Tuple[str, str]]]) -> None:
    """Teach :func:`fuse_conv_bn` the conv -> BN pairs of another module type (its subclasses
    included), a fact of its ``forward``."""
    _PAIR_FINDERS[module_type] = finder


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Absorb an eval-mode BatchNorm into the preceding convolution, in place (float64 maths)."""
    if bn.training or bn.running_var is None:
        raise ValueError(f'Cannot fold {type(bn).__name__} in training mode or with '
                         'track_running_stats=False; call model.eval() first')
    weight, bias = fuse_conv_bn_weights(*[None if t is None else t.double() for t in (
        conv.weight, conv.bias, bn.running_mean, bn.running_var)], bn.eps,
        *[None if t is None else t.double() for t in (bn.weight, bn.bias)])
    grad, dtype = conv.weight.requires_grad, conv.weight.dtype
    conv.weight, conv.bias = (nn.Parameter(t.detach().to(dtype), requires_grad=grad)
                              for t in (weight, bias))


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every known conv -> BN pair of an eval-mode model in place, into ``nn.Identity``s
    (the ``state_dict`` loses them: fold a copy); returns their number."""
    todo = []
    for parent in model.modules():
        finder = next((_PAIR_FINDERS[k] for k in type(parent).__mro__ if k in _PAIR_FINDERS),
                      lambda m: [])
        for conv, norm in finder(parent):
            conv, bn = getattr(parent, conv), getattr(parent, norm)
            # nn.Conv2d only: other convs (e.g. deformable ones) compute something else.
            if isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm) and (
                    bn.running_var is not None):
                todo.append((parent, norm, conv, bn))
    for parent, norm, conv, bn in todo:
        fold_bn_into_conv(conv, bn)
        setattr(parent, norm, nn.Identity())
    return len(todo)


def _bf16(forward: Callable, device_type: str, float_output: bool) -> Callable:
    def run(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            output = forward(*args, **kwargs)
        return output.float() if float_output else output
    return run


class FastInferenceModel(nn.Module):
    """An eval-only segmentor on the fast path; its other attributes are the segmentor's, so
    mmengine's loops, mmseg's APIs and ``SegTTAModel`` take it as one. ``bf16`` (bf16 conv
    weights, float32 logits) and ``compile`` need an ``EncoderDecoder``."""

    def __init__(self, model: BaseSegmentor, channels_last: bool = True, fuse_bn: bool = True,
                 bf16: bool = False, compile: bool = False, copy_model: bool = True) -> None:
        super().__init__()
        if not isinstance(model, BaseSegmentor) or (
                (bf16 or compile) and not isinstance(model, EncoderDecoder)):
            raise TypeError('FastInferenceModel wraps a BaseSegmentor (an EncoderDecoder for '
                            f'bf16/compile), got {type(model).__name__}; with TTA wrap the '
                            "SegTTAModel's .module")
        model = copy.deepcopy(model) if copy_model else model
        model.eval()
        self.num_fused_bn = fuse_conv_bn(model) if fuse_bn else 0
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if bf16 or compile:
            network = [model.backbone, model.neck] if model.with_neck else [model.backbone]
            network.append(model.decode_head)
        if bf16:
            device_type = next(model.parameters()).device.type
            # bf16 as asked; where it is emulated, one warning with its measured cost
            resolve_bf16(True, True, device_type, what='FastInferenceModel(bf16=True)')
            for module in network:
                for conv in module.modules():
                    if isinstance(conv, nn.Conv2d):
                        conv.to(torch.bfloat16)
                module.forward = _bf16(module.forward, device_type, module is model.decode_head)
        # Instance ``forward``s, because mmseg's heads call ``self.forward`` in ``predict``.
        for module in network if compile else []:
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
            raise ValueError(f"FastInferenceModel is inference-only: mode='predict' or "
                             f"'tensor', got mode={mode!r}")
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.module(inputs, data_samples, mode=mode)

    def test_step(self, data) -> list:
        return self(**self.module.data_preprocessor(data, False), mode='predict')

    val_step = test_step
