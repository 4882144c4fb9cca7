"""Multi-grid dilated ResNet with the cascaded block5..block7 of DeepLabV3 (Sec. 3.2, Fig. 3).

One ``output_stride`` knob decides which strides are replaced by atrous convolution
(:mod:`deeplabv3_plugin.models.utils.output_stride`); multi-grid unit rates multiply the block
rate in block4 and in every cascaded block. The stems and parameter names are those of mmseg's
``ResNet`` / ``ResNetV1c`` (and thereby torchvision's ResNet), so ImageNet checkpoints load as is.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import Sequential
from mmseg.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.output_stride import (BLOCK_STRIDES, CASCADE_BLOCK_STRIDE, DilationPlan,
                                   check_multi_grid, check_num_cascade_blocks,
                                   check_output_stride, make_dilation_plan)

STEMS = ('deep', 'torchvision')
CASCADE_INITS = ('block4', 'random')


class Subsample(nn.Module):
    """Parameter-free shortcut of a unit whose input and output widths are equal.

    Keeps every ``stride``-th pixel, like TF-slim's ``resnet_utils.subsample`` (a 1x1 max pool)
    in the bottleneck unit of ``resnet_v1`` when ``depth_in == depth``, which is how the paper's
    official code builds the first unit of a cascaded block. For odd sizes it gives the same
    ``ceil(size / stride)`` as the unit's padded, strided 3x3 conv, so the sum lines up.

    Args:
        stride (int): Spatial subsampling factor; 1 is the identity. Default: 1.
    """

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """Return every ``stride``-th row and column of ``x`` (``x`` itself at stride 1)."""
        if self.stride == 1:
            return x
        return x[:, :, ::self.stride, ::self.stride]

    def extra_repr(self) -> str:
        return f'stride={self.stride}'


class CascadedBlock(Sequential):
    """A copy of block4 stacked after it (block5, block6 or block7, Sec. 3.2 "going deeper").

    Its units have the widths of block4's (``planes``, ``planes * expansion`` out), so the first
    unit's input and output widths are equal and its shortcut is a :class:`Subsample`, not a
    projection. A projection would exist only at the output strides where this block keeps its
    stride; the parameter-free shortcut keeps the parameters identical at every OS, which is what
    lets a trained model switch its OS at test time (Table 4).

    Args:
        block (type): ``Bottleneck`` or ``BasicBlock`` (mmseg's, as in block1..4).
        planes (int): Bottleneck width of the units (512 for ResNet-50/101).
        num_units (int): Number of units, that of block4 (3 for ResNet-50/101).
        **unit_kwargs: Passed to every unit (``style``, ``conv_cfg``, ``norm_cfg``,
            ``init_cfg`` ...). Strides and rates are set later by ``set_output_stride``.
    """

    def __init__(self, block: type, planes: int, num_units: int, **unit_kwargs) -> None:
        width = planes * block.expansion
        units = [
            block(
                inplanes=width,
                planes=planes,
                stride=CASCADE_BLOCK_STRIDE if index == 0 else 1,
                dilation=1,
                downsample=Subsample(CASCADE_BLOCK_STRIDE) if index == 0 else None,
                **unit_kwargs) for index in range(num_units)
        ]
        super().__init__(*units)


def _set_conv_geometry(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    """Set a 3x3 conv's stride and rate, with the "same" padding of the rate. No weight moves."""
    if conv.kernel_size != (3, 3):
        raise TypeError(f'expected a 3x3 convolution, got kernel_size={conv.kernel_size} in '
                        f'{conv!r}')
    conv.stride = (stride, stride)
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _set_unit_geometry(unit: nn.Module, stride: int, dilation: int) -> None:
    """Give one residual unit its stride (first unit of a block only) and atrous rate.

    The stride sits on the 3x3 conv (mmseg's ``style='pytorch'``, as TF-slim's resnet_v1). In a
    ``BasicBlock`` both 3x3 convs use the rate: atrous convolution must dilate every conv that
    reads the no-longer-subsampled map (mmseg leaves the second one undilated). The shortcut's
    stride follows the unit's.
    """
    if isinstance(unit, Bottleneck):
        _set_conv_geometry(unit.conv2, stride, dilation)
        unit.conv2_stride = stride
    elif isinstance(unit, BasicBlock):
        _set_conv_geometry(unit.conv1, stride, dilation)
        _set_conv_geometry(unit.conv2, 1, dilation)
    else:
        raise TypeError(f'cannot set the output stride of unit type {type(unit).__name__}; '
                        f'expected mmseg Bottleneck or BasicBlock')
    unit.stride = stride
    unit.dilation = dilation
    shortcut = unit.downsample
    if isinstance(shortcut, Subsample):
        shortcut.stride = stride
    elif shortcut is not None:
        shortcut[0].stride = (stride, stride)  # the 1x1 projection conv


@MODELS.register_module()
class MultiGridResNet(ResNet):
    """ResNet with DeepLabV3's output stride, multi-grid and cascaded blocks (Sec. 3.2).

    Block1..block4 are mmseg's ``ResNet`` stages (``layer1..layer4``); ``num_cascade_blocks``
    appends block5..block7 as ``layer5..layer7`` (:class:`CascadedBlock`). The output stride is
    applied by :meth:`set_output_stride`, at construction and at any later time, and only
    changes conv strides, rates and paddings, so the same weights run at every OS: train at
    OS 16, evaluate at OS 8 (Table 4, Table 6).

    Multi-grid is the paper's *unit rate x block rate*: OS 16 with ``multi_grid=(1, 2, 4)``
    gives block4 rates (2, 4, 8); a cascade at OS 16 has block rates 2, 4, 8, 16 in block4..7,
    each times the unit rates (Table 3). mmseg's ``ResNet(multi_grid=...)`` uses absolute rates.

    Cascaded blocks and ImageNet weights: an ImageNet checkpoint has no block5..7. When a state
    dict that has ``layer4`` but lacks ``layerN`` (N >= 5) is loaded into this backbone (through
    ``init_cfg=dict(type='Pretrained', ...)``, ``pretrained=...`` or ``load_state_dict``),
    ``cascade_init='block4'`` fills each missing cascaded block with block4's tensors wherever the
    shapes match: every tensor of units 2.. and conv2/conv3 and the norms of unit 1. Unit 1's
    conv1 (input width 2048, block4's is 1024) cannot be copied and keeps its initialisation; the
    log line lists every tensor that was not copied. ``cascade_init='random'`` keeps the default
    initialisation of the cascaded blocks (the paper does not say how it initialises them).
    A checkpoint that has the cascaded blocks (a trained cascade model) loads as is.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        in_channels (int): Input image channels. Default: 3.
        stem (str): ``'deep'``: mmseg's ResNetV1c stem, three 3x3 convs (keys ``stem.*``, loads
            ``open-mmlab://resnet50_v1c``); ``'torchvision'``: one 7x7 conv (keys ``conv1``,
            ``bn1``, loads ``torchvision://resnet50``). Default: ``'deep'``.
        stem_channels (int): Output width of the stem. Default: 64.
        base_channels (int): Bottleneck width of block1 (doubling per block up to block4).
            Default: 64.
        output_stride (int): Input size / size of the last feature map: a power of two from 4 to
            ``32 * 2 ** num_cascade_blocks``. Default: 16.
        multi_grid (Sequence[int] | None): Unit rates of block4 and of every cascaded block, one
            per unit of block4 (3 for ResNet-50/101); None means all ones, i.e. ``(1, 1, 1)``.
            Default: None.
        num_cascade_blocks (int): Copies of block4 appended after it (0..3 = up to block7).
            Default: 0.
        cascade_init (str): ``'block4'`` or ``'random'``, see above. Default: ``'block4'``.
        contract_dilation (bool): The first unit of each dilated block uses ``rate // 2``, as
            torchvision's ``replace_stride_with_dilation`` and mmseg's ResNetV1c configs; the paper
            does not contract. Default: False.
        out_indices (Sequence[int] | None): Blocks whose outputs are returned (0 = block1).
            None returns every block, cascaded ones included. Default: None.
        frozen_stages (int): Freeze the stem (0) and blocks 1..``frozen_stages`` (parameters and
            BN statistics); -1 freezes nothing. Default: -1.
        conv_cfg (dict | None): Conv layer config. Default: None (``nn.Conv2d``).
        norm_cfg (dict): Norm layer config. Default: ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep every BN in eval mode during training (frozen statistics, the
            paper's second training stage). Default: False.
        with_cp (bool): Gradient checkpointing per residual unit, trading compute for the memory
            that OS 8 training needs. BN layers run twice in training mode, so their running
            statistics are updated twice per step. Default: False.
        zero_init_residual (bool): Zero-initialise the last norm of every unit when initialising
            from scratch. Default: True.
        pretrained (str | None): Deprecated checkpoint path; use ``init_cfg``. Default: None.
        init_cfg (dict | list[dict] | None): Initialisation config, e.g.
            ``dict(type='Pretrained', checkpoint='torchvision://resnet101')``. Default: None.

    Example:
        >>> from mmseg.registry import MODELS
        >>> import deeplabv3_plugin  # noqa: F401
        >>> net = MODELS.build(dict(type='MultiGridResNet', depth=50, base_channels=8,
        ...                         stem_channels=16, output_stride=16, multi_grid=(1, 2, 4)))
        >>> [tuple(f.shape[2:]) for f in net(torch.rand(1, 3, 64, 64))]
        [(16, 16), (8, 8), (4, 4), (4, 4)]
    """

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem: str = 'deep',
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 output_stride: int = 16,
                 multi_grid: Optional[Sequence[int]] = None,
                 num_cascade_blocks: int = 0,
                 cascade_init: str = 'block4',
                 contract_dilation: bool = False,
                 out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'MultiGridResNet: depth={depth!r} is not allowed: expected one of '
                             f'{tuple(sorted(self.arch_settings))}.')
        if stem not in STEMS:
            raise ValueError(f'MultiGridResNet: stem={stem!r} is not allowed: expected one of '
                             f'{STEMS}.')
        if cascade_init not in CASCADE_INITS:
            raise ValueError(f'MultiGridResNet: cascade_init={cascade_init!r} is not allowed: '
                             f'expected one of {CASCADE_INITS}.')
        if init_cfg is not None and pretrained is not None:
            raise ValueError(f'MultiGridResNet: pretrained={pretrained!r} and init_cfg='
                             f'{init_cfg!r} are both set: give the checkpoint in one of them '
                             f'(init_cfg=dict(type=\'Pretrained\', checkpoint=...)).')
        num_cascade_blocks = check_num_cascade_blocks(num_cascade_blocks)
        block, units_per_block = self.arch_settings[depth]
        self._check_args_before_build(output_stride, multi_grid, num_cascade_blocks,
                                      units_per_block, out_indices, frozen_stages)
        num_blocks = len(BLOCK_STRIDES) + num_cascade_blocks

        # Build block1..4 at nominal strides; set_output_stride below sets strides and rates.
        super().__init__(
            depth=depth,
            in_channels=in_channels,
            stem_channels=stem_channels,
            base_channels=base_channels,
            num_stages=len(BLOCK_STRIDES),
            strides=BLOCK_STRIDES,
            dilations=(1, ) * len(BLOCK_STRIDES),
            out_indices=tuple(range(len(BLOCK_STRIDES))),
            style='pytorch',
            deep_stem=stem == 'deep',
            avg_down=False,
            frozen_stages=-1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            with_cp=False,  # checkpointing is done per unit in forward()
            zero_init_residual=zero_init_residual,
            pretrained=pretrained,
            init_cfg=init_cfg)
        self.stem_type = stem  # `self.stem` is the deep stem's Sequential
        self.units_per_block = tuple(units_per_block)
        self.multi_grid = check_multi_grid(multi_grid, units_per_block[-1])
        self.num_cascade_blocks = num_cascade_blocks
        self.cascade_init = cascade_init
        self.contract_dilation = contract_dilation
        self.with_cp = with_cp

        for index in range(num_cascade_blocks):
            name = f'layer{len(BLOCK_STRIDES) + index + 1}'
            self.add_module(
                name,
                CascadedBlock(
                    self.block,
                    planes=base_channels * 2**(len(BLOCK_STRIDES) - 1),
                    num_units=units_per_block[-1],
                    style='pytorch',
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    init_cfg=self._unit_init_cfg(zero_init_residual, pretrained, init_cfg)))
            self.res_layers.append(name)

        self.out_indices = tuple(range(num_blocks)) if out_indices is None else tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.plan: Optional[DilationPlan] = None
        self.output_stride: Optional[int] = None
        self.set_output_stride(output_stride)
        self._freeze_stages()
        self.register_load_state_dict_pre_hook(_init_cascade_from_block4)

    @staticmethod
    def _check_args_before_build(output_stride: int, multi_grid: Optional[Sequence[int]],
                                 num_cascade_blocks: int, units_per_block: Sequence[int],
                                 out_indices: Optional[Sequence[int]],
                                 frozen_stages: int) -> None:
        """Reject bad arguments before any layer is built, each error naming its argument."""
        check_output_stride(output_stride, num_cascade_blocks)
        check_multi_grid(multi_grid, units_per_block[-1])
        num_blocks = len(BLOCK_STRIDES) + num_cascade_blocks
        if out_indices is not None and (
                isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence)
                or not out_indices or any(
                    isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_blocks
                    for i in out_indices)):
            raise ValueError(f'MultiGridResNet: out_indices={out_indices!r} is not allowed: '
                             f'expected a non-empty tuple of block indices in 0..{num_blocks - 1}'
                             f' (num_cascade_blocks={num_cascade_blocks}), or None for all.')
        if (isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int)
                or not -1 <= frozen_stages <= num_blocks):
            raise ValueError(f'MultiGridResNet: frozen_stages={frozen_stages!r} is not allowed: '
                             f'expected an integer in -1..{num_blocks} (-1: nothing, 0: stem, '
                             f'i: stem and blocks 1..i).')

    def _unit_init_cfg(self, zero_init_residual: bool, pretrained: Optional[str],
                       init_cfg: Union[dict, List[dict], None]) -> Optional[dict]:
        """The per-unit init of mmseg's ResNet: zero last norm when training from scratch."""
        if not zero_init_residual or pretrained is not None or init_cfg is not None:
            return None
        last_norm = 'norm3' if self.block is Bottleneck else 'norm2'
        return dict(type='Constant', val=0, override=dict(name=last_norm))

    def set_output_stride(self, output_stride: int) -> None:
        """Set the strides and atrous rates of every unit for ``output_stride``; weights stay.

        Args:
            output_stride (int): A power of two from 4 to ``32 * 2 ** num_cascade_blocks``.

        Raises:
            ValueError: If the output stride is not reachable for this network.
        """
        plan = make_dilation_plan(
            output_stride,
            units_per_block=self.units_per_block,
            multi_grid=self.multi_grid,
            num_cascade_blocks=self.num_cascade_blocks,
            contract_dilation=self.contract_dilation)
        for name, stride, dilations in zip(self.res_layers, plan.strides, plan.unit_dilations):
            for index, (unit, dilation) in enumerate(zip(getattr(self, name), dilations)):
                _set_unit_geometry(unit, stride if index == 0 else 1, dilation)
        self.plan = plan
        self.output_stride = plan.output_stride
        self.strides = plan.strides
        self.dilations = plan.block_rates

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Run the stem and every block; return the outputs of the blocks in ``out_indices``."""
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        checkpointing = self.with_cp and self.training and torch.is_grad_enabled()
        outs = []
        for index, name in enumerate(self.res_layers):
            for unit in getattr(self, name):
                x = cp.checkpoint(unit, x, use_reentrant=False) if checkpointing else unit(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'MultiGridResNet':
        """Set train/eval mode, keeping frozen stages and (with ``norm_eval``) BN in eval mode.

        Returns ``self`` like ``nn.Module.train`` (mmseg's ``ResNet.train`` returns None, which
        breaks ``backbone.eval()(x)``).
        """
        super().train(mode)
        return self

    def cascade_init_report(self, state_dict: Dict[str, Tensor],
                            prefix: str = '') -> Dict[str, Tuple[List[str], List[str]]]:
        """Which tensors of each missing cascaded block can be taken from block4 in a state dict.

        Args:
            state_dict (dict[str, Tensor]): A state dict about to be loaded into this backbone.
            prefix (str): Key prefix of this backbone in ``state_dict``. Default: ``''``.

        Returns:
            dict[str, tuple[list[str], list[str]]]: For each cascaded block absent from
            ``state_dict`` (while ``layer4`` is present): the keys (relative to the block) that
            block4 provides with the same shape, and those it cannot provide.
        """
        source = f'{prefix}layer{len(BLOCK_STRIDES)}.'
        if not any(key.startswith(source) for key in state_dict):
            return {}
        report = {}
        for name in self.res_layers[len(BLOCK_STRIDES):]:
            target = f'{prefix}{name}.'
            if any(key.startswith(target) for key in state_dict):
                continue
            copied, kept = [], []
            for key, tensor in getattr(self, name).state_dict().items():
                donor = state_dict.get(source + key)
                if donor is not None and tuple(donor.shape) == tuple(tensor.shape):
                    copied.append(key)
                elif not key.endswith('num_batches_tracked'):  # a counter old checkpoints lack
                    kept.append(key)
            report[name] = (copied, kept)
        return report


def _init_cascade_from_block4(module: MultiGridResNet, state_dict: Dict[str, Tensor],
                              prefix: str, *args) -> None:
    """Load-state-dict pre-hook: initialise cascaded blocks absent from a checkpoint.

    Runs before the backbone's children read ``state_dict``, so the copied tensors load (and
    count as present) like any other; keys that cannot be copied stay missing, and
    mmengine's loader reports them as such.
    """
    report = module.cascade_init_report(state_dict, prefix)
    source = f'{prefix}layer{len(BLOCK_STRIDES)}.'
    for name, (copied, kept) in report.items():
        if module.cascade_init == 'random':
            print_log(f'MultiGridResNet: the checkpoint has no {name}; cascade_init=\'random\' '
                      f'keeps its default initialisation.', logger='current')
            continue
        for key in copied:
            state_dict[f'{prefix}{name}.{key}'] = state_dict[source + key]
        not_copied = ', '.join(kept) if kept else 'none'
        print_log(f'MultiGridResNet: the checkpoint has no {name}; cascade_init=\'block4\' '
                  f'copied {len(copied)} tensors from layer4; not copied (no layer4 tensor of '
                  f'that shape, default initialisation kept): {not_copied}.', logger='current')
