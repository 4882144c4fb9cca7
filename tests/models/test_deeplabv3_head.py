"""Tests of ``DeepLabV3Head`` (the paper's ASPP with image-level features) and its modules.

Heads are built the way configs build them (``MODELS.build``) on tiny CPU tensors.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import deeplabv3_plugin  # noqa: F401  (registers DeepLabV3Head)
from deeplabv3_plugin.models.decode_heads import (DeepLabV3Head, downsample_labels,
                                                  pooled_batch_norm_uses_running_stats,
                                                  scale_atrous_rates, torchvision_key_map)

IN_CHANNELS = 16
CHANNELS = 8
NUM_CLASSES = 5


def _head_cfg(**kwargs):
    cfg = dict(
        type='DeepLabV3Head',
        in_channels=IN_CHANNELS,
        channels=CHANNELS,
        num_classes=NUM_CLASSES,
        atrous_rates=(6, 12, 18))
    cfg.update(kwargs)
    return cfg


def _build_head(**kwargs):
    return MODELS.build(_head_cfg(**kwargs))


def _samples(labels):
    samples = []
    for label in labels:
        shape = tuple(label.shape[-2:])
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return samples


def _random_labels(batch, size, ignore_fraction=0.1):
    labels = torch.randint(0, NUM_CLASSES, (batch, 1, size, size))
    labels[torch.rand(labels.shape) < ignore_fraction] = 255
    return labels


def _dilations(head):
    return [branch.conv.dilation for branch in head.aspp.convs[1:]]


def _paddings(head):
    return [branch.conv.padding for branch in head.aspp.convs[1:]]


# --------------------------------------------------------------------------- structure


def test_registered_base_decode_head_with_paper_structure():
    head = _build_head()
    assert isinstance(head, DeepLabV3Head) and isinstance(head, BaseDecodeHead)
    aspp = head.aspp
    # (a) one 1x1 branch and one 3x3 atrous branch per rate, (b) image pooling: 5 branches
    assert len(aspp.convs) == 4 and aspp.image_pool is not None
    assert aspp.convs[0].conv.kernel_size == (1, 1)
    assert [b.conv.kernel_size for b in aspp.convs[1:]] == [(3, 3)] * 3
    assert aspp.image_pool.conv.kernel_size == (1, 1)
    # every branch and the projection: `channels` filters, BN, no conv bias (BN has one)
    for module in [*aspp.convs, aspp.image_pool, aspp.project]:
        assert module.conv.out_channels == CHANNELS
        assert isinstance(module.bn, nn.BatchNorm2d)
        assert module.conv.bias is None
    assert aspp.project.conv.in_channels == 5 * CHANNELS
    assert aspp.project.conv.kernel_size == (1, 1)  # the paper's 1x1, not mmseg's 3x3
    assert aspp.dropout is None and head.extra_convs is None
    # the classifier is BaseDecodeHead's conv_seg: 1x1 with a bias
    assert head.conv_seg.kernel_size == (1, 1) and head.conv_seg.bias is not None
    assert head.conv_seg.out_channels == NUM_CLASSES


def test_dilations_pinned_at_os16_and_os8():
    head = _build_head()
    assert head.current_output_stride == 16
    assert _dilations(head) == [(6, 6), (12, 12), (18, 18)]
    assert _paddings(head) == [(6, 6), (12, 12), (18, 18)]
    assert head.effective_rates == (6, 12, 18)

    head_os8 = _build_head(output_stride=8)
    assert _dilations(head_os8) == [(12, 12), (24, 24), (36, 36)]
    assert _paddings(head_os8) == [(12, 12), (24, 24), (36, 36)]

    # rates stated at another reference stride (torchvision: (12, 24, 36) at OS 8)
    head_ref8 = _build_head(atrous_rates=(12, 24, 36), rates_output_stride=8, output_stride=16)
    assert head_ref8.effective_rates == (6, 12, 18)

    assert _build_head(output_stride=32).effective_rates == (3, 6, 9)
    assert _build_head(output_stride=4).effective_rates == (24, 48, 72)


def test_switch_output_stride_changes_dilation_only():
    head = _build_head()
    before = copy.deepcopy(head.state_dict())
    x = torch.randn(2, IN_CHANNELS, 9, 11)
    head.switch_output_stride(8)
    assert head.current_output_stride == 8
    assert _dilations(head) == [(12, 12), (24, 24), (36, 36)]
    assert [b.dilation for b in head.aspp.convs[1:]] == [(12, 12), (24, 24), (36, 36)]
    after = head.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    head.eval()
    assert head([x]).shape == (2, NUM_CLASSES, 9, 11)
    head.switch_output_stride(16)
    assert _dilations(head) == [(6, 6), (12, 12), (18, 18)]

    # a stride that would give a fractional rate fails and leaves the head untouched
    with pytest.raises(ValueError, match=r'output_stride=64.*would be \(1\.5, 3\.0, 4\.5\)'):
        head.switch_output_stride(64)
    assert head.current_output_stride == 16 and head.effective_rates == (6, 12, 18)


def test_table5_four_rates_and_no_image_pooling():
    head = _build_head(atrous_rates=(6, 12, 18, 24), image_pooling=False)
    assert head.aspp.image_pool is None
    assert len(head.aspp.convs) == 5
    assert head.aspp.project.conv.in_channels == 5 * CHANNELS
    assert head.effective_rates == (6, 12, 18, 24)
    head.switch_output_stride(8)
    assert head.effective_rates == (12, 24, 36, 48)
    out = head([torch.randn(2, IN_CHANNELS, 7, 7)])
    assert out.shape == (2, NUM_CLASSES, 7, 7)

    single = _build_head(atrous_rates=[12])
    assert single.aspp.project.conv.in_channels == 3 * CHANNELS


def test_scale_atrous_rates():
    assert scale_atrous_rates((6, 12, 18), 16, 16) == (6, 12, 18)
    assert scale_atrous_rates((6, 12, 18), 16, 8) == (12, 24, 36)
    assert scale_atrous_rates((6, 12, 18), 16, 32) == (3, 6, 9)
    with pytest.raises(ValueError, match=r'output_stride=64 is not allowed with atrous_rates='
                                         r'\(6, 12, 18\) given at rates_output_stride=16'):
        scale_atrous_rates((6, 12, 18), 16, 64)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(output_stride=0), 'output_stride=0 is not allowed: expected a power of two'),
    (dict(output_stride=5), 'output_stride=5 is not allowed: expected a power of two'),
    (dict(output_stride=64), r'output_stride=64 .*would be \(1\.5, 3\.0, 4\.5\)'),
    (dict(norm_cfg=dict(type='GN', num_groups=CHANNELS)), 'image-pooling map has one'),
    (dict(norm_cfg=dict(type='IN')), 'image-pooling map has one'),
])
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _build_head(**kwargs)


def test_group_norm_and_no_norm_build_and_run():
    gn = _build_head(norm_cfg=dict(type='GN', num_groups=2))
    assert isinstance(gn.aspp.image_pool.gn, nn.GroupNorm)
    gn.train()
    assert gn([torch.randn(1, IN_CHANNELS, 5, 5)]).shape == (1, NUM_CLASSES, 5, 5)
    plain = _build_head(norm_cfg=None)
    assert plain.aspp.convs[0].conv.bias is not None  # no norm: the conv carries a bias
    plain.train()
    assert plain([torch.randn(1, IN_CHANNELS, 5, 5)]).shape == (1, NUM_CLASSES, 5, 5)


def test_multiple_select_rejected():
    with pytest.raises(ValueError, match="input_transform='multiple_select'"):
        _build_head(in_channels=[8, 8], in_index=[0, 1], input_transform='multiple_select')


def test_resize_concat_inputs():
    head = _build_head(in_channels=[8, 8], in_index=[0, 1], input_transform='resize_concat')
    out = head([torch.randn(2, 8, 6, 6), torch.randn(2, 8, 3, 3)])
    assert out.shape == (2, NUM_CLASSES, 6, 6)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize('image_pooling', [True, False])
@pytest.mark.parametrize('size', [(9, 9), (5, 8), (1, 1)])
def test_output_shapes(image_pooling, size):
    head = _build_head(image_pooling=image_pooling)
    head.eval()
    x = torch.randn(2, IN_CHANNELS, *size)
    # the backbone tuple: the head takes in_index=-1
    out = head([torch.randn(2, 4, 3, 3), x])
    assert out.shape == (2, NUM_CLASSES, *size)


def test_image_pooling_is_global_pool_conv_bn_relu_bilinear():
    head = _build_head()
    head.eval()
    pool = head.aspp.image_pool
    with torch.no_grad():
        pool.bn.running_mean.normal_()
        pool.bn.running_var.uniform_(0.5, 2.0)
        pool.bn.weight.normal_()
        pool.bn.bias.normal_()
    x = torch.randn(3, IN_CHANNELS, 7, 10)
    with torch.no_grad():
        encoded = F.relu(pool.bn(pool.conv(F.adaptive_avg_pool2d(x, 1))))
        for align_corners in (False, True):
            expected = F.interpolate(
                encoded, size=(7, 10), mode='bilinear', align_corners=align_corners)
            torch.testing.assert_close(pool(x), expected)


def test_forward_matches_branchwise_computation():
    """Concat order [1x1, rates..., pooling] -> 1x1 projection -> conv_seg."""
    head = _build_head(dropout_ratio=0.0)
    head.eval()
    x = torch.randn(2, IN_CHANNELS, 6, 6)
    with torch.no_grad():
        branches = [branch(x) for branch in head.aspp.convs] + [head.aspp.image_pool(x)]
        expected = head.conv_seg(head.aspp.project(torch.cat(branches, dim=1)))
        torch.testing.assert_close(head([x]), expected)


def test_onnx_export_with_dynamic_sizes(tmp_path):
    """Image pooling broadcasts instead of resizing: one graph serves every input size."""
    onnxruntime = pytest.importorskip('onnxruntime')  # the `tests` extra installs it

    class Wrapper(nn.Module):

        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, x):
            return self.head([x])

    model = Wrapper(_build_head()).eval()
    path = str(tmp_path / 'head.onnx')
    torch.onnx.export(
        model, (torch.randn(1, IN_CHANNELS, 9, 9), ), path, input_names=['x'],
        output_names=['logits'], dynamic_axes={'x': {0: 'n', 2: 'h', 3: 'w'}}, dynamo=False)
    session = onnxruntime.InferenceSession(path)
    for shape in [(1, IN_CHANNELS, 9, 9), (2, IN_CHANNELS, 13, 7)]:
        x = torch.randn(*shape)
        (got, ) = session.run(None, {'x': x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- batch size 1


def test_batch1_train_uses_running_stats_in_image_pooling_only():
    head = _build_head()
    head.train()
    pool_bn = head.aspp.image_pool.bn
    with torch.no_grad():
        pool_bn.running_mean.normal_()
        pool_bn.running_var.uniform_(0.5, 2.0)
    pool_state = {k: v.clone() for k, v in pool_bn.state_dict().items()}
    x = torch.randn(1, IN_CHANNELS, 6, 6)

    out = head([x])  # must not raise "Expected more than 1 value per channel"
    labels = torch.randint(0, NUM_CLASSES, (1, 6, 6))
    F.cross_entropy(out, labels).backward()

    # pooling branch: normalised with, and not updating, its running statistics
    for key, value in pool_bn.state_dict().items():
        assert torch.equal(value, pool_state[key]), key
    # ... and its parameters stay in the graph (their gradient is ~0 at batch 1, see below)
    for param in (pool_bn.weight, pool_bn.bias, head.aspp.image_pool.conv.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all()
    # every other BN sees H x W values and trains normally
    other_bn = head.aspp.convs[0].bn
    assert other_bn.num_batches_tracked.item() == 1
    assert other_bn.running_mean.abs().sum() > 0

    # train/test consistency of the branch at batch 1
    pool = head.aspp.image_pool
    with torch.no_grad():
        train_out = pool(x)
        pool.eval()
        torch.testing.assert_close(train_out, pool(x))


def _pool_bias_changes_output(head, batch_size):
    """Whether the image-level branch influences the head's output at this batch size."""
    x = torch.randn(batch_size, IN_CHANNELS, 6, 6)
    with torch.no_grad():
        first = head([x])
        head.aspp.image_pool.bn.bias.add_(1.0)
        second = head([x])
        head.aspp.image_pool.bn.bias.sub_(1.0)
    return not torch.allclose(first, second, atol=1e-5)


