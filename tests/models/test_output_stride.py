"""The output-stride arithmetic (PAPER.md "Definitions", paper Sec. 3.2, Fig. 3, Tables 1-3).

Expected values are written out by hand from the paper's definitions, not recomputed with the
function under test.
"""
import pytest
import torch.nn as nn

from deeplabv3_plugin.models.output_stride import (OutputStrideSwitchable, allowed_output_strides,
                                           make_dilation_plan, set_output_stride)

R50 = (3, 4, 6, 3)
R101 = (3, 4, 23, 3)

# (output_stride, num_cascade_blocks) -> (stride of block1..N, block rate of block1..N)
EXPECTED_BLOCKS = {
    (8, 0): ((1, 2, 1, 1), (1, 1, 2, 4)),
    (16, 0): ((1, 2, 2, 1), (1, 1, 1, 2)),
    (32, 0): ((1, 2, 2, 2), (1, 1, 1, 1)),
    (8, 1): ((1, 2, 1, 1, 1), (1, 1, 2, 4, 8)),
    (16, 1): ((1, 2, 2, 1, 1), (1, 1, 1, 2, 4)),
    (32, 1): ((1, 2, 2, 2, 1), (1, 1, 1, 1, 2)),
    (64, 1): ((1, 2, 2, 2, 2), (1, 1, 1, 1, 1)),
    (8, 2): ((1, 2, 1, 1, 1, 1), (1, 1, 2, 4, 8, 16)),
    (16, 2): ((1, 2, 2, 1, 1, 1), (1, 1, 1, 2, 4, 8)),
    (32, 2): ((1, 2, 2, 2, 1, 1), (1, 1, 1, 1, 2, 4)),
    (64, 2): ((1, 2, 2, 2, 2, 1), (1, 1, 1, 1, 1, 2)),
    (128, 2): ((1, 2, 2, 2, 2, 2), (1, 1, 1, 1, 1, 1)),
    (8, 3): ((1, 2, 1, 1, 1, 1, 1), (1, 1, 2, 4, 8, 16, 32)),
    (16, 3): ((1, 2, 2, 1, 1, 1, 1), (1, 1, 1, 2, 4, 8, 16)),
    (32, 3): ((1, 2, 2, 2, 1, 1, 1), (1, 1, 1, 1, 2, 4, 8)),
    (64, 3): ((1, 2, 2, 2, 2, 1, 1), (1, 1, 1, 1, 1, 2, 4)),
    (128, 3): ((1, 2, 2, 2, 2, 2, 1), (1, 1, 1, 1, 1, 1, 2)),
    (256, 3): ((1, 2, 2, 2, 2, 2, 2), (1, 1, 1, 1, 1, 1, 1)),
    (4, 0): ((1, 1, 1, 1), (1, 2, 4, 8)),
}
TABLE3_MULTI_GRIDS = [(1, 1, 1), (1, 2, 1), (1, 2, 3), (1, 2, 4), (2, 2, 2)]


@pytest.mark.parametrize('multi_grid', TABLE3_MULTI_GRIDS)
@pytest.mark.parametrize('output_stride,num_cascade_blocks', sorted(EXPECTED_BLOCKS))
def test_plan_strides_and_unit_rates(output_stride, num_cascade_blocks, multi_grid):
    strides, rates = EXPECTED_BLOCKS[(output_stride, num_cascade_blocks)]
    plan = make_dilation_plan(output_stride, R101, multi_grid, num_cascade_blocks)
    assert plan.output_stride == output_stride
    assert plan.strides == strides
    assert plan.block_rates == rates
    expected_units = [(rates[0], ) * 3, (rates[1], ) * 4, (rates[2], ) * 23]
    expected_units += [tuple(m * rate for m in multi_grid) for rate in rates[3:]]
    assert plan.unit_dilations == tuple(expected_units)
    # The running stride really ends at the output stride.
    total = 4
    for stride in plan.strides:
        total *= stride
    assert total == output_stride


def test_paper_examples():
    # PAPER.md: "OS=16 with MG(1,2,4) gives block4 rates (2,4,8)".
    assert make_dilation_plan(16, R101, (1, 2, 4)).unit_dilations[3] == (2, 4, 8)
    # "for OS=8, block3 gets rate 2 and block4 rate 4".
    plan = make_dilation_plan(8, R50)
    assert plan.unit_dilations[2] == (2, ) * 6 and plan.unit_dilations[3] == (4, 4, 4)
    # "at OS=16 block4..7 use rates 2, 4, 8, 16 (times the multi-grid unit rates)".
    plan = make_dilation_plan(16, R50, (1, 2, 1), num_cascade_blocks=3)
    assert plan.unit_dilations[3:] == ((2, 4, 2), (4, 8, 4), (8, 16, 8), (16, 32, 16))
    # Table 1 "OS=256 means no atrous convolution at all".
    plan = make_dilation_plan(256, R50, (1, 2, 4), num_cascade_blocks=3)
    assert plan.block_rates == (1, ) * 7
    assert plan.unit_dilations[3:] == ((1, 2, 4), ) * 4


