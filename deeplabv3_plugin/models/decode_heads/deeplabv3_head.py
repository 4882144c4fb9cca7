"""DeepLabV3 decode head: the paper's ASPP with image-level features (Chen et al. 2017).

``DeepLabV3Head`` is a ``BaseDecodeHead``, so mmseg's losses, ``EncoderDecoder``, TTA and metrics
use it unchanged::

    decode_head=dict(
        type='DeepLabV3Head', in_channels=2048, channels=256, num_classes=21,
        atrous_rates=(6, 12, 18), rates_output_stride=16, output_stride=16,
        image_pooling=True, dropout_ratio=0.1, norm_cfg=dict(type='SyncBN', requires_grad=True))

What differs from mmseg's ``ASPPHead``: a 1x1 projection (the paper, Sec. 3.3) instead of a 3x3
bottleneck, 256 channels, rates that follow the model's output stride, a batch-size-1-safe image
pooling branch, the appendix's training-protocol switches, and a torchvision-compatible layout.
"""
import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .aspp import ASPP
from .label_downsample import downsample_labels

_NORMS_WITHOUT_SINGLE_VALUE_SUPPORT = ('IN', 'IN1d', 'IN2d', 'IN3d')


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def scale_atrous_rates(atrous_rates: Sequence[int], rates_output_stride: int,
                       output_stride: int) -> Tuple[int, ...]:
    """Convert rates given at a reference output stride to rates at ``output_stride``.

    The paper (Sec. 3.3) states the ASPP rates at output stride 16, ``(6, 12, 18)``, and doubles
    them at output stride 8, ``(12, 24, 36)``: an atrous rate measures a distance in feature
    pixels, and halving the stride doubles the number of feature pixels per image pixel, so the
    field of view in the image stays the same. Effective rate =
    ``rate * rates_output_stride / output_stride``.

    Args:
        atrous_rates (Sequence[int]): rates at ``rates_output_stride``.
        rates_output_stride (int): the output stride the rates are given at (16 in the paper).
        output_stride (int): the model's output stride.

    Returns:
        tuple[int]: the effective rates.

    Raises:
        ValueError: if ``output_stride`` is not a positive integer or an effective rate is not
            an integer >= 1.
    """
    if not _is_positive_int(output_stride):
        raise ValueError(f'output_stride must be a positive int, got {output_stride!r}.')
    scaled = []
    for index, rate in enumerate(atrous_rates):
        numerator = rate * rates_output_stride
        if numerator % output_stride != 0:
            reference = rates_output_stride * math.gcd(*atrous_rates)
            allowed = [2**k for k in range(reference.bit_length()) if reference % 2**k == 0]
            raise ValueError(
                f'output_stride={output_stride} gives atrous_rates[{index}]={rate} an '
                f'effective rate of {rate} * {rates_output_stride} / {output_stride} = '
                f'{numerator / output_stride:g}, expected an integer >= 1. With '
                f'atrous_rates={tuple(atrous_rates)} at rates_output_stride='
                f'{rates_output_stride}, allowed power-of-two output strides are {allowed}.')
        scaled.append(numerator // output_stride)
    return tuple(scaled)


def torchvision_key_map(num_atrous_rates: int = 3) -> Dict[str, str]:
    """Module-prefix map from torchvision's ``DeepLabHead`` onto ``DeepLabV3Head``.

    torchvision's ``DeepLabHead`` is ``Sequential(ASPP, Conv3x3, BN, ReLU, Conv1x1)`` whose ASPP
    holds ``convs = [1x1, atrous..., pooling]`` and ``project = (Conv1x1, BN, ReLU, Dropout)``.
    It equals ``DeepLabV3Head(atrous_rates=(12, 24, 36), rates_output_stride=8,
    output_stride=8, project_dropout=0.5, num_extra_convs=1, dropout_ratio=0.0)`` with
    BN layers (``norm_cfg=dict(type='BN')``), and every parameter and buffer maps 1:1 (same
    shapes, same branch order, so the projection's input channels line up). Prepend
    ``'classifier.'`` / ``'decode_head.'`` for full-model keys; suffixes (``.weight``,
    ``.running_mean`` ...) are unchanged.

    Args:
        num_atrous_rates (int): number of atrous branches (3 in torchvision).

    Returns:
        dict[str, str]: torchvision module prefix -> this head's module prefix.
    """
    mapping = {'0.convs.0.0': 'aspp.convs.0.conv', '0.convs.0.1': 'aspp.convs.0.bn'}
    for i in range(1, num_atrous_rates + 1):
        mapping[f'0.convs.{i}.0'] = f'aspp.convs.{i}.conv'
        mapping[f'0.convs.{i}.1'] = f'aspp.convs.{i}.bn'
    pool = num_atrous_rates + 1
    mapping.update({
        f'0.convs.{pool}.1': 'aspp.image_pool.conv',
        f'0.convs.{pool}.2': 'aspp.image_pool.bn',
        '0.project.0': 'aspp.project.conv',
        '0.project.1': 'aspp.project.bn',
        '1': 'extra_convs.0.conv',
        '2': 'extra_convs.0.bn',
        '4': 'conv_seg',
    })
    return mapping


@MODELS.register_module()
class DeepLabV3Head(BaseDecodeHead):
    """The paper's ASPP head with image-level features (Chen et al. 2017, Sec. 3.3).

    Layers, in order: :class:`~.aspp.ASPP` (1x1 branch, one 3x3 atrous branch per rate, image
    pooling, concat, 1x1 projection + norm + act, optional dropout), ``num_extra_convs`` 3x3
    conv + norm + act layers, then ``BaseDecodeHead.cls_seg`` (Dropout2d with ``dropout_ratio``
    and the 1x1 classifier ``conv_seg``, which has a bias).

    **Output stride.** ``atrous_rates`` are given at ``rates_output_stride`` and follow the
    model's output stride through :meth:`set_output_stride` (called by the ``DeepLabV3``
    segmentor and by ``deeplabv3_plugin.models.utils.set_output_stride``). Switching a trained
    model from OS 16 to OS 8 doubles the rates and touches no weight (the paper's Table 6).

    **Training protocol (appendix).** The paper upsamples the logits to the label size for the
    loss (default). ``downsample_label=True`` is the ablation: the ground truth is
    nearest-neighbour downsampled to the logits' size instead (76.01 vs 77.21 mIoU). BN is
    fine-tuned by default; the frozen-BN row is ``norm_eval=True`` with a trainable ``norm_cfg``
    (the official ``fine_tune_batch_norm=False``: running statistics used and not updated, gamma
    and beta still trained).

    **torchvision variant.** ``project_dropout=0.5, num_extra_convs=1, dropout_ratio=0.0`` is
    torchvision's ``DeepLabHead`` layer for layer (see :func:`torchvision_key_map`). The
    official TF code drops out 10% after the projection; the default ``dropout_ratio=0.1``
    sits at the same place when ``num_extra_convs=0`` (channel-wise ``Dropout2d`` instead of
    element-wise).

    Args:
        in_channels (int | Sequence[int]): channels of the backbone feature (a list with
            ``input_transform='resize_concat'``). Default: 2048.
        channels (int): filters of every ASPP branch, the projection and the extra convs
            (the paper: 256). Default: 256.
        atrous_rates (Sequence[int]): 3x3 branch rates at ``rates_output_stride``, positive
            ints, any number of them (Table 5: ``(6, 12, 18, 24)``). Default: ``(6, 12, 18)``.
        rates_output_stride (int): output stride at which ``atrous_rates`` are stated.
            Default: 16.
        output_stride (int): the model's output stride; effective rates are
            ``rate * rates_output_stride // output_stride``. Default: 16.
        image_pooling (bool): add the image-level feature branch (Table 5's last column).
            Default: True.
        project_dropout (float): element-wise dropout after the ASPP projection, in [0, 1).
            Default: 0.0.
        num_extra_convs (int): 3x3 conv + norm + act layers between the projection and the
            classifier (torchvision: 1). Default: 0.
        downsample_label (bool): compute the training loss at the logits' resolution on
            nearest-downsampled labels instead of on upsampled logits. Default: False.
        norm_eval (bool): keep every BN of the head in eval mode during training (frozen
            running statistics). Default: False.
        norm_cfg (dict | None): norm layer of every conv (the paper: BN everywhere).
            Default: ``dict(type='BN', requires_grad=True)``.
        **kwargs: ``BaseDecodeHead`` arguments (``num_classes``, ``dropout_ratio``,
            ``act_cfg``, ``in_index``, ``loss_decode``, ``align_corners`` ...).
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]] = 2048,
                 channels: int = 256,
                 atrous_rates: Sequence[int] = (6, 12, 18),
                 rates_output_stride: int = 16,
                 output_stride: int = 16,
                 image_pooling: bool = True,
                 project_dropout: float = 0.0,
                 num_extra_convs: int = 0,
                 downsample_label: bool = False,
                 norm_eval: bool = False,
                 norm_cfg: Optional[Dict] = dict(type='BN', requires_grad=True),
                 **kwargs) -> None:
        norm_cfg = copy.deepcopy(norm_cfg)
        _check_arguments(in_channels, channels, atrous_rates, rates_output_stride,
                         image_pooling, project_dropout, num_extra_convs, norm_cfg)
        for name, value in (('downsample_label', downsample_label), ('norm_eval', norm_eval)):
            if not isinstance(value, bool):
                raise ValueError(f'{name} must be a bool, got {value!r}.')
        super().__init__(in_channels, channels, norm_cfg=norm_cfg, **kwargs)
        if not isinstance(self.in_channels, int):
            raise ValueError(
                f'input_transform={self.input_transform!r} hands the head several feature maps; '
                'ASPP takes one: use input_transform=None (one in_index) or "resize_concat".')
        self.atrous_rates = tuple(atrous_rates)
        self.rates_output_stride = rates_output_stride
        self.image_pooling = image_pooling
        self.downsample_label = downsample_label
        self.norm_eval = norm_eval
        layer_cfg = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.aspp = ASPP(
            self.in_channels,
            self.channels,
            atrous_rates=self.atrous_rates,
            image_pooling=image_pooling,
            project_dropout=project_dropout,
            **layer_cfg)
        extra_convs = [
            ConvModule(self.channels, self.channels, 3, padding=1, **layer_cfg)
            for _ in range(num_extra_convs)
        ]
        self.extra_convs = nn.Sequential(*extra_convs) if extra_convs else None
        self.output_stride = rates_output_stride
        self.set_output_stride(output_stride)

    def set_output_stride(self, output_stride: int) -> None:
        """Follow the model's output stride: rescale the ASPP rates, keep every weight.

        Args:
            output_stride (int): the backbone's output stride; every
                ``rate * rates_output_stride / output_stride`` must be an integer >= 1.

        Raises:
            ValueError: if an effective rate would not be an integer >= 1.
        """
        rates = scale_atrous_rates(self.atrous_rates, self.rates_output_stride, output_stride)
        self.aspp.set_atrous_rates(rates)
        self.output_stride = output_stride

    @property
    def effective_rates(self) -> Tuple[int, ...]:
        """The dilations the 3x3 branches use at the current output stride."""
        return self.aspp.atrous_rates

    def train(self, mode: bool = True) -> 'DeepLabV3Head':
        """Set train/eval mode; with ``norm_eval`` the head's BN layers stay in eval mode."""
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def _forward_feature(self, inputs: List[Tensor]) -> Tensor:
        """ASPP and the extra convs: the feature ``conv_seg`` classifies.

        Args:
            inputs (list[Tensor]): multi-level backbone features.

        Returns:
            Tensor: ``(N, channels, H, W)``.
        """
        x = self._transform_inputs(inputs)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'DeepLabV3Head: the input feature (in_index={self.in_index}) has shape '
                f'{tuple(x.shape)}, expected (N, in_channels={self.in_channels}, H, W). Set '
                'in_channels to the backbone\'s channel count at that index.')
        feat = self.aspp(x)
        if self.extra_convs is not None:
            feat = self.extra_convs(feat)
        return feat

    def forward(self, inputs: List[Tensor]) -> Tensor:
        """Logits at the feature resolution, ``(N, out_channels, H, W)``."""
        return self.cls_seg(self._forward_feature(inputs))

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples: SampleList) -> dict:
        """Training loss at the label resolution (default) or at the logits' (ablation).

        The paper (appendix) keeps the ground truth intact and bilinearly upsamples the logits
        to the label size: downsampling the labels throws away fine annotation (76.01 vs 77.21
        mIoU). ``downsample_label=True`` reproduces that ablation with
        :func:`downsample_labels`. Pixel samplers (OHEM), multiple losses and ``acc_seg``
        behave as in ``BaseDecodeHead`` at whichever resolution is used.

        Args:
            seg_logits (Tensor): ``(N, C, h, w)`` logits from :meth:`forward`.
            batch_data_samples (list[SegDataSample]): samples with ``gt_sem_seg``.

        Returns:
            dict[str, Tensor]: the losses by ``loss_name`` and ``acc_seg``.
        """
        seg_label = self._stack_batch_gt(batch_data_samples)
        if self.downsample_label:
            seg_label = downsample_labels(seg_label, seg_logits.shape[2:], self.align_corners)
        else:
            seg_logits = resize(
                input=seg_logits,
                size=seg_label.shape[2:],
                mode='bilinear',
                align_corners=self.align_corners)
        seg_weight = None
        if self.sampler is not None:
            seg_weight = self.sampler.sample(seg_logits, seg_label)
        seg_label = seg_label.squeeze(1)

        losses_decode = self.loss_decode
        if not isinstance(losses_decode, nn.ModuleList):
            losses_decode = [losses_decode]
        loss = dict()
        for loss_decode in losses_decode:
            value = loss_decode(
                seg_logits, seg_label, weight=seg_weight, ignore_index=self.ignore_index)
            name = loss_decode.loss_name
            loss[name] = loss[name] + value if name in loss else value
        loss['acc_seg'] = accuracy(seg_logits, seg_label, ignore_index=self.ignore_index)
        return loss


