"""The output-stride knob (DeepLabV3 Sec. 3.2, Fig. 3): one integer turned into per-block strides
and per-unit atrous rates, and the eval-time switch that applies it to a built model (Tables 4, 6).
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch.nn as nn

STEM_STRIDE = 4  # stride-2 conv, then stride-2 max pooling
BLOCK_STRIDES = (1, 2, 2, 2)  # block1..block4 (mmseg's layer1..layer4)
CASCADE_BLOCK_STRIDE = 2  # block5..block7 repeat block4 (Sec. 3.2, Table 1)
MAX_CASCADE_BLOCKS = 3
MULTI_GRID_FIRST_BLOCK = 3  # multi-grid applies to block4 and every cascaded block


class OutputStrideSwitchable:
    """The one way to ask whether a module follows an output stride: it runs at
    ``current_output_stride`` and switches to another reachable value, weights untouched
    (Tables 4, 6). ``MultiGridResNet`` and ``DeepLabV3Head`` are built at the OS they are given
    and switch at once. The ``DeepLabV3`` segmentor owns the model's values: it gives its training
    ``output_stride`` to its parts when it builds them, and its ``switch_output_stride`` sets the
    OS it evaluates at (``test_output_stride``), which its parts take in eval mode."""

    current_output_stride: Optional[int] = None

    def validate_output_stride(self, output_stride: int) -> None:
        """Raise ``ValueError`` unless this module can run at ``output_stride``; changes
        nothing."""
        raise NotImplementedError

    def switch_output_stride(self, output_stride: int) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class DilationPlan:
    """Per block: the first unit's stride, the block rate (doubling for every stride removed)
    and each unit's 3x3 rate (multi-grid unit rate x block rate from block4 on).

    ``unit_dilations`` is the rate of each unit's first 3x3 conv: in the first unit of a block,
    the conv that carries (or carried) the block's stride. ``post_stride_dilations`` is, per
    block, the rate of a 3x3 conv after that one inside the first unit (a ``BasicBlock``'s
    second conv): the block rate x the first unit rate. The two differ only with
    ``contract_dilation``.
    """

    output_stride: int
    strides: Tuple[int, ...]
    block_rates: Tuple[int, ...]
    unit_dilations: Tuple[Tuple[int, ...], ...]
    post_stride_dilations: Tuple[int, ...]


def allowed_output_strides(num_cascade_blocks: int = 0) -> Tuple[int, ...]:
    """Powers of two from the stem's 4 to the stride without atrous convolution (32 for block4,
    256 for block7, Table 1). OS 4 is the paper's Cityscapes test setting (Sec. 4.3)."""
    if num_cascade_blocks not in range(MAX_CASCADE_BLOCKS + 1):
        raise ValueError(f'num_cascade_blocks={num_cascade_blocks!r} is not allowed: expected an '
                         f'integer in 0..{MAX_CASCADE_BLOCKS} (cascaded block5..block7).')
    return tuple(STEM_STRIDE * 2**k for k in range(len(BLOCK_STRIDES) + num_cascade_blocks))


def check_output_stride(output_stride: int,
                        num_cascade_blocks: int = 0,
                        name: str = 'output_stride') -> int:
    allowed = allowed_output_strides(num_cascade_blocks)
    if isinstance(output_stride, float) or output_stride not in allowed:
        raise ValueError(f'{name}={output_stride!r} is not allowed: expected a power of two from '
                         f'the stem\'s {STEM_STRIDE} to {allowed[-1]} (no atrous convolution, '
                         f'num_cascade_blocks={num_cascade_blocks}): one of {allowed}.')
    return output_stride