def test_contract_dilation_matches_torchvision_replace_stride_with_dilation():
    # torchvision ResNet50(replace_stride_with_dilation=[False, True, True]): the first unit of a
    # dilated layer keeps the previous layer's dilation (TF-slim's stack_blocks_dense rule).
    plan = make_dilation_plan(8, R50, contract_dilation=True)
    assert plan.unit_dilations == ((1, 1, 1), (1, 1, 1, 1), (1, 2, 2, 2, 2, 2), (2, 4, 4))
    # A conv after the strided one inside the first unit (BasicBlock's second) has the new rate.
    assert plan.post_stride_dilations == (1, 1, 2, 4)
    assert make_dilation_plan(8, R50).post_stride_dilations == (1, 1, 2, 4)
    plan = make_dilation_plan(16, R50, contract_dilation=True)
    assert plan.unit_dilations[2:] == ((1, ) * 6, (1, 2, 2))
    assert make_dilation_plan(32, R50, contract_dilation=True).unit_dilations[3] == (1, 1, 1)
    # Multi-grid multiplies the contracted rate of the first unit.
    assert make_dilation_plan(
        16, R50, (1, 2, 4), contract_dilation=True).unit_dilations[3] == (1, 4, 8)
    plan = make_dilation_plan(16, R50, num_cascade_blocks=2, contract_dilation=True)
    assert plan.unit_dilations[3:] == ((1, 2, 2), (2, 4, 4), (4, 8, 8))


def test_plan_for_shallow_depths():
    plan = make_dilation_plan(8, (2, 2, 2, 2), (1, 2), num_cascade_blocks=1)
    assert plan.unit_dilations == ((1, 1), (1, 1), (2, 2), (4, 8), (8, 16))


def test_allowed_output_strides():
    assert [allowed_output_strides(n)[-1] for n in range(4)] == [32, 64, 128, 256]
    assert allowed_output_strides(0) == (4, 8, 16, 32)
    assert allowed_output_strides(3) == (4, 8, 16, 32, 64, 128, 256)


@pytest.mark.parametrize('output_stride,num_cascade_blocks,match', [
    (12, 0, r'output_stride=12 is not allowed: expected a power of two'),
    (0, 0, r'output_stride=0 is not allowed'),
    (-8, 0, r'output_stride=-8 is not allowed'),
    ('16', 0, r"output_stride='16' is not allowed"),
    (16.0, 0, r'output_stride=16.0 is not allowed'),  # --cfg-options ...=16.0 parses a float
    (64, 0, r'output_stride=64 is not allowed: .*one of \(4, 8, 16, 32\)'),
    (2, 0, r'output_stride=2 is not allowed'),
    (512, 3, r'output_stride=512 is not allowed: .* to 256'),
])
def test_bad_output_stride(output_stride, num_cascade_blocks, match):
    with pytest.raises(ValueError, match=match):
        make_dilation_plan(output_stride, R50, num_cascade_blocks=num_cascade_blocks)


@pytest.mark.parametrize('kwargs,match', [
    (dict(multi_grid=(1, 2)), r'multi_grid=\(1, 2\) is not allowed: expected 3 positive'),
    (dict(multi_grid=(1, 2, 4, 8)), r'multi_grid=\(1, 2, 4, 8\) is not allowed: expected 3'),
    (dict(multi_grid=(1, 0, 4)), r'multi_grid=\(1, 0, 4\) is not allowed'),
    (dict(num_cascade_blocks=4), r'num_cascade_blocks=4 is not allowed: expected an integer in '
     r'0..3'),
    (dict(num_cascade_blocks=-1), r'num_cascade_blocks=-1 is not allowed'),
])
def test_bad_plan_arguments(kwargs, match):
    args = dict(output_stride=16, units_per_block=R50)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_dilation_plan(**args)


class _Recorder(nn.Module, OutputStrideSwitchable):

    def __init__(self):
        super().__init__()
        self.calls = []

    def validate_output_stride(self, output_stride: int) -> None:
        if output_stride == 3:
            raise ValueError('output_stride=3 is not allowed')

    def switch_output_stride(self, output_stride: int) -> None:
        self.calls.append(output_stride)


def test_set_output_stride_reaches_every_implementing_module():
    model = nn.Sequential(_Recorder(), nn.Sequential(nn.Conv2d(1, 1, 1), _Recorder()))
    set_output_stride(model, 8)
    assert model[0].calls == [8] and model[1][1].calls == [8]
    set_output_stride(model[1][1], 16)  # the module itself counts
    assert model[1][1].calls == [8, 16] and model[0].calls == [8]


def test_set_output_stride_checks_every_module_before_switching_any():
    model = nn.Sequential(_Recorder(), _Recorder())
    with pytest.raises(ValueError, match='output_stride=3 is not allowed'):
        set_output_stride(model, 3)
    assert model[0].calls == [] and model[1].calls == []


def test_set_output_stride_reaches_the_outermost_implementers_only():
    """A segmentor inside a wrapper takes the value as its own (its test OS), and its parts
    follow it rather than being switched behind its back."""
    outer = _Recorder()
    outer.inner = _Recorder()
    set_output_stride(nn.Sequential(outer), 8)
    assert outer.calls == [8] and outer.inner.calls == []


def test_set_output_stride_without_implementers_raises():
    with pytest.raises(ValueError, match=r'no module of Sequential is OutputStrideSwitchable'):
        set_output_stride(nn.Sequential(nn.Conv2d(1, 1, 1)), 8)
