"""MultiGridResNet: every conv pinned, checkpoint layouts, parity with mmseg and torchvision."""
import logging
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import load_state_dict
from mmseg.models.backbones import ResNet, ResNetV1c
from mmseg.registry import MODELS

from deeplabv3_plugin.models.backbones import CascadedBlock, MultiGridResNet, Subsample
from deeplabv3_plugin.models.output_stride import set_output_stride

TINY = dict(base_channels=4, stem_channels=8)
UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

# (output_stride, num_cascade_blocks) -> block rate of block1..N, written out from the paper's
# definition (block4 rate 2 at OS 16; block3 2 and block4 4 at OS 8; cascades keep doubling).
BLOCK_RATES = {
    (8, 0): (1, 1, 2, 4),
    (16, 0): (1, 1, 1, 2),
    (32, 0): (1, 1, 1, 1),
    (8, 1): (1, 1, 2, 4, 8),
    (16, 1): (1, 1, 1, 2, 4),
    (32, 1): (1, 1, 1, 1, 2),
    (8, 2): (1, 1, 2, 4, 8, 16),
    (16, 2): (1, 1, 1, 2, 4, 8),
    (32, 2): (1, 1, 1, 1, 2, 4),
    (8, 3): (1, 1, 2, 4, 8, 16, 32),
    (16, 3): (1, 1, 1, 2, 4, 8, 16),
    (32, 3): (1, 1, 1, 1, 2, 4, 8),
    (256, 3): (1, 1, 1, 1, 1, 1, 1),
}
TABLE3_MULTI_GRIDS = [(1, 1, 1), (1, 2, 1), (1, 2, 3), (1, 2, 4), (2, 2, 2)]