def make_dilation_plan(output_stride: int,
                       units_per_block: Sequence[int] = (3, 4, 6, 3),
                       multi_grid: Optional[Sequence[int]] = None,
                       num_cascade_blocks: int = 0,
                       contract_dilation: bool = False) -> DilationPlan:
    """Strides and atrous rates for an output stride, multi-grid and cascade depth (Sec. 3.2).

    A block whose stride would pass ``output_stride`` gets stride 1 and multiplies the rate by
    it. Multi-grid unit rates multiply the block rate (the paper's definition; mmseg's
    ``multi_grid`` is absolute).

    The rate of the conv whose stride is removed (``contract_dilation``):

    * False (default): the new rate, like the rest of its block, as detectron2's DeepLab
      (``projects/DeepLab`` ``build_resnet_deeplab_backbone``: every res5 unit at
      ``res5_dilation`` x its multi-grid rate) and as the paper's "block4 rates (2, 4, 8)" read
      on this layout, where the strided unit is block4's first.
    * True: the rate it had before, the rest of the block the new one. This is TF-slim's rule
      (``resnet_utils.stack_blocks_dense``: a unit reached at the output stride runs with stride
      1 and the current ``rate``, and only the units after it get ``rate * stride``; the
      official ``resnet_v1_beta`` puts the stride in a block's last unit), torchvision's
      ``replace_stride_with_dilation`` and mmseg's ``contract_dilation`` (``rate // 2``: every
      removed stride is 2). It is the exact a-trous algorithm: the features at one output
      stride are those at the next denser one on every other pixel, so switching the output
      stride (Tables 4, 6) or dilating ImageNet weights changes no function. The paper configs
      use it (``configs/_base_/models``): on the demo it gave 0.8 mIoU more at OS 16 and 1.3 at
      OS 8 (two seeds each, README).

    Example:
        >>> plan = make_dilation_plan(16, (3, 4, 23, 3), multi_grid=(1, 2, 4))
        >>> plan.strides, plan.unit_dilations[3]
        ((1, 2, 2, 1), (2, 4, 8))
        >>> contracted = make_dilation_plan(16, (3, 4, 23, 3), (1, 2, 4), contract_dilation=True)
        >>> contracted.unit_dilations[3], contracted.post_stride_dilations[3]
        ((1, 4, 8), 2)
    """
    check_output_stride(output_stride, num_cascade_blocks)
    num_grid_units = units_per_block[MULTI_GRID_FIRST_BLOCK]
    unit_rates = (1, ) * num_grid_units if multi_grid is None else tuple(multi_grid)
    if len(unit_rates) != num_grid_units or min(unit_rates) < 1:
        raise ValueError(f'multi_grid={multi_grid!r} is not allowed: expected {num_grid_units} '
                         f'positive unit rates, one per unit of block4 (and of each cascaded '
                         f'block), or None.')
    nominal_strides = BLOCK_STRIDES + (CASCADE_BLOCK_STRIDE, ) * num_cascade_blocks
    units = tuple(units_per_block) + (num_grid_units, ) * num_cascade_blocks

    current_stride, rate = STEM_STRIDE, 1
    strides, block_rates, unit_dilations, post_stride = [], [], [], []
    for index, (nominal, num_units) in enumerate(zip(nominal_strides, units)):
        previous_rate = rate
        if current_stride * nominal > output_stride:
            stride, rate = 1, rate * nominal
        else:
            stride, current_stride = nominal, current_stride * nominal
        grid = unit_rates if index >= MULTI_GRID_FIRST_BLOCK else (1, ) * num_units
        first_rate = previous_rate if contract_dilation else rate
        strides.append(stride)
        block_rates.append(rate)
        unit_dilations.append((grid[0] * first_rate, ) + tuple(r * rate for r in grid[1:]))
        post_stride.append(grid[0] * rate)
    return DilationPlan(output_stride, tuple(strides), tuple(block_rates), tuple(unit_dilations),
                        tuple(post_stride))


def set_output_stride(model: nn.Module, output_stride: int) -> None:
    """Evaluate ``model`` at ``output_stride`` (Sec. 4.1): every outermost
    ``OutputStrideSwitchable`` module in it switches, a ``DeepLabV3`` by setting its
    ``test_output_stride``. All are checked before any switches."""
    outermost, inside = [], set()
    for module in model.modules():  # parents before their children
        if isinstance(module, OutputStrideSwitchable) and id(module) not in inside:
            outermost.append(module)
            inside.update(id(sub) for sub in module.modules())
    if not outermost:
        raise ValueError(f'set_output_stride(model, {output_stride!r}): no module of '
                         f'{type(model).__name__} is OutputStrideSwitchable (use MultiGridResNet '
                         f'/ DeepLabV3Head).')
    for module in outermost:
        module.validate_output_stride(output_stride)
    for module in outermost:
        module.switch_output_stride(output_stride)
