"""Atrous Spatial Pyramid Pooling with image-level features (DeepLabV3, Sec. 3.3).

The paper's ASPP (Chen et al. 2017, Sec. 3.3 and Fig. 5) runs, in parallel on the last
backbone feature map:

(a) one 1x1 convolution and one 3x3 atrous convolution per rate (``(6, 12, 18)`` at output
    stride 16), each with 256 filters and batch normalisation;
(b) *image-level features*: global average pooling -> 1x1 conv (256) -> BN -> bilinear
    upsampling back to the feature map size.

The branch outputs are concatenated and projected by a 1x1 conv (256) + BN. This module stops
there; the classifier (``conv_seg``) belongs to the decode head.

Branch order is ``[1x1, rate_1, ..., rate_k, image pooling]``, the order torchvision's ``ASPP``
uses, so the projection conv's input channels line up and torchvision's
``classifier.0.convs.i`` / ``classifier.0.project`` weights map 1:1 onto ``convs.i`` /
``image_pool`` / ``project`` here (see ``deeplabv3_head.torchvision_key_map``).
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
    """Whether batch statistics of ``norm`` on ``x`` would be taken over a single value.

    Training-mode batch norm on a tensor with one value per channel is undefined (the variance is
    zero, every output collapses to the BN bias), so PyTorch raises "Expected more than 1 value
    per channel when training". The image-pooling branch meets this whenever a process sees one
    image, because its input is a 1x1 map.

    The decision is a pure function of the module's mode, the local value count and, for
    ``nn.SyncBatchNorm``, the size of its process group, so it is identical on every rank:
    a SyncBN layer in a group of two or more processes gathers at least one value per process
    and keeps the paper's batch statistics (no rank can take a different path and deadlock the
    collective).

    Args:
        norm (nn.Module | None): the normalisation layer that will see ``x``.
        x (Tensor): its input, ``(N, C, H, W)``.

    Returns:
        bool: True when ``norm`` is a batch norm in training mode and the statistics it would
        compute cover exactly one value per channel.
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
    """Image-level features of the paper's ASPP (Sec. 3.3, Fig. 5 (b)).

    Global average pooling over the whole feature map, a 1x1 conv with ``norm_cfg`` and
    ``act_cfg``, and bilinear upsampling back to the input size. Upsampling a 1x1 map
    bilinearly (with or without ``align_corners``) copies its single value to every position,
    so it is done exactly, and faster, by broadcasting (``expand``); the graph has no
    interpolation node with a dynamic size, which keeps ONNX export simple.

    **Batch size 1.** Training-mode BN on the pooled 1x1 map has one value per channel when a
    process sees a single image. Instead of crashing (the most reported failure of DeepLabV3
    ports), this module then normalises with the layer's *running* statistics for that step
    and does not update them; the conv weights and the BN affine parameters still receive
    gradients. Effect on results:

    * batch >= 2 per process, or ``SyncBN`` over >= 2 processes: exactly the paper's BN, the
      fallback never triggers;
    * batch 1 without synchronisation: the pooling branch trains like the appendix's *frozen*
      BN for this one layer (running statistics stay at their initial or pre-trained values,
      the affine parameters train); training and inference use the same normalisation, so
      there is no train/test mismatch. Every other BN still sees ``H x W`` values per channel
      and trains normally.

    What no normalisation fix in this branch can change: at batch 1 the *projection's* BN
    (batch statistics over one image's ``H x W`` positions) subtracts the per-image mean, and
    the image-level feature is constant over the image, so in training it is cancelled exactly
    and this branch gets no gradient, while inference (running statistics) does use it. With one
    image per process, use ``SyncBN`` across processes or freeze the head's BN
    (``norm_eval=True``) if the image-level features are to learn; the paper's appendix shows
    how much small batches cost anyway (batch 4: 64.43 vs 16: 77.21 mIoU).

    Alternatives and why they were not chosen: dropping BN in this branch (detectron2's ASPP)
    or switching it to GroupNorm changes the architecture at every batch size and breaks
    loading BN checkpoints (torchvision, TF DeepLab); always using running statistics deviates
    from the paper at batch >= 2; normalising over the spatial positions before pooling
    measures spatial variance, not the variance of the pooled feature the layer sees at test
    time; skipping normalisation at batch 1 trains a branch that inference then normalises
    with statistics it never learned; raising a clearer error refuses a legitimate set-up (one
    large crop per device). A layer without running statistics (``track_running_stats=False``)
    has nothing to fall back on, so batch 1 raises a ``ValueError`` saying what to change.

    Args:
        in_channels (int): channels of the backbone feature.
        channels (int): output channels (the paper: 256).
        conv_cfg (dict | None): conv layer config. Default: None (``nn.Conv2d``).
        norm_cfg (dict | None): norm layer config. Default: None.
        act_cfg (dict | None): activation config. Default: ``dict(type='ReLU')``.
    """

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 conv_cfg: Optional[Dict] = None,
                 norm_cfg: Optional[Dict] = None,
                 act_cfg: Optional[Dict] = dict(type='ReLU')) -> None:
        super().__init__(
            in_channels,
            channels,
            kernel_size=1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Pool ``x`` globally, encode it, and broadcast it back to ``x``'s size.

        Args:
            x (Tensor): backbone feature, ``(N, in_channels, H, W)``.

        Returns:
            Tensor: ``(N, channels, H, W)``, constant over ``H x W`` for each image.
        """
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
        if norm.running_mean is None or norm.running_var is None:
            raise ValueError(
                'ImagePooling: the pooled feature has one value per channel in training '
                f'(input {tuple(pooled.shape)}), and its {type(norm).__name__} has '
                'track_running_stats=False, so there are no running statistics to use '
                'instead. Train with at least 2 images per process, use SyncBN across '
                'processes, or keep the head BN in eval mode (norm_eval=True).')
        feat = super().forward(pooled, activate=False, norm=False)
        feat = F.batch_norm(
            feat,
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            training=False,
            momentum=0.0,
            eps=norm.eps)
        if self.with_activation:
            feat = self.activate(feat)
        return feat


class ASPP(nn.Module):
    """The paper's ASPP: parallel 1x1 and atrous 3x3 branches, image pooling, 1x1 projection.

    ``forward`` reads like Fig. 5 of the paper: every branch sees the same feature, the outputs
    are concatenated along channels, projected by a 1x1 conv + norm + activation, then
    (optionally) dropped out. Rates here are *effective* dilations; converting a rate given at a
    reference output stride is the decode head's job (``DeepLabV3Head.set_output_stride``).

    Args:
        in_channels (int): channels of the backbone feature (2048 for ResNet-50/101).
        channels (int): filters of every branch and of the projection (the paper: 256).
        atrous_rates (Sequence[int]): effective dilation of each 3x3 branch, e.g.
            ``(6, 12, 18)`` at output stride 16. Any number of rates (Table 5 adds 24).
        image_pooling (bool): add the image-level feature branch. Default: True.
        project_dropout (float): element-wise dropout after the projection, as in torchvision
            (0.5) and the official TF code (0.1). Default: 0.0.
        conv_cfg (dict | None): conv layer config. Default: None.
        norm_cfg (dict | None): norm layer config of every branch and the projection.
            Default: None.
        act_cfg (dict | None): activation config. Default: ``dict(type='ReLU')``.
    """

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
            ImagePooling(in_channels, channels, **layer_cfg) if image_pooling else None)
        num_branches = len(branches) + int(image_pooling)
        self.project = ConvModule(num_branches * channels, channels, 1, **layer_cfg)
        self.dropout = nn.Dropout(project_dropout) if project_dropout > 0 else None

    @property
    def atrous_rates(self) -> Tuple[int, ...]:
        """The current dilation of each 3x3 branch (read from the convs themselves)."""
        return tuple(branch.conv.dilation[0] for branch in self.convs[1:])

    def set_atrous_rates(self, rates: Sequence[int]) -> None:
        """Change the dilation (and matching padding) of every 3x3 branch in place.

        Only ``dilation`` and ``padding`` change, never a weight, so one set of weights can be
        evaluated at another output stride (the paper's "train OS 16, evaluate OS 8").

        Args:
            rates (Sequence[int]): one effective rate per 3x3 branch.
        """
        atrous_branches = self.convs[1:]
        if len(rates) != len(atrous_branches):
            raise ValueError(
                f'ASPP.set_atrous_rates: got {len(rates)} rates {tuple(rates)}, expected one '
                f'per 3x3 branch ({len(atrous_branches)}).')
        for branch, rate in zip(atrous_branches, rates):
            branch.conv.dilation = (rate, rate)
            branch.conv.padding = (rate, rate)
            branch.dilation = branch.conv.dilation
            branch.padding = rate

    def forward(self, x: Tensor) -> Tensor:
        """Run every branch on ``x``, concatenate, project.

        Args:
            x (Tensor): backbone feature, ``(N, in_channels, H, W)``.

        Returns:
            Tensor: ``(N, channels, H, W)``.
        """
        outs = [branch(x) for branch in self.convs]
        if self.image_pool is not None:
            outs.append(self.image_pool(x))
        out = self.project(torch.cat(outs, dim=1))
        if self.dropout is not None:
            out = self.dropout(out)
        return out