def build(**kwargs) -> MultiGridResNet:
    cfg = dict(type='MultiGridResNet', depth=50, **TINY)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def conv_geometry(backbone: nn.Module):
    """{block name: [(stride, dilation, padding) of every 3x3 conv, in unit order]}."""
    table = {}
    for name in backbone.res_layers:
        table[name] = [(m.stride[0], m.dilation[0], m.padding[0])
                       for m in getattr(backbone, name).modules()
                       if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    return table


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so a swapped or missing tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith('num_batches_tracked'):
                continue
            if name.endswith('running_var'):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() > 1:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / tensor[0].numel()**.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return module


@pytest.mark.parametrize('multi_grid', TABLE3_MULTI_GRIDS)
@pytest.mark.parametrize('output_stride,num_cascade_blocks', sorted(BLOCK_RATES))
def test_every_3x3_conv_stride_and_rate(output_stride, num_cascade_blocks, multi_grid):
    backbone = build(
        output_stride=output_stride, multi_grid=multi_grid,
        num_cascade_blocks=num_cascade_blocks)
    rates = BLOCK_RATES[(output_stride, num_cascade_blocks)]
    stride_left = output_stride // 4  # after the stem
    geometry = conv_geometry(backbone)
    assert list(geometry) == [f'layer{i + 1}' for i in range(4 + num_cascade_blocks)]
    for index, (name, convs) in enumerate(geometry.items()):
        nominal = 1 if index == 0 else 2
        stride = nominal if rates[index] == 1 and stride_left >= nominal else 1
        stride_left //= stride
        units = UNITS[50][index] if index < 4 else 3
        grid = multi_grid if index >= 3 else (1, ) * units
        expected = [(stride if j == 0 else 1, rates[index] * grid[j], rates[index] * grid[j])
                    for j in range(units)]
        assert convs == expected, name
    assert backbone.current_output_stride == output_stride


def test_paper_examples_on_the_built_backbone():
    backbone = build(depth=101, output_stride=16, multi_grid=(1, 2, 4))
    assert [d for _, d, _ in conv_geometry(backbone)['layer4']] == [2, 4, 8]
    assert len(conv_geometry(backbone)['layer3']) == 23
    cascade = build(output_stride=16, num_cascade_blocks=3)
    rates = [[d for _, d, _ in convs] for convs in conv_geometry(cascade).values()]
    assert rates[3:] == [[2, 2, 2], [4, 4, 4], [8, 8, 8], [16, 16, 16]]


@pytest.mark.parametrize('output_stride,num_cascade_blocks,size', [
    (8, 0, 32), (8, 0, 33), (16, 0, 32), (16, 0, 33), (32, 0, 33), (8, 3, 33), (64, 3, 33),
    (256, 3, 32), (256, 3, 33)
])
def test_output_feature_sizes(output_stride, num_cascade_blocks, size):
    backbone = build(output_stride=output_stride, num_cascade_blocks=num_cascade_blocks).eval()
    with torch.no_grad():
        outs = backbone(torch.rand(1, 3, size, size))
    assert len(outs) == 4 + num_cascade_blocks
    nominal_strides = [4, 8, 16, 32, 64, 128, 256]
    widths = [16, 32, 64, 128, 128, 128, 128]  # base 4 * 2**i * expansion 4, cascades as block4
    for out, nominal, width in zip(outs, nominal_strides, widths):
        expected = size
        for _ in range(min(nominal, output_stride).bit_length() - 1):
            expected = (expected + 1) // 2  # every stride-2 step rounds up (same padding)
        assert out.shape == (1, width, expected, expected)


def test_out_indices():
    backbone = build(num_cascade_blocks=2, out_indices=(3, 5)).eval()
    outs = backbone(torch.rand(1, 3, 32, 32))
    assert len(outs) == 2 and all(o.shape[1] == 128 for o in outs)


@pytest.mark.parametrize('output_stride,strides,dilations', [
    (8, (1, 2, 1, 1), (1, 1, 2, 4)),
    (16, (1, 2, 2, 1), (1, 1, 1, 2)),
    (32, (1, 2, 2, 2), (1, 1, 1, 1)),
])
@pytest.mark.parametrize('stem', ['deep', 'torchvision'])
def test_same_outputs_as_mmseg_resnet_with_contraction(output_stride, strides, dilations, stem):
    """With contract_dilation and no multi-grid this is mmseg's dilated ResNet(V1c)."""
    reference_type = ResNetV1c if stem == 'deep' else ResNet
    reference = reference_type(
        depth=50, strides=strides, dilations=dilations, contract_dilation=True, **TINY)
    randomize_(reference).eval()
    ours = build(stem=stem, output_stride=output_stride, contract_dilation=True).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(1, 3, 33, 33)
    with torch.no_grad():
        for mine, theirs in zip(ours(x), reference(x)):
            torch.testing.assert_close(mine, theirs)


def test_same_outputs_as_torchvision_dilated_resnet():
    """torchvision's ResNet-50 with replace_stride_with_dilation=[False, True, True] (OS 8)."""
    from helpers.torchvision_reference import ResNet as TorchvisionResNet

    reference = randomize_(
        TorchvisionResNet(50, base_channels=8, replace_stride_with_dilation=(False, True, True)))
    reference.eval()
    ours = build(stem='torchvision', base_channels=8, stem_channels=8, output_stride=8,
                 contract_dilation=True).eval()
    state = reference.state_dict()
    incompatible = ours.load_state_dict(state, strict=False)
    assert incompatible.missing_keys == []
    assert sorted(incompatible.unexpected_keys) == ['fc.bias', 'fc.weight']
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        expected = reference.layer4(
            reference.layer3(
                reference.layer2(
                    reference.layer1(
                        reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        torch.testing.assert_close(ours(x)[-1], expected)


def torchvision_resnet_keys(depth: int, base: int) -> 'OrderedDict[str, tuple]':
    """torchvision.models.resnet's state_dict keys and shapes, written from its definition."""
    bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    keys = OrderedDict()

    def add_bn(prefix, channels):
        for suffix in bn:
            keys[f'{prefix}.{suffix}'] = () if suffix == 'num_batches_tracked' else (channels, )

    keys['conv1.weight'] = (base, 3, 7, 7)
    add_bn('bn1', base)
    inplanes = base
    for stage, units in enumerate(UNITS[depth]):
        planes = base * 2**stage
        for unit in range(units):
            prefix = f'layer{stage + 1}.{unit}'
            keys[f'{prefix}.conv1.weight'] = (planes, inplanes, 1, 1)
            add_bn(f'{prefix}.bn1', planes)
            keys[f'{prefix}.conv2.weight'] = (planes, planes, 3, 3)
            add_bn(f'{prefix}.bn2', planes)
            keys[f'{prefix}.conv3.weight'] = (planes * 4, planes, 1, 1)
            add_bn(f'{prefix}.bn3', planes * 4)
            if unit == 0:
                keys[f'{prefix}.downsample.0.weight'] = (planes * 4, inplanes, 1, 1)
                add_bn(f'{prefix}.downsample.1', planes * 4)
            inplanes = planes * 4
    keys['fc.weight'] = (1000, inplanes)
    keys['fc.bias'] = (1000, )
    return keys


def shapes(state_dict):
    return OrderedDict((k, tuple(v.shape)) for k, v in state_dict.items())


@pytest.mark.parametrize('depth', [50, 101])
@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_torchvision_checkpoint_layout(depth, output_stride):
    """`torchvision://resnet50/101` keys load into blocks 1..4 with nothing missing."""
    expected = torchvision_resnet_keys(depth, base=8)
    ours = build(depth=depth, stem='torchvision', base_channels=8, stem_channels=8,
                 output_stride=output_stride, num_cascade_blocks=1)
    blocks_1_to_4 = OrderedDict(
        (k, v) for k, v in shapes(ours.state_dict()).items() if not k.startswith('layer5.'))
    without_fc = OrderedDict((k, v) for k, v in expected.items() if not k.startswith('fc.'))
    assert blocks_1_to_4 == without_fc
    checkpoint = {k: torch.zeros(v) for k, v in expected.items()}
    incompatible = ours.load_state_dict(checkpoint, strict=False)
    assert sorted(incompatible.unexpected_keys) == ['fc.bias', 'fc.weight']
    # Only unit 1's conv1 of the cascaded block cannot come from block4 (cascade_init).
    assert incompatible.missing_keys == ['layer5.0.conv1.weight']


@pytest.mark.parametrize('depth', [50, 101])
def test_mmseg_v1c_checkpoint_layout(depth):
    """`open-mmlab://resnet50_v1c` (mmseg ResNetV1c) keys are exactly those of the deep stem."""
    reference = ResNetV1c(depth=depth, **TINY)
    ours = build(depth=depth, stem='deep', output_stride=8)
    assert shapes(ours.state_dict()) == shapes(reference.state_dict())


def test_switching_output_stride_keeps_every_tensor():
    backbone = randomize_(build(output_stride=16, multi_grid=(1, 2, 4), num_cascade_blocks=1))
    backbone.eval()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        at_16 = backbone(x)[-1]
        set_output_stride(backbone, 8)
        at_8 = backbone(x)[-1]
        assert conv_geometry(backbone)['layer4'] == [(1, 4, 4), (1, 8, 8), (1, 16, 16)]
        assert at_16.shape[2:] == (2, 2) and at_8.shape[2:] == (4, 4)
        backbone.switch_output_stride(16)
        torch.testing.assert_close(backbone(x)[-1], at_16)
    after = backbone.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_cascaded_block_structure_is_the_same_at_every_output_stride():
    layouts = {os: shapes(build(output_stride=os, num_cascade_blocks=3).state_dict())
               for os in (8, 16, 256)}
    assert layouts[8] == layouts[16] == layouts[256]
    backbone = build(output_stride=256, num_cascade_blocks=3)
    for name in ('layer5', 'layer6', 'layer7'):
        block = getattr(backbone, name)
        assert isinstance(block, CascadedBlock) and len(block) == 3
        assert isinstance(block[0].downsample, Subsample) and block[0].downsample.stride == 2
        assert block[0].conv1.in_channels == block[0].conv3.out_channels == 128
        assert all(unit.downsample is None for unit in list(block)[1:])
    assert not any('layer5.0.downsample' in k for k in backbone.state_dict())
    backbone.switch_output_stride(16)
    assert backbone.layer5[0].downsample.stride == 1


def test_subsample_matches_the_strided_conv_grid():
    x = torch.arange(49.).reshape(1, 1, 7, 7)
    out = Subsample(2)(x)
    assert out.shape == (1, 1, 4, 4) and out[0, 0, 1, 1] == x[0, 0, 2, 2]
    assert Subsample(1)(x) is x


@pytest.mark.parametrize('depth,multi_grid', [(18, (1, 2)), (34, (1, 2, 4))])
def test_basic_block_depths_dilate_both_3x3_convs(depth, multi_grid):
    backbone = build(depth=depth, output_stride=8, multi_grid=multi_grid, num_cascade_blocks=1)
    geometry = conv_geometry(backbone)
    # Every unit has two 3x3 convs; the stride sits on the first, the rate on both.
    layer4 = geometry['layer4']
    expected = []
    for j, m in enumerate(multi_grid):
        expected += [(1, 4 * m, 4 * m), (1, 4 * m, 4 * m)]
    assert layer4 == expected
    assert geometry['layer5'][0] == (1, 8 * multi_grid[0], 8 * multi_grid[0])
    assert geometry['layer2'][0][0] == 2
    outs = backbone.eval()(torch.rand(1, 3, 33, 33))
    assert outs[-1].shape == (1, 32, 5, 5)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def _features_at(backbone: MultiGridResNet, output_stride: int, x: torch.Tensor):
    backbone.switch_output_stride(output_stride)
    with torch.no_grad():
        return backbone(x)


@pytest.mark.parametrize('depth,multi_grid,num_cascade_blocks', [
    (18, (1, 2), 0),  # BasicBlock: the stride sits on the first of two 3x3 convs
    (50, (1, 2, 4), 1),  # Bottleneck, multi-grid, a cascaded block with a Subsample shortcut
])
@pytest.mark.parametrize('dense,coarse', [(8, 16), (16, 32)])
def test_contracted_rates_make_the_output_stride_switch_exact(depth, multi_grid,
                                                              num_cascade_blocks, dense, coarse):
    """contract_dilation=True (TF-slim's stack_blocks_dense rule): the features at the dense
    output stride, taken on every (coarse / dense)-th pixel, are the coarse ones, at every
    block. (16, 32) is an ImageNet network dilated to OS 16."""
    backbone = randomize_(build(depth=depth, multi_grid=multi_grid, contract_dilation=True,
                                num_cascade_blocks=num_cascade_blocks)).eval()
    x = torch.rand(1, 3, 45, 45)
    dense_features = _features_at(backbone, dense, x)
    coarse_features = _features_at(backbone, coarse, x)
    assert len(dense_features) == 4 + num_cascade_blocks
    for index, (at_dense, at_coarse) in enumerate(zip(dense_features, coarse_features)):
        step = 1 if at_dense.shape == at_coarse.shape else 2
        subsampled = at_dense[:, :, ::step, ::step]
        assert subsampled.shape == at_coarse.shape, f'block{index + 1}'
        assert _relative_error(subsampled, at_coarse) < 1e-5, f'block{index + 1}'


def test_block_rates_do_not_make_the_output_stride_switch_exact():
    """contract_dilation=False (the new rate on the unit whose stride is removed) computes
    another function at each output stride: about 6e-4 relative L2 at block3 here, 5e-5 at
    block4, against 2e-8 contracted."""
    backbone = randomize_(build(depth=50, multi_grid=(1, 2, 4))).eval()
    x = torch.rand(1, 3, 45, 45)
    at_8, at_16 = _features_at(backbone, 8, x), _features_at(backbone, 16, x)
    for index in (2, 3):
        assert _relative_error(at_8[index][:, :, ::2, ::2], at_16[index]) > 1e-5


def test_contracted_basic_block_dilates_its_second_conv_at_the_new_rate():
    """In the first unit only the conv that carried the stride keeps the previous rate."""
    backbone = build(depth=18, output_stride=8, multi_grid=(1, 2), contract_dilation=True)
    geometry = conv_geometry(backbone)
    assert geometry['layer3'] == [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert geometry['layer4'] == [(1, 2, 2), (1, 4, 4), (1, 8, 8), (1, 8, 8)]


def _captured_log():
    records = []

    class _Handler(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    handler = _Handler()
    MMLogger.get_current_instance().addHandler(handler)
    return records, handler


@pytest.mark.parametrize('cascade_init', ['block4', 'random'])
def test_cascade_init_from_an_imagenet_checkpoint(tmp_path, cascade_init):
    imagenet = randomize_(ResNetV1c(depth=50, **TINY))
    checkpoint = tmp_path / 'resnet50_v1c.pth'
    torch.save(imagenet.state_dict(), checkpoint)
    backbone = build(num_cascade_blocks=2, cascade_init=cascade_init,
                     init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    untouched = backbone.layer5[0].conv1.weight.clone()
    records, handler = _captured_log()
    try:
        backbone.init_weights()
    finally:
        MMLogger.get_current_instance().removeHandler(handler)
    state = backbone.state_dict()
    for key, value in imagenet.state_dict().items():
        assert torch.equal(state[key], value), key
    messages = [m for m in records if m.startswith('MultiGridResNet: the checkpoint has no')]
    assert len(messages) == 2
    for name in ('layer5', 'layer6'):
        copied = [k for k in state if k.startswith(f'{name}.')
                  and torch.equal(state[k], state['layer4.' + k[len(name) + 1:]])
                  and not k.endswith('num_batches_tracked')]
        if cascade_init == 'block4':
            # everything but unit 1's conv1 (1024 -> 2048 input width) comes from block4
            assert sorted(k[len(name) + 1:] for k in state if k.startswith(f'{name}.')
                          and k not in copied and not k.endswith('num_batches_tracked')) == [
                              '0.conv1.weight'
                          ]
        else:
            assert copied == []
    assert torch.equal(backbone.layer5[0].conv1.weight, untouched)
    if cascade_init == 'block4':
        assert re.search(r"no layer5; cascade_init='block4' copied \d+ tensors from layer4; not "
                         r'copied .*: 0.conv1.weight\.', messages[0])
    else:
        assert "no layer5; cascade_init='random' keeps its default initialisation" in messages[0]


def test_checkpoint_with_cascaded_blocks_is_loaded_as_is():
    trained = randomize_(build(num_cascade_blocks=1))
    fresh = build(num_cascade_blocks=1)
    load_state_dict(fresh, trained.state_dict(), strict=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_norm_eval_and_frozen_stages():
    backbone = build(num_cascade_blocks=1, frozen_stages=5, norm_eval=True)
    backbone.train()
    assert all(not m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(not p.requires_grad for p in backbone.parameters())
    partly = build(num_cascade_blocks=1, frozen_stages=2).train()
    assert not any(p.requires_grad for p in partly.stem.parameters())
    assert not any(p.requires_grad for p in partly.layer2.parameters())
    assert all(p.requires_grad for p in partly.layer3.parameters())
    assert all(p.requires_grad for p in partly.layer5.parameters())
    assert not partly.layer1[0].bn1.training and partly.layer5[0].bn1.training


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = randomize_(build(output_stride=16, num_cascade_blocks=1))
    checkpointed = build(output_stride=16, num_cascade_blocks=1, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        model.zero_grad()
        sum(out.square().mean() for out in model(x)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


@pytest.mark.parametrize('kwargs,match', [
    (dict(stem='v1d'), r"stem='v1d' is not allowed: expected one of \('deep', 'torchvision'\)"),
    (dict(cascade_init='zeros'), r"cascade_init='zeros' is not allowed"),
    (dict(num_cascade_blocks=4), r'num_cascade_blocks=4 is not allowed: expected an integer in '
     r'0..3'),
    (dict(output_stride=12), r'output_stride=12 is not allowed: expected a power of two'),
    (dict(output_stride=64), r'output_stride=64 is not allowed: .*num_cascade_blocks=0'),
    (dict(output_stride=512, num_cascade_blocks=3), r'output_stride=512 is not allowed'),
    (dict(multi_grid=(1, 2)), r'multi_grid=\(1, 2\) is not allowed: expected 3 positive'),
    (dict(depth=18, multi_grid=(1, 2, 4)), r'multi_grid=\(1, 2, 4\) .*expected 2 positive'),
    (dict(out_indices=(4, )), r'out_indices=\(4,\) is not allowed: .* in 0..3'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_set_output_stride_rejects_unreachable_values():
    backbone = build(num_cascade_blocks=1)
    with pytest.raises(ValueError, match=r'output_stride=128 is not allowed'):
        backbone.switch_output_stride(128)
    assert backbone.current_output_stride == 16  # unchanged
