"""Multi-grid dilated ResNet with the cascaded block5..block7 of DeepLabV3 (Sec. 3.2, Fig. 3)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import Sequential
from mmseg.models.backbones.resnet import Bottleneck, ResNet
from mmseg.registry import MODELS
from torch import Tensor

from ..output_stride import (BLOCK_STRIDES, CASCADE_BLOCK_STRIDE, DilationPlan,
                             OutputStrideSwitchable, make_dilation_plan)


class Subsample(nn.Module):
    """Parameter-free shortcut of a unit whose input and output widths are equal: every
    ``stride``-th pixel, as TF-slim's ``subsample`` in the official code's cascaded blocks.
    For odd sizes it gives the ``ceil(size / stride)`` of the unit's strided 3x3 conv.
    """

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x
        return x[:, :, ::self.stride, ::self.stride]

    def extra_repr(self) -> str:
        return f'stride={self.stride}'


class CascadedBlock(Sequential):
    """A copy of block4 after it (block5..7, Sec. 3.2 "going deeper").

    Input and output widths are equal, so the first unit's shortcut is a :class:`Subsample`: a
    projection would exist only at the strides where the block keeps its stride, and the
    parameter-free shortcut keeps the weights the same at every OS (Table 4).
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
    conv.stride = (stride, stride)
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _set_unit_geometry(unit: nn.Module, stride: int, dilation: int,
                       post_stride_dilation: int) -> None:
    """Stride (on the first 3x3 conv, ``style='pytorch'``) and rates of one unit and its
    shortcut. ``dilation`` is the rate of that conv; a ``BasicBlock``'s second 3x3 conv, after
    it, runs at ``post_stride_dilation`` (mmseg leaves it undilated)."""
    if isinstance(unit, Bottleneck):
        _set_conv_geometry(unit.conv2, stride, dilation)
        unit.conv2_stride = stride
    else:
        _set_conv_geometry(unit.conv1, stride, dilation)
        _set_conv_geometry(unit.conv2, 1, post_stride_dilation)
    unit.stride = stride
    unit.dilation = dilation
    shortcut = unit.downsample
    if isinstance(shortcut, Subsample):
        shortcut.stride = stride
    elif shortcut is not None:
        shortcut[0].stride = (stride, stride)  # the 1x1 projection conv


