"""The fast inference path: channels_last, BN folded into convolutions, optional bf16.

DeepLabV3 inference on a CPU is dominated by convolutions (the dilated block3/block4 of the
ResNet and the ASPP's 3x3 atrous branches, paper Sec. 3.3). Three transformations make them
faster without retraining:

* **channels_last** (NHWC) weights and inputs. oneDNN's convolution kernels work natively in
  NHWC; contiguous NCHW tensors (how mmseg's tools run a model) are reordered on every call.
  The result is bit-for-bit the same arithmetic in a different memory layout.
* **BN folding**. In eval mode a BatchNorm is the per-channel affine map
  ``y = gamma * (x - mean) / sqrt(var + eps) + beta``; after a convolution it can be absorbed into
  the convolution's weight and bias, which removes one full read and write of every activation.
  Only rounding changes (the fold is computed in float64). It is only valid while BN uses its
  running statistics, so it is applied to an eval-only copy, never to a model being trained.
* **bf16** (autocast, optional). Convolutions run in bfloat16 with fp32 accumulation; only
  CPUs with AVX512-BF16/AMX do that natively (elsewhere oneDNN emulates it, several times slower
  than fp32, which is why the tools and ``init_model`` keep fp32 there). It changes numerics
  (8-bit mantissa), so it is opt-in and its effect on mIoU is measured in ``benchmarks/``. Only
  the network (backbone, neck, decode head) runs under autocast, with its convolution weights
  stored in bf16 once instead of cast on every call (the same rounding autocast applies); the
  logits leave the head in float32, so upsampling, argmax and test-time augmentation merging run
  in float32.
* **torch.compile** (optional). Inductor with weight freezing fuses the elementwise work into
  the convolutions and prepacks the weights. It pays off over many images of one size: the
  first call compiles (tens of seconds on two cores), and each new input size or output stride
  compiles again (the geometry is guarded, so results stay right).

:class:`FastInferenceModel` bundles the three behind the segmentor interface mmengine's loops and
mmseg's APIs call (``test_step``, ``val_step``, ``forward``), so the tools, the inference API and
:class:`~deeplabv3_plugin.apis.hooks.FastInferenceHook` share one implementation.
"""
import copy
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import ConvModule
from mmseg.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.cpu_features import bf16_slowdown, cpu_features

__all__ = [
    'FastInferenceModel', 'fuse_conv_bn', 'fold_bn_into_conv', 'register_conv_bn_pairs',
    'cpu_supports_bf16'
]

# A function that names, for one module, its (conv attribute, norm attribute) pairs in which the
# conv's output feeds the norm and nothing else. Names are attributes of that module.
PairFinder = Callable[[nn.Module], List[Tuple[str, str]]]


def _convmodule_pairs(module: ConvModule) -> List[Tuple[str, str]]:
    # Only ('conv', 'norm', ...) order folds: a norm *before* the conv would also need the BN
    # shift applied to the zero padding, which a bias cannot express.
    if not module.with_norm or module.with_spectral_norm:
        return []
    if module.order.index('norm') < module.order.index('conv'):
        return []
    return [('conv', module.norm_name)]


def _block_pairs(module: Union[BasicBlock, Bottleneck]) -> List[Tuple[str, str]]:
    # mmseg's ResNet blocks run conv{i} -> norm{i} -> relu (plugins, if any, come after the relu).
    pairs = [('conv1', module.norm1_name), ('conv2', module.norm2_name)]
    if isinstance(module, Bottleneck):
        pairs.append(('conv3', module.norm3_name))
    return pairs


def _resnet_stem_pairs(module: ResNet) -> List[Tuple[str, str]]:
    # The deep stem is an nn.Sequential (handled by the Sequential rule); the single 7x7 stem is
    # conv1 -> norm1 on the ResNet itself.
    return [] if module.deep_stem else [('conv1', module.norm1_name)]


def _sequential_pairs(module: nn.Sequential) -> List[Tuple[str, str]]:
    # A Sequential chains its children, so an adjacent (conv, BN) pair is a real data-flow pair
    # (e.g. the ResNet deep stem and the projection shortcut ``downsample``).
    names = list(module._modules)
    return [(first, second) for first, second in zip(names, names[1:])
            if isinstance(module._modules[first], nn.Conv2d)
            and isinstance(module._modules[second], _BatchNorm)]


_PAIR_FINDERS: Dict[type, PairFinder] = {
    ConvModule: _convmodule_pairs,
    BasicBlock: _block_pairs,
    Bottleneck: _block_pairs,
    ResNet: _resnet_stem_pairs,
    nn.Sequential: _sequential_pairs,
}


