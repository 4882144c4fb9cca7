"""The output-stride knob: one integer turned into per-block strides and per-unit atrous rates.

DeepLabV3 (Chen et al. 2017, Sec. 3.2 and Fig. 3) controls the density of the final feature map
with a single number, the *output stride* (OS): input resolution / final feature resolution.
A ResNet reduces the resolution by 4 in its stem and then by the stride of each block
(block1..4 = mmseg's ``layer1..4``: ``(1, 2, 2, 2)``, so 4, 8, 16, 32). The cascaded "going
deeper" model appends copies of block4 (block5..7), each with stride 2, so that without any
atrous convolution block7 ends at OS 256 (Table 1).

To reach a smaller OS the strides that would go beyond it are removed and replaced by atrous
convolution, the *block rate* doubling for every stride removed: at OS 16 block4 gets rate 2,
at OS 8 block3 gets rate 2 and block4 rate 4, and with a cascade block5, 6, 7 continue with
4, 8, 16 at OS 16. Multi-grid (Sec. 3.2, Table 3) gives the units of block4 (and of every
cascaded block) *unit rates* ``(r1, r2, r3)``: a unit's 3x3 conv uses ``unit rate x block
rate``, so OS 16 with MG(1, 2, 4) gives block4 rates (2, 4, 8). This is the paper's definition;
mmseg's ``multi_grid`` argument instead treats the values as absolute rates.

This module is the only place where that arithmetic lives. :func:`make_dilation_plan` is a pure
function (tests call it directly); :class:`~deeplabv3_plugin.models.backbones.MultiGridResNet`
applies its result to the convolutions, and :func:`set_output_stride` switches every
OS-dependent module of a built model (backbone and head) without touching a weight, which is
how a model trained at OS 16 is evaluated at OS 8 (Table 4 and Table 6).
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch.nn as nn

#: Resolution reduction of the ResNet stem (stride-2 conv, then stride-2 max pooling).
STEM_STRIDE = 4
#: Nominal stride of block1..block4 (the stride of each block's first unit).
BLOCK_STRIDES = (1, 2, 2, 2)
#: Nominal stride of every cascaded block (block5..block7), as for block4.
CASCADE_BLOCK_STRIDE = 2
#: The paper cascades at most three copies of block4 (block5, block6, block7; Table 2).
MAX_CASCADE_BLOCKS = 3
#: Index of block4 among the blocks: multi-grid applies from here on.
MULTI_GRID_FIRST_BLOCK = 3


@dataclass(frozen=True)
class DilationPlan:
    """Strides and atrous rates of every block and unit of a ResNet at one output stride.

    Attributes:
        output_stride (int): The output stride this plan realises.
        strides (tuple[int]): Stride of each block's first unit (block1..4, then block5..7).
            Every other unit has stride 1.
        block_rates (tuple[int]): The block rate of each block: 1 where the block keeps its
            stride, doubling for every stride removed before or in the block.
        unit_dilations (tuple[tuple[int]]): For each block, the atrous rate of each unit's 3x3
            conv(s): ``multi_grid[j] * block_rate`` in block4 and the cascaded blocks, the block
            rate elsewhere (first unit contracted to ``rate // 2`` with ``contract_dilation``).
    """

    output_stride: int
    strides: Tuple[int, ...]
    block_rates: Tuple[int, ...]
    unit_dilations: Tuple[Tuple[int, ...], ...]


def max_output_stride(num_cascade_blocks: int = 0) -> int:
    """The output stride of the network when no stride is replaced by atrous convolution.

    Args:
        num_cascade_blocks (int): Number of cascaded copies of block4 (0..3). Default: 0.

    Returns:
        int: ``32 * 2 ** num_cascade_blocks`` (32 for block4, 256 for block7, Table 1).
    """
    num_cascade_blocks = check_num_cascade_blocks(num_cascade_blocks)
    stride = STEM_STRIDE
    for block_stride in BLOCK_STRIDES + (CASCADE_BLOCK_STRIDE, ) * num_cascade_blocks:
        stride *= block_stride
    return stride


def allowed_output_strides(num_cascade_blocks: int = 0) -> Tuple[int, ...]:
    """Every output stride reachable by removing strides: powers of two from 4 to the maximum.

    OS 4 (the stem's own stride) is the densest possible map; the paper uses it at test time on
    Cityscapes (Sec. 4.3). The maximum is :func:`max_output_stride`.

    Args:
        num_cascade_blocks (int): Number of cascaded copies of block4 (0..3). Default: 0.

    Returns:
        tuple[int]: ``(4, 8, ..., 32 * 2 ** num_cascade_blocks)``.
    """
    top = max_output_stride(num_cascade_blocks)
    values = []
    stride = STEM_STRIDE
    while stride <= top:
        values.append(stride)
        stride *= 2
    return tuple(values)


def check_num_cascade_blocks(num_cascade_blocks: int) -> int:
    """Validate the number of cascaded blocks.

    Args:
        num_cascade_blocks (int): Number of copies of block4 appended after it.

    Returns:
        int: The value, unchanged.

    Raises:
        ValueError: If it is not an integer in ``0..3``.
    """
    if (isinstance(num_cascade_blocks, bool) or not isinstance(num_cascade_blocks, int)
            or not 0 <= num_cascade_blocks <= MAX_CASCADE_BLOCKS):
        raise ValueError(
            f'num_cascade_blocks={num_cascade_blocks!r} is not allowed: expected an integer in '
            f'0..{MAX_CASCADE_BLOCKS} (0: block4 only, 1..3: cascaded block5..block7).')
    return num_cascade_blocks


def check_output_stride(output_stride: int,
                        num_cascade_blocks: int = 0,
                        name: str = 'output_stride') -> int:
    """Validate an output stride against the network it is applied to.

    Args:
        output_stride (int): The requested output stride.
        num_cascade_blocks (int): Number of cascaded blocks of the network, which sets the
            largest reachable OS. Default: 0.
        name (str): Argument name used in the error message. Default: ``'output_stride'``.

    Returns:
        int: The value, unchanged.

    Raises:
        ValueError: If the value is not a power of two, or not in
            :func:`allowed_output_strides` for this cascade depth.
    """
    allowed = allowed_output_strides(num_cascade_blocks)
    if (isinstance(output_stride, bool) or not isinstance(output_stride, int)
            or output_stride < 1 or output_stride & (output_stride - 1)):
        raise ValueError(f'{name}={output_stride!r} is not allowed: expected a power of two, '
                         f'one of {allowed} (num_cascade_blocks={num_cascade_blocks}).')
    if output_stride not in allowed:
        raise ValueError(
            f'{name}={output_stride} is not reachable with num_cascade_blocks='
            f'{num_cascade_blocks}: the stem alone has stride {STEM_STRIDE} and the network '
            f'without atrous convolution has stride {allowed[-1]}; allowed: {allowed}.')
    return output_stride


def check_multi_grid(multi_grid: Optional[Sequence[int]], num_units: int) -> Tuple[int, ...]:
    """Validate multi-grid unit rates (Sec. 3.2): one positive integer per unit of block4.

    Args:
        multi_grid (Sequence[int] | None): Unit rates, or None for all ones.
        num_units (int): Number of units in block4 (3 for ResNet-50/101, 2 for ResNet-18).

    Returns:
        tuple[int]: The unit rates.

    Raises:
        ValueError: If the length differs from ``num_units`` or a rate is not a positive int.
    """
    if multi_grid is None:
        return (1, ) * num_units
    if isinstance(multi_grid, (str, bytes)) or not isinstance(multi_grid, Sequence):
        raise ValueError(f'multi_grid={multi_grid!r} is not allowed: expected a tuple of '
                         f'{num_units} unit rates (one per unit of block4), or None.')
    rates = tuple(multi_grid)
    if len(rates) != num_units:
        raise ValueError(
            f'multi_grid={rates} has {len(rates)} unit rates, expected {num_units}: one per '
            f'unit of block4 (and of each cascaded block) for this depth.')
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ValueError(f'multi_grid={rates} is not allowed: every unit rate must be a '
                             f'positive integer, got {rate!r}.')
    return rates


def make_dilation_plan(output_stride: int,
                       units_per_block: Sequence[int] = (3, 4, 6, 3),
                       multi_grid: Optional[Sequence[int]] = None,
                       num_cascade_blocks: int = 0,
                       contract_dilation: bool = False) -> DilationPlan:
    """Turn the output stride, multi-grid and cascade depth into strides and atrous rates.

    Walking block1..block4 and then the cascaded blocks, the running stride (4 after the stem)
    is multiplied by each block's nominal stride as long as it stays within ``output_stride``.
    A block whose stride would exceed it gets stride 1 instead and its block rate is multiplied
    by the removed stride, so the rates double from block to block (Sec. 3.2, Fig. 3b). This is
    TF-slim's ``stack_blocks_dense`` rule, with the stride in the first unit of a block as in
    torchvision and mmseg.

    Every unit of a block uses the block rate (the paper does not contract). With
    ``contract_dilation`` the first unit of a dilated block uses ``rate // 2``, the rate of the
    resolution its strided conv originally read: torchvision's ``replace_stride_with_dilation``
    and mmseg's ``contract_dilation`` do this, giving block3 (1, 2, 2, ...) and block4 (2, 4, 4)
    at OS 8. Multi-grid unit rates multiply the (possibly contracted) block rate in block4 and
    in every cascaded block.

    Args:
        output_stride (int): Target output stride, a power of two in
            :func:`allowed_output_strides`.
        units_per_block (Sequence[int]): Number of units in block1..block4, e.g.
            ``(3, 4, 6, 3)`` for ResNet-50, ``(3, 4, 23, 3)`` for ResNet-101. Cascaded blocks have
            as many units as block4. Default: ``(3, 4, 6, 3)``.
        multi_grid (Sequence[int] | None): Unit rates of block4 and of every cascaded block,
            one per unit of block4; None means all ones. Default: None.
        num_cascade_blocks (int): Number of cascaded copies of block4, 0..3. Default: 0.
        contract_dilation (bool): Halve the rate of the first unit of each dilated block.
            Default: False.

    Returns:
        DilationPlan: Strides, block rates and per-unit rates of every block.

    Raises:
        ValueError: On an unreachable output stride, a multi-grid of the wrong length, a
            cascade depth outside 0..3, or a malformed ``units_per_block``.

    Example:
        >>> plan = make_dilation_plan(16, (3, 4, 23, 3), multi_grid=(1, 2, 4))
        >>> plan.strides, plan.unit_dilations[3]
        ((1, 2, 2, 1), (2, 4, 8))
    """
    units = tuple(units_per_block)
    if len(units) != len(BLOCK_STRIDES) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in units):
        raise ValueError(f'units_per_block={units_per_block!r} is not allowed: expected '
                         f'{len(BLOCK_STRIDES)} positive integers (units of block1..block4).')
    num_cascade_blocks = check_num_cascade_blocks(num_cascade_blocks)
    output_stride = check_output_stride(output_stride, num_cascade_blocks)
    unit_rates = check_multi_grid(multi_grid, units[MULTI_GRID_FIRST_BLOCK])

    nominal_strides = BLOCK_STRIDES + (CASCADE_BLOCK_STRIDE, ) * num_cascade_blocks
    units += (units[MULTI_GRID_FIRST_BLOCK], ) * num_cascade_blocks

    current_stride, rate = STEM_STRIDE, 1
    strides, block_rates, unit_dilations = [], [], []
    for index, (nominal, num_units) in enumerate(zip(nominal_strides, units)):
        if current_stride * nominal > output_stride:
            stride, rate = 1, rate * nominal
        else:
            stride, current_stride = nominal, current_stride * nominal
        grid = unit_rates if index >= MULTI_GRID_FIRST_BLOCK else (1, ) * num_units
        first_rate = rate // 2 if (contract_dilation and rate > 1) else rate
        dilations = (grid[0] * first_rate, ) + tuple(r * rate for r in grid[1:])
        strides.append(stride)
        block_rates.append(rate)
        unit_dilations.append(dilations)
    return DilationPlan(
        output_stride=output_stride,
        strides=tuple(strides),
        block_rates=tuple(block_rates),
        unit_dilations=tuple(unit_dilations))


def set_output_stride(model: nn.Module, output_stride: int) -> None:
    """Evaluate ``model`` at ``output_stride``: switch its output-stride-dependent modules.

    The backbone changes conv strides, dilations and paddings, the head rescales its atrous
    rates; no parameter or buffer changes, so a checkpoint trained at OS 16 is evaluated at OS 8
    by switching the built model (Sec. 4.1, "train OS 16, evaluate OS 8"). Each module validates
    the value against its own structure.

    A segmentor with a training and a test output stride (``DeepLabV3``) gets the value as its
    ``test_output_stride``: it applies in eval mode, before or after ``model.eval()``, and
    ``model.train()`` returns to the training output stride. Its training OS (``output_stride``,
    ``DeepLabV3.set_output_stride``) is never changed here. Any other module defining
    ``set_output_stride`` (a bare backbone or head) is switched at once.

    Args:
        model (nn.Module): Any model, e.g. a ``DeepLabV3`` segmentor or a bare backbone.
        output_stride (int): The output stride to evaluate at.

    Raises:
        ValueError: If no module of ``model`` defines ``set_output_stride``, or a module rejects
            the value.
    """
    handled, switched = set(), False
    for module in model.modules():  # pre-order: a segmentor comes before its submodules
        if id(module) in handled:
            continue
        # the class's property, not hasattr: wrappers forward unknown attributes to their module
        if isinstance(getattr(type(module), 'test_output_stride', None), property):
            module.test_output_stride = output_stride
            handled.update(id(sub) for sub in module.modules())
            switched = True
        elif callable(getattr(module, 'set_output_stride', None)):
            module.set_output_stride(output_stride)
            switched = True
    if not switched:
        raise ValueError(
            f'set_output_stride(model, {output_stride!r}): no module of '
            f'{type(model).__name__} defines set_output_stride(output_stride), so its output '
            f'stride cannot be switched (use MultiGridResNet / DeepLabV3Head).')