def _check_arguments(in_channels: Union[int, Sequence[int]], channels: int,
                     atrous_rates: Sequence[int], rates_output_stride: int, image_pooling: bool,
                     project_dropout: float, num_extra_convs: int,
                     norm_cfg: Optional[Dict]) -> None:
    """Fail at construction, naming the argument, its value and what is allowed."""
    in_channel_list = in_channels if isinstance(in_channels, (list, tuple)) else [in_channels]
    if not in_channel_list or not all(_is_positive_int(c) for c in in_channel_list):
        raise ValueError(
            'in_channels must be a positive int (or, with input_transform="resize_concat", a '
            f'list of them), got {in_channels!r}.')
    if not _is_positive_int(channels):
        raise ValueError(f'channels must be a positive int, got {channels!r}.')
    if (isinstance(atrous_rates, (str, bytes)) or not isinstance(atrous_rates, Sequence)
            or len(atrous_rates) == 0
            or not all(_is_positive_int(rate) for rate in atrous_rates)):
        raise ValueError(
            'atrous_rates must be a non-empty sequence of positive ints (the paper: (6, 12, 18) '
            f'at output stride 16), got {atrous_rates!r}.')
    if not _is_positive_int(rates_output_stride):
        raise ValueError(
            f'rates_output_stride must be a positive int, got {rates_output_stride!r}.')
    if not isinstance(image_pooling, bool):
        raise ValueError(f'image_pooling must be a bool, got {image_pooling!r}.')
    if (isinstance(project_dropout, bool) or not isinstance(project_dropout, (int, float))
            or not 0.0 <= project_dropout < 1.0):
        raise ValueError(f'project_dropout must be a float in [0, 1), got {project_dropout!r}.')
    if isinstance(num_extra_convs, bool) or not isinstance(num_extra_convs, int) \
            or num_extra_convs < 0:
        raise ValueError(f'num_extra_convs must be an int >= 0, got {num_extra_convs!r}.')
    if norm_cfg is None:
        return
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise ValueError(f'norm_cfg must be None or a dict with a "type" key, got {norm_cfg!r}.')
    norm_type = norm_cfg['type']
    if norm_type == 'GN':
        groups = norm_cfg.get('num_groups')
        if not _is_positive_int(groups) or channels % groups != 0:
            raise ValueError(
                f'channels={channels} must be divisible by norm_cfg["num_groups"]={groups!r} '
                'for GroupNorm (e.g. channels=256 with num_groups=32).')
        if image_pooling and channels // groups == 1:
            raise ValueError(
                f'norm_cfg["num_groups"]={groups} equals channels={channels}: GroupNorm with one '
                'channel per group outputs a constant on the 1x1 image-pooling map; use fewer '
                'groups or image_pooling=False.')
    if image_pooling and norm_type in _NORMS_WITHOUT_SINGLE_VALUE_SUPPORT:
        raise ValueError(
            f'norm_cfg type {norm_type!r} normalises each image over its spatial positions, and '
            'the image-pooling branch has one position (1x1); use BN/SyncBN/GN or '
            'image_pooling=False.')