def register_conv_bn_pairs(module_type: type, finder: PairFinder) -> None:
    """Teach :func:`fuse_conv_bn` the conv -> BN pairs of another module type.

    Folding needs to know that a conv's output goes *only* into a given BN. That is a fact about
    a module's ``forward``, which cannot be read from its children, so each module type states it
    (subclasses inherit the finder of their nearest registered base class).

    Args:
        module_type (type): The ``nn.Module`` subclass.
        finder (Callable[[nn.Module], list[tuple[str, str]]]): Returns, for one instance, the
            ``(conv_attribute, norm_attribute)`` pairs to fold.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f'module_type must be an nn.Module subclass, got {module_type!r}')
    _PAIR_FINDERS[module_type] = finder


def _find_pairs(module: nn.Module) -> List[Tuple[str, str]]:
    for klass in type(module).__mro__:
        if klass in _PAIR_FINDERS:
            return _PAIR_FINDERS[klass](module)
    return []


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Absorb an eval-mode BatchNorm into the preceding convolution, in place.

    ``bn(conv(x)) == conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta`` where
    ``s = gamma / sqrt(running_var + eps)``, per output channel. The arithmetic is done in
    float64 and cast back to the conv's dtype.

    Args:
        conv (nn.Conv2d): A plain (not transposed) 2-D convolution; gets a bias if it had none.
        bn (_BatchNorm): A BatchNorm (``BN`` or ``SyncBN``) in eval mode with running statistics.

    Raises:
        ValueError: If the pair cannot be folded exactly (BN in training mode, no running
            statistics, channel mismatch).
    """
    if bn.training:
        raise ValueError(f'Cannot fold {type(bn).__name__} in training mode: folding uses the '
                         'running statistics, call model.eval() first')
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f'Cannot fold {type(bn).__name__} with track_running_stats=False: it '
                         'normalises with batch statistics even in eval mode')
    if conv.out_channels != bn.num_features:
        raise ValueError(f'Cannot fold: conv has out_channels={conv.out_channels} but the BN '
                         f'has num_features={bn.num_features}')
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    weight = conv.weight
    conv.weight = nn.Parameter(
        (weight.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype),
        requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=weight.requires_grad)


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every known conv -> BN pair of an eval-mode model, in place.

    Pairs come from the module types that state them (:func:`register_conv_bn_pairs`):
    mmcv's ``ConvModule`` (conv before norm), mmseg's ResNet ``BasicBlock``/``Bottleneck``
    and single-conv stem, and adjacent (conv, BN) children of an ``nn.Sequential`` (deep stem,
    projection shortcuts). Each folded BN is replaced by ``nn.Identity``, so the model keeps its
    structure and its strides/dilations: ``set_output_stride`` still works on it. Its
    ``state_dict`` no longer has the BN entries, which is why callers fold a *copy*
    (:class:`FastInferenceModel` does) and keep saving and training the original.

    Args:
        model (nn.Module): The model, in eval mode.

    Returns:
        int: The number of BatchNorm layers folded.

    Raises:
        ValueError: If ``model`` is in training mode.
    """
    if model.training:
        raise ValueError('fuse_conv_bn needs an eval-mode model (BN folding uses the running '
                         'statistics); call model.eval() first')
    todo = []
    for parent in model.modules():
        for conv_name, norm_name in _find_pairs(parent):
            conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
            # Plain convs only: subclasses such as deformable convs compute something else.
            if (isinstance(conv, nn.Conv2d) and isinstance(norm, _BatchNorm)
                    and norm.running_var is not None):
                todo.append((parent, conv, norm_name, norm))
    seen = set()
    for parent, conv, norm_name, norm in todo:
        if id(conv) in seen:
            raise ValueError(f'{type(conv).__name__} {conv} is shared by several modules and '
                             'would be folded twice')
        seen.add(id(conv))
        fold_bn_into_conv(conv, norm)
        setattr(parent, norm_name, nn.Identity())
    return len(todo)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 dot products (AVX512-BF16 or AMX).

    Without them CPU autocast still works but emulates bf16 and is slower than fp32. See
    :func:`deeplabv3_plugin.utils.cpu_features.cpu_features`.
    """
    return cpu_features().native_bf16


def _network(model: EncoderDecoder) -> List[nn.Module]:
    """The modules an inference forward runs: backbone, neck (if any), decode head."""
    return [model.backbone] + ([model.neck] if model.with_neck else []) + [model.decode_head]


