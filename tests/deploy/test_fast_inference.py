"""The fast inference path: BN folding, channels_last, bf16, FastInferenceModel (its hook:
tests/engine/test_hooks.py).

Correctness only (no timings): every fast variant must predict what the plain model predicts,
exactly up to float rounding for channels_last and folding, within bf16 precision for bf16,
and must leave the model being trained (its weights, state_dict, output stride) untouched.
"""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.deploy.fast_inference import (FastInferenceModel, fold_bn_into_conv,
                                                     fuse_conv_bn, register_conv_bn_pairs)
from deeplabv3_plugin.models.output_stride import set_output_stride
from helpers.demo import MODEL_SIZE, build_tiny_model, count_bn, randomize_bn


pytestmark = pytest.mark.usefixtures('one_thread')


def make_batch(size: int = MODEL_SIZE, n: int = 1, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    shape = (size, size)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
                for _ in range(n)],
        data_samples=[SegDataSample(metainfo=dict(ori_shape=shape, img_shape=shape,
                                                  pad_shape=shape)) for _ in range(n)])


def predict(model: nn.Module, seed: int = 0):
    with torch.no_grad():
        samples = model.test_step(make_batch(seed=seed))
    return samples[0].seg_logits.data, samples[0].pred_sem_seg.data


def snapshot(model: nn.Module) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items()}


# ---------------------------------------------------------------- BN folding, one pair


@pytest.mark.parametrize('conv_bias', [False, True])
@pytest.mark.parametrize('affine', [False, True])
def test_fold_bn_into_conv_equals_conv_then_bn(conv_bias, affine):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=conv_bias)
    bn = randomize_bn(nn.BatchNorm2d(6, affine=affine)).eval()
    x = torch.randn(2, 4, 9, 9)
    expected = bn(conv(x))
    fold_bn_into_conv(conv, bn)
    assert conv.bias is not None
    assert conv.dilation == (2, 2) and conv.padding == (2, 2)  # geometry untouched
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_conv_refuses_what_it_cannot_fold():
    conv = nn.Conv2d(4, 6, 1)
    with pytest.raises(ValueError, match='training mode'):
        fold_bn_into_conv(conv, nn.BatchNorm2d(6).train())
    with pytest.raises(ValueError, match='track_running_stats=False'):
        fold_bn_into_conv(conv, nn.BatchNorm2d(6, track_running_stats=False).eval())


# ---------------------------------------------------------------- BN folding, whole models


@pytest.mark.parametrize('depth,stem', [(18, 'deep'), (50, 'torchvision')])
def test_fuse_conv_bn_folds_every_bn_of_the_plugin_model(depth, stem):
    """Stem (deep Sequential or 7x7 conv1/bn1), BasicBlock/Bottleneck units, projection
    shortcuts, every ASPP branch, image pooling and the projection: nothing is left over."""
    model = build_tiny_model(depth=depth, stem=stem)
    inputs = torch.randn(1, 3, 65, 65)
    expected = model(inputs, mode='tensor')
    fused = copy.deepcopy(model)
    assert fuse_conv_bn(fused) == count_bn(model)
    assert count_bn(fused) == 0
    torch.testing.assert_close(fused(inputs, mode='tensor'), expected, rtol=1e-4, atol=1e-4)


def test_fuse_conv_bn_folds_mmseg_deeplabv3():
    """mmseg's own DeepLabV3 (ResNetV1c, ASPPHead, FCN auxiliary head) folds completely too."""
    init_default_scope('mmseg')
    bn = dict(type='BN', requires_grad=True)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
                      strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_cfg=bn,
                      contract_dilation=True),
        decode_head=dict(type='ASPPHead', in_channels=64, in_index=3, channels=16,
                         dilations=(1, 12, 24, 36), num_classes=6, norm_cfg=bn),
        auxiliary_head=dict(type='FCNHead', in_channels=32, in_index=2, channels=8,
                            num_convs=1, concat_input=False, num_classes=6, norm_cfg=bn),
        test_cfg=dict(mode='whole')))
    model = randomize_bn(model).eval()
    inputs = torch.randn(1, 3, 33, 33)
    expected = model(inputs, mode='tensor')
    fused = copy.deepcopy(model)
    assert fuse_conv_bn(fused) == count_bn(model)
    torch.testing.assert_close(fused(inputs, mode='tensor'), expected, rtol=1e-4, atol=1e-4)


def test_fuse_conv_bn_needs_eval_mode():
    with pytest.raises(ValueError, match='training mode'):
        fuse_conv_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train())