def test_batch1_projection_bn_cancels_image_features_unless_frozen():
    """Documented effect: at batch 1 the projection's BN removes the per-image constant."""
    head = _build_head(dropout_ratio=0.0)
    head.train()
    assert not _pool_bias_changes_output(head, batch_size=1)
    assert _pool_bias_changes_output(head, batch_size=2)
    head.eval()
    assert _pool_bias_changes_output(head, batch_size=1)
    frozen = _build_head(dropout_ratio=0.0, norm_eval=True)
    frozen.train()
    assert _pool_bias_changes_output(frozen, batch_size=1)


def test_batch2_train_is_the_papers_batch_norm():
    head = _build_head()
    head.train()
    pool = head.aspp.image_pool
    x = torch.randn(2, IN_CHANNELS, 6, 6)
    with torch.no_grad():
        pooled = x.mean(dim=(2, 3), keepdim=True)
        expected = F.relu(F.batch_norm(pool.conv(pooled), None, None, pool.bn.weight,
                                       pool.bn.bias, training=True, eps=pool.bn.eps))
        out = pool(x)
    torch.testing.assert_close(out[:, :, :1, :1], expected)
    assert pool.bn.num_batches_tracked.item() == 1
    assert pool.bn.running_mean.abs().sum() > 0


def test_batch1_without_running_stats_raises_clear_error():
    head = _build_head(norm_cfg=dict(type='BN', track_running_stats=False))
    head.train()
    with pytest.raises(ValueError, match='track_running_stats=False'):
        head([torch.randn(1, IN_CHANNELS, 5, 5)])