@MODELS.register_module()
class MultiGridResNet(ResNet, OutputStrideSwitchable):
    """mmseg's ``ResNet`` (its stems and keys, so ImageNet checkpoints load) with DeepLabV3's
    output stride, multi-grid and ``num_cascade_blocks`` copies of block4 (Sec. 3.2).

    The output stride only sets conv strides, rates and paddings, so the same weights run at
    every OS (Tables 4, 6). Multi-grid is unit rate x block rate: OS 16 with (1, 2, 4) gives
    block4 rates (2, 4, 8) (Table 3). A checkpoint without the cascaded blocks (ImageNet) fills
    them from block4's tensors of equal shape with ``cascade_init='block4'`` and logs the rest.

    Args:
        output_stride (int): input size / size of the last feature map (4 .. 32 x 2^cascades).
        multi_grid (Sequence[int] | None): unit rates of block4's units (and of each cascaded
            block), multiplied by the block rate; None: all ones.
        num_cascade_blocks (int): copies of block4 appended as block5..block7 (0..3, Table 2).
        cascade_init (str): ``'block4'`` fills cascaded blocks from block4's checkpoint tensors,
            ``'random'`` keeps their own initialisation.
        stem (str): ``'deep'`` (ResNetV1c) or ``'torchvision'`` (one 7x7 conv).
        contract_dilation (bool): the conv that carried a removed stride keeps the rate it had
            before (``rate // 2``), the rest of its block takes the new rate: TF-slim's
            ``stack_blocks_dense``, torchvision's and mmseg's rule, which makes switching the
            output stride exact (see ``make_dilation_plan``). False (mmseg's default): the new
            rate everywhere. The paper configs set True, which also trained better on the demo.
        out_indices (Sequence[int] | None): returned blocks (0 = block1); None returns all.
        with_cp (bool): mmseg's per-unit checkpointing; BN statistics then update twice a step.
        Others: as mmseg's ``ResNet`` (``depth``, ``norm_cfg``, ``norm_eval``, ``frozen_stages``,
            ``init_cfg``, ...).
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
        for name, value, allowed in (('stem', stem, ('deep', 'torchvision')),
                                     ('cascade_init', cascade_init, ('block4', 'random'))):
            if value not in allowed:
                raise ValueError(f'MultiGridResNet: {name}={value!r} is not allowed: expected '
                                 f'one of {allowed}.')
        # Block1..4 at nominal strides; the output stride's plan below sets strides and rates.
        super().__init__(
            depth=depth,
            in_channels=in_channels,
            stem_channels=stem_channels,
            base_channels=base_channels,
            deep_stem=stem == 'deep',
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            with_cp=with_cp,
            zero_init_residual=zero_init_residual,
            pretrained=pretrained,
            init_cfg=init_cfg)
        self.stem_type = stem  # `self.stem` is the deep stem's Sequential
        self.multi_grid = multi_grid
        self.num_cascade_blocks = num_cascade_blocks
        self.cascade_init = cascade_init
        self.contract_dilation = contract_dilation
        # mmseg's per-unit init when training from scratch: zero the last norm of every unit.
        unit_init_cfg = None
        if zero_init_residual and pretrained is None and init_cfg is None:
            last_norm = 'norm3' if self.block is Bottleneck else 'norm2'
            unit_init_cfg = dict(type='Constant', val=0, override=dict(name=last_norm))
        for index in range(num_cascade_blocks):
            name = f'layer{len(BLOCK_STRIDES) + index + 1}'
            self.add_module(
                name,
                CascadedBlock(
                    self.block,
                    planes=base_channels * 2**(len(BLOCK_STRIDES) - 1),
                    num_units=self.stage_blocks[-1],
                    style='pytorch',
                    with_cp=with_cp,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    init_cfg=unit_init_cfg))
            self.res_layers.append(name)
        num_blocks = len(self.res_layers)
        self.out_indices = tuple(range(num_blocks) if out_indices is None else out_indices)
        if not set(self.out_indices) <= set(range(num_blocks)):
            raise ValueError(f'MultiGridResNet: out_indices={out_indices!r} is not allowed: '
                             f'expected block indices in 0..{num_blocks - 1} '
                             f'(num_cascade_blocks={num_cascade_blocks}), or None for all.')
        self._apply_plan(self._plan(output_stride))
        self.frozen_stages = frozen_stages
        self._freeze_stages()
        self.register_load_state_dict_pre_hook(_init_cascade_from_block4)

    def _plan(self, output_stride: int) -> DilationPlan:
        return make_dilation_plan(output_stride, self.stage_blocks, self.multi_grid,
                                  self.num_cascade_blocks, self.contract_dilation)

    def _apply_plan(self, plan: DilationPlan) -> None:
        for name, stride, dilations, post_stride in zip(self.res_layers, plan.strides,
                                                        plan.unit_dilations,
                                                        plan.post_stride_dilations):
            for index, (unit, dilation) in enumerate(zip(getattr(self, name), dilations)):
                if index == 0:
                    _set_unit_geometry(unit, stride, dilation, post_stride)
                else:
                    _set_unit_geometry(unit, 1, dilation, dilation)
        self.current_output_stride = plan.output_stride
        self.strides, self.dilations = plan.strides, plan.block_rates

    def validate_output_stride(self, output_stride: int) -> None:
        self._plan(output_stride)

    def switch_output_stride(self, output_stride: int) -> None:
        self._apply_plan(self._plan(output_stride))

    def train(self, mode: bool = True) -> 'MultiGridResNet':
        super().train(mode)  # mmseg's returns None, which breaks `backbone.eval()(x)`
        return self

    def cascade_init_report(self, state_dict: Dict[str, Tensor],
                            prefix: str = '') -> Dict[str, Tuple[List[str], List[str]]]:
        """For each cascaded block absent from ``state_dict`` (that has ``layer4``): the keys
        block4 provides with the same shape, and those it cannot."""
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
    """Load-state-dict pre-hook: fill cascaded blocks absent from a checkpoint from block4.

    It runs before the children read ``state_dict``, so copied tensors load like any other and
    the rest stay missing, as mmengine's loader reports.
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