class _ConvThenNorm(nn.Module):
    """A module whose conv -> BN pair is only visible from its forward."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.norm(self.conv(x)).relu()


def test_register_conv_bn_pairs_teaches_new_module_types():
    module = randomize_bn(_ConvThenNorm()).eval()
    assert fuse_conv_bn(copy.deepcopy(module)) == 0  # unknown type: nothing guessed
    register_conv_bn_pairs(_ConvThenNorm, lambda m: [('conv', 'norm')])
    x = torch.randn(1, 3, 8, 8)
    fused = copy.deepcopy(module)
    assert fuse_conv_bn(fused) == 1
    torch.testing.assert_close(fused(x), module(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- FastInferenceModel


class _NotEncoderDecoder(BaseSegmentor):
    """A segmentor without backbone/decode_head attributes."""

    def loss(self, inputs, data_samples):
        return {}

    def predict(self, inputs, data_samples=None):
        return []

    def _forward(self, inputs, data_samples=None):
        return inputs

    def encode_decode(self, inputs, batch_data_samples):
        return inputs

    def extract_feat(self, inputs):
        return inputs


def test_fast_model_predicts_like_the_plain_model_and_leaves_it_untouched():
    model = build_tiny_model()
    before = snapshot(model)
    logits, labels = predict(model)
    fast = FastInferenceModel(model)
    fast_logits, fast_labels = predict(fast)
    torch.testing.assert_close(fast_logits, logits, rtol=1e-4, atol=1e-4)
    assert (fast_labels == labels).float().mean() >= 0.999
    # the fast copy is folded and NHWC; the original keeps its BN, its layout and its weights
    assert fast.num_fused_bn == count_bn(model) and count_bn(fast) == 0
    conv = fast.module.backbone.layer1[0].conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.backbone.layer1[0].conv1.weight.is_contiguous()
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


@pytest.mark.parametrize('channels_last,fuse_bn', [(True, False), (False, True)])
def test_fast_model_options_each_keep_predictions(channels_last, fuse_bn):
    model = build_tiny_model()
    logits, _ = predict(model)
    fast = FastInferenceModel(model, channels_last=channels_last, fuse_bn=fuse_bn)
    assert count_bn(fast) == (0 if fuse_bn else count_bn(model))
    torch.testing.assert_close(predict(fast)[0], logits, rtol=1e-4, atol=1e-4)


def test_fast_model_follows_the_output_stride():
    """Folding keeps strides and rates as modules: set_output_stride and test_output_stride
    work on the fast model exactly as on the original."""
    model = build_tiny_model(output_stride=16, test_output_stride=8)
    fast = FastInferenceModel(model)
    assert fast.module.backbone.current_output_stride == 8  # eval mode applied the test OS
    torch.testing.assert_close(predict(fast)[0], predict(model.eval())[0], rtol=1e-4, atol=1e-4)
    plain = build_tiny_model(output_stride=16)
    fast = FastInferenceModel(plain)
    set_output_stride(fast, 8)
    set_output_stride(plain, 8)
    assert fast.module.decode_head.effective_rates == (12, 24, 36)
    torch.testing.assert_close(predict(fast)[0], predict(plain)[0], rtol=1e-4, atol=1e-4)


def test_fast_model_bf16_agrees_with_fp32():
    model = build_tiny_model()
    logits, labels = predict(model)
    fast = FastInferenceModel(model, bf16=True)
    # conv weights are stored in bf16 in the copy only
    assert fast.module.backbone.layer1[0].conv1.weight.dtype == torch.bfloat16
    assert fast.module.decode_head.conv_seg.weight.dtype == torch.bfloat16
    assert all(v.dtype != torch.bfloat16 for v in model.state_dict().values())
    bf16_logits, bf16_labels = predict(fast)
    assert bf16_logits.dtype == torch.float32  # logits leave the head in float32
    torch.testing.assert_close(bf16_logits, logits, rtol=0.05, atol=0.05)
    assert (bf16_labels == labels).float().mean() >= 0.99
    assert fast(torch.randn(1, 3, 33, 33), mode='tensor').dtype == torch.float32
    # unfolded BN layers take the bf16 conv outputs (float32 statistics)
    unfused = FastInferenceModel(model, fuse_bn=False, bf16=True)
    assert (predict(unfused)[1] == labels).float().mean() >= 0.99


@pytest.mark.slow
def test_fast_model_compiled_predicts_the_same_and_recompiles_for_a_new_stride():
    model = build_tiny_model(output_stride=16)
    fast = FastInferenceModel(model, compile=True)
    torch.testing.assert_close(predict(fast)[0], predict(model)[0], rtol=1e-4, atol=1e-4)
    set_output_stride(fast, 8)
    set_output_stride(model, 8)
    torch.testing.assert_close(predict(fast)[0], predict(model)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match='EncoderDecoder'):
        FastInferenceModel(_NotEncoderDecoder(), compile=True)
    with pytest.raises(TypeError, match='EncoderDecoder'):
        FastInferenceModel(_NotEncoderDecoder(), bf16=True)


def test_fast_model_is_inference_only():
    model = build_tiny_model()
    fast = FastInferenceModel(model)
    with pytest.raises(RuntimeError, match='inference-only'):
        fast.train()
    with pytest.raises(ValueError, match="mode='loss'"):
        fast(torch.randn(1, 3, 33, 33), mode='loss')
    with pytest.raises(TypeError, match='BaseSegmentor'):
        FastInferenceModel(nn.Conv2d(3, 3, 1))
    # the segmentor's attributes are reachable, so mmseg's SegTTAModel and APIs accept it
    assert fast.decode_head is fast.module.decode_head
    assert fast.out_channels == model.out_channels