def test_running_stats_rule_with_syncbn_process_groups(monkeypatch):
    """SyncBN over >= 2 processes keeps the paper's (gathered) statistics at 1 image/process."""
    norm = nn.SyncBatchNorm(4)
    norm.train()
    single = torch.randn(1, 4, 1, 1)
    assert pooled_batch_norm_uses_running_stats(norm, single)  # not distributed
    assert not pooled_batch_norm_uses_running_stats(norm, torch.randn(2, 4, 1, 1))
    assert not pooled_batch_norm_uses_running_stats(nn.GroupNorm(2, 4), single)
    assert not pooled_batch_norm_uses_running_stats(None, single)

    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_world_size', lambda group=None: 2)
    assert not pooled_batch_norm_uses_running_stats(norm, single)
    # plain BN does not synchronise, whatever the world size
    bn = nn.BatchNorm2d(4)
    bn.train()
    assert pooled_batch_norm_uses_running_stats(bn, single)
    monkeypatch.setattr(torch.distributed, 'get_world_size', lambda group=None: 1)
    assert pooled_batch_norm_uses_running_stats(norm, single)
    norm.eval()
    assert not pooled_batch_norm_uses_running_stats(norm, single)


def test_syncbn_config_batch1_on_a_single_process():
    head = _build_head(norm_cfg=dict(type='SyncBN', requires_grad=True))
    assert isinstance(head.aspp.image_pool.bn, nn.SyncBatchNorm)
    head.train()
    assert head([torch.randn(1, IN_CHANNELS, 5, 5)]).shape == (1, NUM_CLASSES, 5, 5)


