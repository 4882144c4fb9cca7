"""ASPP with image-level features (DeepLabV3 Sec. 3.3, Fig. 5), branches in torchvision's order
``[1x1, rate_1..rate_k, image pooling]`` so its weights map 1:1 (``torchvision_key_map``).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm


def pooled_batch_norm_uses_running_stats(norm: Optional[nn.Module], x: Tensor) -> bool:
    """Whether training-mode ``norm`` on ``x`` would see one value per channel (a 1x1 pooled map
    of one image), which BN cannot normalise. A ``SyncBatchNorm`` in a group of two or more
    processes gathers more and says False; the answer is the same on every rank.
    """
    if not isinstance(norm, _BatchNorm) or not norm.training:
        return False
    if x.numel() // max(x.size(1), 1) != 1:
        return False
    if isinstance(norm, nn.SyncBatchNorm) and dist.is_available() and dist.is_initialized():
        group = norm.process_group if norm.process_group is not None else dist.group.WORLD
        if dist.get_world_size(group) > 1:
            return False
    return True


class ImagePooling(ConvModule):
    """Image-level features (Sec. 3.3, Fig. 5 (b)): global average pooling, 1x1 conv + norm +
    act, broadcast back (exactly what bilinear upsampling of a 1x1 map gives).

    With one image per process, training BN on the pooled map has one value per channel and
    would raise; that step uses the running statistics without updating them (frozen BN for
    this layer, as in the appendix) while conv and affine parameters still train.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        height, width = x.shape[-2:]
        pooled = x.mean(dim=(2, 3), keepdim=True)
        if pooled_batch_norm_uses_running_stats(self.norm, pooled):
            feat = self._forward_with_running_stats(pooled)
        else:
            feat = super().forward(pooled)
        return feat.expand(-1, -1, height, width)

    def _forward_with_running_stats(self, pooled: Tensor) -> Tensor:
        """Conv -> BN with running statistics (not updated) -> activation."""
        norm = self.norm
        if norm.running_mean is None:
            raise ValueError(
                f'ImagePooling: one image per process and {type(norm).__name__} with '
                'track_running_stats=False: no statistics to normalise the 1x1 pooled map; train '
                'with 2+ images per process, SyncBN across processes or norm_eval=True.')
        feat = super().forward(pooled, activate=False, norm=False)
        feat = F.batch_norm(feat, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                            training=False, eps=norm.eps)
        if self.with_activation:
            feat = self.activate(feat)
        return feat


class ASPP(nn.Module):
    """The paper's ASPP: parallel 1x1 and atrous 3x3 branches, image pooling, 1x1 projection,
    dropout (torchvision 0.5, the official code 0.1). Rates are effective dilations."""

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 atrous_rates: Sequence[int] = (6, 12, 18),
                 image_pooling: bool = True,
                 project_dropout: float = 0.0,
                 conv_cfg: Optional[Dict] = None,
                 norm_cfg: Optional[Dict] = None,
                 act_cfg: Optional[Dict] = dict(type='ReLU')) -> None:
        super().__init__()
        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        branches: List[nn.Module] = [ConvModule(in_channels, channels, 1, **layer_cfg)]
        for rate in atrous_rates:
            branches.append(
                ConvModule(in_channels, channels, 3, padding=rate, dilation=rate, **layer_cfg))
        self.convs = nn.ModuleList(branches)
        self.image_pool = (
            ImagePooling(in_channels, channels, 1, **layer_cfg) if image_pooling else None)
        num_branches = len(branches) + int(image_pooling)
        self.project = ConvModule(num_branches * channels, channels, 1, **layer_cfg)
        self.dropout = nn.Dropout(project_dropout) if project_dropout > 0 else None

    @property
    def atrous_rates(self) -> Tuple[int, ...]:
        """The current dilation of each 3x3 branch."""
        return tuple(branch.conv.dilation[0] for branch in self.convs[1:])

    def set_atrous_rates(self, rates: Sequence[int]) -> None:
        """Set the dilation and matching padding of every 3x3 branch; no weight changes."""
        for branch, rate in zip(self.convs[1:], rates):
            branch.conv.dilation = (rate, rate)
            branch.conv.padding = (rate, rate)
            branch.dilation = branch.conv.dilation
            branch.padding = rate

    def forward(self, x: Tensor) -> Tensor:
        """Every branch on the same feature, concatenated, projected (Fig. 5)."""
        outs = [branch(x) for branch in self.convs]
        if self.image_pool is not None:
            outs.append(self.image_pool(x))
        out = self.project(torch.cat(outs, dim=1))
        if self.dropout is not None:
            out = self.dropout(out)
        return out