def _bf16_forward(forward: Callable, device_type: str, float_output: bool) -> Callable:
    """``forward`` run under bf16 autocast, its output cast back to float32 if asked."""

    def run(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            output = forward(*args, **kwargs)
        return output.float() if float_output else output

    return run


def _use_bf16(model: EncoderDecoder) -> None:
    """Run the network of this (copied) model in bf16, its logits in float32.

    Conv weights are stored in bf16 once: autocast would round them the same way on every call.
    """
    device_type = next(model.parameters()).device.type
    for module in _network(model):
        for conv in module.modules():
            if isinstance(conv, nn.Conv2d):
                conv.to(torch.bfloat16)
        module.forward = _bf16_forward(module.forward, device_type,
                                       float_output=module is model.decode_head)


def _compile_network(model: EncoderDecoder) -> None:
    """Compile the ``forward`` of the backbone, neck and decode head of this (copied) model.

    Instance attributes ``forward`` are replaced (here and by :func:`_use_bf16`) because mmseg's
    decode heads call ``self.forward(...)`` directly in ``predict``, which ``nn.Module.compile``
    would not reach. ``freezing`` lets inductor treat the (inference-only) weights as constants.
    """
    for module in _network(model):
        module.forward = torch.compile(module.forward, options={'freezing': True})


class FastInferenceModel(nn.Module):
    """An eval-only segmentor that runs the fast inference path.

    It wraps an mmseg segmentor (``EncoderDecoder``, the plugin's ``DeepLabV3``, ...) and offers
    the calls that mmengine's val/test loops and mmseg's APIs make: ``test_step``, ``val_step``,
    ``forward(inputs, data_samples, mode)``; any other attribute (``dataset_meta``, ``cfg``,
    ``decode_head``, ``out_channels``, ...) is read from the wrapped segmentor, so it can stand
    in for the segmentor inside ``SegTTAModel`` too.

    Predictions equal the wrapped model's up to float rounding (``channels_last``, ``fuse_bn``)
    or within bf16 precision (``bf16``; ``seg_logits`` are returned in float32 either way).

    Args:
        model (BaseSegmentor): The segmentor to run. It is put in eval mode, so a
            ``test_output_stride`` the segmentor has is applied before anything is folded.
        channels_last (bool): Convert weights and inputs to NHWC. Defaults to True.
        fuse_bn (bool): Fold BatchNorm into the preceding convolutions. Defaults to True.
        bf16 (bool): Run the backbone and decode head under CPU/CUDA bf16 autocast, with bf16
            conv weights; logits in float32. Defaults to False.
        compile (bool): ``torch.compile`` the backbone and the decode head (inductor, frozen
            weights); needs a C++ compiler. Defaults to False.

    ``bf16`` and ``compile`` change the backbone's and decode head's ``forward``, so they need
    an ``EncoderDecoder`` (the plugin's ``DeepLabV3`` is one).
        copy_model (bool): Work on a deep copy so that ``model`` stays trainable and its
            ``state_dict`` unchanged. Pass False only when the model is used for nothing else
            (e.g. it was just built for inference). Defaults to True.
    """

    def __init__(self,
                 model: BaseSegmentor,
                 channels_last: bool = True,
                 fuse_bn: bool = True,
                 bf16: bool = False,
                 compile: bool = False,
                 copy_model: bool = True) -> None:
        super().__init__()
        if not isinstance(model, BaseSegmentor):
            raise TypeError('FastInferenceModel wraps an mmseg segmentor (BaseSegmentor), got '
                            f'{type(model).__name__}; for test-time augmentation wrap the '
                            "SegTTAModel's .module instead")
        if (bf16 or compile) and not isinstance(model, EncoderDecoder):
            raise TypeError(f'FastInferenceModel(bf16={bf16}, compile={compile}) changes the '
                            'backbone and decode head of an EncoderDecoder; got '
                            f'{type(model).__name__}')
        if copy_model:
            model = copy.deepcopy(model)
        model.eval()
        self.num_fused_bn = fuse_conv_bn(model) if fuse_bn else 0
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if bf16:
            if next(model.parameters()).device.type == 'cpu' and not cpu_supports_bf16():
                warnings.warn('bf16=True on a CPU without AVX512-BF16/AMX: bfloat16 is emulated '
                              f'there, {bf16_slowdown():.1f}x the float32 time of a convolution '
                              '(measured now)')
            _use_bf16(model)
        if compile:
            _compile_network(model)
        self.module = model
        self.channels_last = channels_last
        self.bf16 = bf16
        self.compiled = compile
        super().train(False)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == 'module':
                raise
            return getattr(self.module, name)

    def train(self, mode: bool = True) -> 'FastInferenceModel':
        """Refuse training mode: folded BN, frozen compiled weights and autocast are for inference.

        Raises:
            RuntimeError: If ``mode`` is True.
        """
        if mode:
            raise RuntimeError('FastInferenceModel is inference-only (BN may be folded); train '
                               'the original segmentor instead')
        return super().train(False)

    def _prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[Sequence] = None,
                mode: str = 'tensor'):
        """Run the segmentor the fast way.

        Args:
            inputs (Tensor): Normalised images, (N, 3, H, W).
            data_samples (list[SegDataSample], optional): Meta information, as for mmseg.
            mode (str): ``'predict'`` (list of ``SegDataSample`` with ``pred_sem_seg`` and
                float32 ``seg_logits``) or ``'tensor'`` (float32 decode-head logits).
                ``'loss'`` is refused: this model is inference-only.
        """
        if mode not in ('predict', 'tensor'):
            raise ValueError(f"FastInferenceModel supports mode='predict' or 'tensor', got "
                             f'mode={mode!r} (it is inference-only)')
        with torch.no_grad():
            return self.module(self._prepare(inputs), data_samples, mode=mode)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """Preprocess a batch with the segmentor's data preprocessor and predict it."""
        data = self.module.data_preprocessor(data, False)
        return self(data['inputs'], data['data_samples'], mode='predict')

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Same as :meth:`test_step`."""
        return self.test_step(data)