# --------------------------------------------------------------------------- BN frozen


def test_norm_eval_and_frozen_bn():
    head = _build_head(norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True)
    head.train()
    assert head.training
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6  # 1x1, three rates, pooling, projection
    assert all(not bn.training for bn in bns)
    assert all(not p.requires_grad for bn in bns for p in bn.parameters())
    state = copy.deepcopy(head.state_dict())
    out = head([torch.randn(2, IN_CHANNELS, 5, 5)])
    out.sum().backward()
    for key, value in head.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert head.aspp.project.conv.weight.grad is not None
    head.eval()
    head.train()
    assert all(not bn.training for bn in bns)

    fine_tuned = _build_head()
    fine_tuned.train()
    assert all(m.training for m in fine_tuned.modules() if isinstance(m, nn.BatchNorm2d))


# --------------------------------------------------------------------------- losses


def test_downsample_labels_geometry():
    labels = torch.randint(0, 21, (2, 1, 513, 513))
    # align_corners=True: TF's nearest neighbour, a 513 crop at OS 16 keeps every 16th pixel
    small = downsample_labels(labels, (33, 33), align_corners=True)
    assert small.dtype == labels.dtype
    assert torch.equal(small, labels[:, :, ::16, ::16])
    # align_corners=False: the pixel under each output pixel's centre
    for src, dst in [(64, 8), (65, 9), (33, 5), (7, 7), (5, 1)]:
        labels = torch.randint(0, 21, (1, 1, src, src + 3))
        expected = F.interpolate(labels.float(), size=(dst, dst + 1), mode='nearest-exact')
        got = downsample_labels(labels, (dst, dst + 1), align_corners=False)
        assert torch.equal(got, expected.long())
    assert downsample_labels(labels, (1, 1), align_corners=True).shape == (1, 1, 1, 1)


