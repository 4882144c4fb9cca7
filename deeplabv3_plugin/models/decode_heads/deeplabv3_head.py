"""DeepLabV3 decode head: the paper's ASPP with image-level features (Chen et al. 2017, Sec. 3.3).

Unlike mmseg's ``ASPPHead``: a 1x1 projection (not 3x3), rates that follow the output stride, a
batch-size-1-safe image pooling branch, the appendix's protocol switches, torchvision's layout.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import SampleList
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..output_stride import MAX_CASCADE_BLOCKS, OutputStrideSwitchable, check_output_stride
from .aspp import ASPP
from .label_downsample import downsample_labels


def scale_atrous_rates(atrous_rates: Sequence[int], rates_output_stride: int,
                       output_stride: int) -> Tuple[int, ...]:
    """Rates stated at ``rates_output_stride``, at ``output_stride``: the paper's (6, 12, 18) at
    OS 16 double at OS 8 (Sec. 3.3), keeping each branch's field of view in the image."""
    scaled = tuple(rate * rates_output_stride // output_stride for rate in atrous_rates)
    if any(new < 1 or new * output_stride != rate * rates_output_stride
           for new, rate in zip(scaled, atrous_rates)):
        exact = tuple(rate * rates_output_stride / output_stride for rate in atrous_rates)
        raise ValueError(
            f'output_stride={output_stride} is not allowed with atrous_rates='
            f'{tuple(atrous_rates)} given at rates_output_stride={rates_output_stride}: the rates '
            f'would be {exact}, expected integers >= 1.')
    return scaled


def torchvision_key_map(num_atrous_rates: int = 3) -> Dict[str, str]:
    """Module prefixes of torchvision's ``DeepLabHead`` -> ours with ``project_dropout=0.5,
    num_extra_convs=1, dropout_ratio=0.0`` and BN, mapped 1:1."""
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
class DeepLabV3Head(BaseDecodeHead, OutputStrideSwitchable):
    """ASPP (Sec. 3.3), ``num_extra_convs`` 3x3 conv + norm + act, ``BaseDecodeHead.cls_seg``.

    ``atrous_rates`` are stated at ``rates_output_stride`` and follow the output stride: OS 16
    -> 8 doubles them, no weight changes (Table 6). ``downsample_label=True`` is the appendix's
    ablation (labels shrunk to the logits: 76.01 vs 77.21 mIoU), ``norm_eval=True`` its
    frozen-BN row.

    Args:
        atrous_rates (Sequence[int]): ASPP's 3x3 rates at ``rates_output_stride`` (paper: 6, 12, 18
            at OS 16); ``output_stride`` is the OS the head starts at.
        image_pooling (bool): the image-level features branch (Sec. 3.3, Table 5).
        project_dropout (float): element-wise dropout after the ASPP projection (official 0.1).
        num_extra_convs (int): 3x3 convs before the classifier (torchvision's head: 1).
        downsample_label (bool): shrink the labels to the logits instead of upsampling the
            logits (appendix ablation).
        Others: as mmseg's ``BaseDecodeHead``.
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
        norm_type = norm_cfg and norm_cfg.get('type')
        per_channel_gn = norm_type == 'GN' and norm_cfg.get('num_groups') == channels
        if image_pooling and (norm_type in ('IN', 'IN2d') or per_channel_gn):
            raise ValueError(
                f'norm_cfg={norm_cfg!r} normalises each image over its positions, and the '
                'image-pooling map has one (1x1): it would output a constant. Use BN/SyncBN, '
                'fewer GN groups or image_pooling=False.')
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
            atrous_rates=self._rates_at(output_stride),
            image_pooling=image_pooling,
            project_dropout=project_dropout,
            **layer_cfg)
        extra_convs = [
            ConvModule(self.channels, self.channels, 3, padding=1, **layer_cfg)
            for _ in range(num_extra_convs)
        ]
        self.extra_convs = nn.Sequential(*extra_convs) if extra_convs else None
        self.current_output_stride = output_stride

    def _rates_at(self, output_stride: int) -> Tuple[int, ...]:
        check_output_stride(output_stride, MAX_CASCADE_BLOCKS)
        return scale_atrous_rates(self.atrous_rates, self.rates_output_stride, output_stride)

    def validate_output_stride(self, output_stride: int) -> None:
        self._rates_at(output_stride)

    def switch_output_stride(self, output_stride: int) -> None:
        self.aspp.set_atrous_rates(self._rates_at(output_stride))
        self.current_output_stride = output_stride

    @property
    def effective_rates(self) -> Tuple[int, ...]:
        return self.aspp.atrous_rates

    def train(self, mode: bool = True) -> 'DeepLabV3Head':
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def _forward_feature(self, inputs: List[Tensor]) -> Tensor:
        feat = self.aspp(self._transform_inputs(inputs))
        return feat if self.extra_convs is None else self.extra_convs(feat)

    def forward(self, inputs: List[Tensor]) -> Tensor:
        return self.cls_seg(self._forward_feature(inputs))

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples: SampleList) -> dict:
        """mmseg's loss on logits upsampled to the labels (appendix); ``downsample_label``
        first shrinks the labels to the logits, so that upsampling is the identity."""
        if self.downsample_label:
            size = seg_logits.shape[2:]
            batch_data_samples = [
                SegDataSample(gt_sem_seg=PixelData(data=downsample_labels(
                    sample.gt_sem_seg.data[None], size, self.align_corners)[0]))
                for sample in batch_data_samples
            ]
        return super().loss_by_feat(seg_logits, batch_data_samples)