@pytest.mark.parametrize('downsample_label', [False, True])
@pytest.mark.parametrize('align_corners', [False, True])
def test_loss_resolution_modes(downsample_label, align_corners):
    head = _build_head(
        downsample_label=downsample_label, align_corners=align_corners, dropout_ratio=0.0)
    head.train()
    x = torch.randn(2, IN_CHANNELS, 5, 5)
    labels = _random_labels(2, 33)
    samples = _samples(labels)

    losses = head.loss([x], samples, train_cfg=dict())
    assert set(losses) == {'loss_ce', 'acc_seg'}
    assert torch.isfinite(losses['loss_ce']) and losses['loss_ce'] > 0
    assert torch.isfinite(losses['acc_seg']).all()
    losses['loss_ce'].backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert head.conv_seg.weight.grad.abs().sum() > 0
    assert head.aspp.image_pool.conv.weight.grad.abs().sum() > 0

    # the loss is computed at the resolution the mode says (mmseg's CE averages over all
    # pixels, ignored ones counting as zero)
    head.eval()
    with torch.no_grad():
        logits = head([x])
        got = head.loss_by_feat(logits, samples)['loss_ce']
        if downsample_label:
            target = downsample_labels(labels, (5, 5), align_corners)
            scored = logits
        else:
            target = labels
            scored = F.interpolate(
                logits, size=(33, 33), mode='bilinear', align_corners=align_corners)
        expected = F.cross_entropy(
            scored, target.squeeze(1), ignore_index=255, reduction='none').mean()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('head_kwargs, names', [
    # OHEM pixel sampler; two losses under one name are summed
    (dict(sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=10),
          loss_decode=[dict(type='CrossEntropyLoss', loss_name='loss_ce', loss_weight=1.0),
                       dict(type='CrossEntropyLoss', loss_name='loss_ce', loss_weight=0.5)]),
     {'loss_ce', 'acc_seg'}),
    (dict(loss_decode=[dict(type='CrossEntropyLoss', loss_name='loss_ce'),
                       dict(type='DiceLoss', loss_name='loss_dice', loss_weight=0.5)]),
     {'loss_ce', 'loss_dice', 'acc_seg'}),
])
def test_samplers_and_loss_lists_in_downsample_mode(head_kwargs, names):
    head = _build_head(downsample_label=True, **head_kwargs)
    head.train()
    losses = head.loss([torch.randn(2, IN_CHANNELS, 5, 5)], _samples(_random_labels(2, 17)),
                       train_cfg=dict())
    assert set(losses) == names
    total = sum(value for key, value in losses.items() if key.startswith('loss_'))
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(head.conv_seg.weight.grad).all()


# --------------------------------------------------------------------------- torchvision


class _TorchvisionPooling(nn.Sequential):
    """Layout of torchvision's ``ASPPPooling``: (pool, conv, bn, relu), bilinear upsample."""

    def forward(self, x):
        out = super().forward(x)
        return F.interpolate(out, size=x.shape[-2:], mode='bilinear', align_corners=False)


class _TorchvisionASPP(nn.Module):
    """Layout of torchvision's ``ASPP`` (``convs`` list then ``project``), built from plain
    layers: torchvision is not a dependency of the plugin."""

    def __init__(self, in_channels, channels, rates):
        super().__init__()

        def conv_bn_relu(kernel, rate):
            return nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel, padding=rate if kernel == 3 else 0,
                          dilation=rate, bias=False), nn.BatchNorm2d(channels), nn.ReLU())

        branches = [conv_bn_relu(1, 1)] + [conv_bn_relu(3, rate) for rate in rates]
        branches.append(_TorchvisionPooling(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU()))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


def _torchvision_deeplab_head(in_channels, channels, num_classes, rates=(12, 24, 36)):
    return nn.Sequential(
        _TorchvisionASPP(in_channels, channels, rates),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU(), nn.Conv2d(channels, num_classes, 1))


def _convert(tv_state, mapping):
    converted = {}
    for key, value in tv_state.items():
        module, suffix = key.rsplit('.', 1)
        converted[f'{mapping[module]}.{suffix}'] = value
    return converted


def test_torchvision_layout_maps_one_to_one_and_matches_numerically():
    torch.manual_seed(0)
    reference = _torchvision_deeplab_head(IN_CHANNELS, CHANNELS, NUM_CLASSES)
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 2.0)
            elif tensor.is_floating_point():
                tensor.normal_(0, 0.5)
    head = _build_head(
        atrous_rates=(12, 24, 36), rates_output_stride=8, output_stride=8,
        project_dropout=0.5, num_extra_convs=1, dropout_ratio=0.0)
    converted = _convert(reference.state_dict(), torchvision_key_map(3))
    assert set(converted) == set(head.state_dict())
    head.load_state_dict(converted, strict=True)

    reference.eval()
    head.eval()
    x = torch.randn(2, IN_CHANNELS, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(head([x]), reference(x))
    assert isinstance(head.aspp.dropout, nn.Dropout) and head.aspp.dropout.p == 0.5
    assert head.dropout is None


# --------------------------------------------------------------------------- cascade head


def test_fcn_head_without_convs_is_a_single_1x1_classifier():
    """The cascaded model's head (Sec. 3.2): logits straight from the last block."""
    head = MODELS.build(
        dict(type='FCNHead', in_channels=IN_CHANNELS, channels=IN_CHANNELS, num_convs=0,
             concat_input=False, num_classes=NUM_CLASSES))
    assert [name for name, _ in head.named_parameters()] == ['conv_seg.weight', 'conv_seg.bias']
    assert head.conv_seg.kernel_size == (1, 1)
    head.eval()
    x = torch.randn(2, IN_CHANNELS, 4, 4)
    with torch.no_grad():
        expected = F.conv2d(x, head.conv_seg.weight, head.conv_seg.bias)
        torch.testing.assert_close(head([x]), expected)


# --------------------------------------------------------------------------- full model


def _tiny_encoder_decoder(**head_kwargs):
    init_default_scope('mmseg')  # what the Runner does with configs' default_scope
    backbone_channels = 64  # ResNet-18 layout with base_channels=8: 8, 16, 32, 64
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
            size=(33, 33)),
        backbone=dict(
            type='ResNetV1c', depth=18, stem_channels=16, base_channels=8, out_indices=(3, ),
            strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), contract_dilation=True,
            norm_cfg=dict(type='BN', requires_grad=True)),
        decode_head=_head_cfg(in_channels=backbone_channels, channels=CHANNELS,
                              **head_kwargs),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return MODELS.build(ConfigDict(cfg))  # as a config file gives it


def _batch(batch_size, size=33):
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
              for _ in range(batch_size)]
    return dict(inputs=inputs, data_samples=_samples(_random_labels(batch_size, size)))


@pytest.mark.parametrize('batch_size, downsample_label', [(1, False), (4, False), (1, True)])
def test_encoder_decoder_loss(batch_size, downsample_label):
    model = _tiny_encoder_decoder(downsample_label=downsample_label)
    model.train()
    data = model.data_preprocessor(_batch(batch_size), training=True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['decode.loss_ce'])
    losses['decode.loss_ce'].backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_encoder_decoder_batch1_with_frozen_head_bn_trains_image_pooling():
    model = _tiny_encoder_decoder(
        norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    pool_conv = model.decode_head.aspp.image_pool.conv.weight
    before = pool_conv.detach().clone()
    model.train_step(_batch(1), optim_wrapper)
    assert not torch.equal(before, pool_conv)


def test_encoder_decoder_batch1_train_step_then_predict_at_os8():
    model = _tiny_encoder_decoder()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    log_vars = model.train_step(_batch(1), optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    for name in ('backbone.stem.0.weight', 'decode_head.aspp.convs.0.conv.weight',
                 'decode_head.aspp.project.conv.weight', 'decode_head.conv_seg.weight'):
        assert not torch.equal(before[name], model.get_parameter(name)), name

    model.decode_head.switch_output_stride(8)  # the head alone; the backbone stays at OS 16
    model.eval()
    with torch.no_grad():
        results = model.test_step(_batch(2))
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 33, 33)
    assert results[0].seg_logits.data.shape == (NUM_CLASSES, 33, 33)


def _tiny_multigrid_model(segmentor='EncoderDecoder', **segmentor_kwargs):
    """The paper's parallel model, tiny: MultiGridResNet-50 (base 8: 256 out channels)."""
    init_default_scope('mmseg')
    cfg = dict(
        type=segmentor,
        **segmentor_kwargs,
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
            size=(33, 33)),
        backbone=dict(
            type='MultiGridResNet', depth=50, stem_channels=16, base_channels=8,
            output_stride=16, multi_grid=(1, 2, 4)),
        decode_head=_head_cfg(in_channels=256),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return MODELS.build(ConfigDict(cfg))


@pytest.mark.parametrize('batch_size', [1, 4])
def test_deeplabv3_segmentor_trains_at_os16_and_evaluates_at_os8(batch_size):
    """The plugin's segmentor pushes its one OS knob into the head (Table 6: train 16, eval 8)."""
    model = _tiny_multigrid_model('DeepLabV3', output_stride=16, test_output_stride=8)
    model.train()
    assert model.decode_head.effective_rates == (6, 12, 18)
    data = model.data_preprocessor(_batch(batch_size), training=True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['decode.loss_ce'])
    losses['decode.loss_ce'].backward()
    assert torch.isfinite(model.decode_head.conv_seg.weight.grad).all()

    model.eval()
    assert model.decode_head.effective_rates == (12, 24, 36)
    with torch.no_grad():
        results = model.test_step(_batch(batch_size))
    assert results[0].pred_sem_seg.data.shape == (1, 33, 33)
    model.train()
    assert model.decode_head.effective_rates == (6, 12, 18)


def test_multigrid_resnet_model_switches_to_os8_with_the_head():
    from deeplabv3_plugin.models.output_stride import set_output_stride
    model = _tiny_multigrid_model()
    model.eval()
    state = copy.deepcopy(model.state_dict())
    inputs = model.data_preprocessor(_batch(2), training=False)['inputs']
    with torch.no_grad():
        assert model.decode_head(model.extract_feat(inputs)).shape[-2:] == (3, 3)  # 33 / 16
        set_output_stride(model, 8)
        assert model.decode_head.effective_rates == (12, 24, 36)
        assert model.decode_head(model.extract_feat(inputs)).shape[-2:] == (5, 5)  # 33 / 8
        results = model.test_step(_batch(2))
    assert results[0].pred_sem_seg.data.shape == (1, 33, 33)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    set_output_stride(model, 16)
    assert model.decode_head.effective_rates == (6, 12, 18)
