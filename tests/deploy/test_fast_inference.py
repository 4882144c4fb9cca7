"""The fast inference path: BN folding, channels_last, bf16, FastInferenceModel and its hook.

Correctness only (no timings): every fast variant must predict what the plain model predicts,
exactly up to float rounding for channels_last and folding, within bf16 precision for bf16,
and must leave the model being trained (its weights, state_dict, output stride) untouched.
"""
import copy
import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.deploy.fast_inference import (FastInferenceModel, fold_bn_into_conv,
                                                     fuse_conv_bn, register_conv_bn_pairs)
from deeplabv3_plugin.engine.hooks import FastInferenceHook
from deeplabv3_plugin.models.output_stride import set_output_stride

from _demo_fixture import MODEL_SIZE, build_tiny_model, randomize_bn, tiny_demo_config


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny tensors: OpenMP threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


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


# ---------------------------------------------------------------- FastInferenceHook


class _RecordModel(Hook):
    """Records the model each val/test iteration ran."""

    def __init__(self):
        self.models = []

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self.models.append(runner.model)

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self.models.append(runner.model)


def test_hook_bad_arguments():
    with pytest.raises(ValueError, match="loops='val'"):
        FastInferenceHook(loops='val')
    with pytest.raises(ValueError, match='loops'):
        FastInferenceHook(loops=('train', ))


def test_hook_runner_test_gives_the_same_metrics(tmp_path):
    """Runner.test() with the hook runs a fast copy, scores the same, then restores the model."""
    runner = Runner.from_cfg(tiny_demo_config(str(tmp_path / 'shapes'), str(tmp_path / 'w')))
    expected = runner.test()
    original = runner.model
    recorder = _RecordModel()
    runner.register_hook(recorder)
    runner.register_hook(FastInferenceHook(channels_last=True, fuse_bn=True))
    metrics = runner.test()
    assert recorder.models and all(isinstance(m, FastInferenceModel) for m in recorder.models)
    assert runner.model is original
    assert metrics.keys() == expected.keys()
    for key in expected:
        assert metrics[key] == pytest.approx(expected[key], abs=0.01)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_hook_unwraps_a_ddp_model_and_puts_the_wrapper_back(tmp_path):
    """In distributed runs runner.model is a DDP wrapper: the fast copy is made of the segmentor
    inside it, and the wrapper (which training needs) is what comes back."""
    runner = Runner.from_cfg(tiny_demo_config(str(tmp_path / 'shapes'), str(tmp_path / 'w')))
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    try:
        wrapper = MMDistributedDataParallel(module=runner.model, device_ids=None)
        runner.model = wrapper
        recorder = _RecordModel()
        runner.register_hook(recorder)
        runner.register_hook(FastInferenceHook())
        runner.val()
    finally:
        dist.destroy_process_group()
    assert isinstance(recorder.models[0], FastInferenceModel)
    assert not is_model_wrapper(recorder.models[0].module)
    assert runner.model is wrapper


def test_hook_with_tta_speeds_up_the_wrapped_segmentor(tmp_path):
    """With --tta the hook wraps the segmentor inside SegTTAModel (here in bf16); the softmax
    merge of the views gets float32 logits."""
    cfg = tiny_demo_config(str(tmp_path / 'shapes'), str(tmp_path / 'w'))
    cfg.tta_pipeline[1].transforms[0] = [
        dict(type='Resize', scale_factor=s, keep_ratio=True) for s in (0.5, 1.0)]
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    runner = Runner.from_cfg(cfg)
    expected = runner.test()
    recorder = _RecordModel()
    runner.register_hook(recorder)
    runner.register_hook(FastInferenceHook(bf16=True))
    metrics = runner.test()
    assert isinstance(recorder.models[0].module, FastInferenceModel)
    assert recorder.models[0].module.bf16
    assert metrics['mIoU'] == pytest.approx(expected['mIoU'], abs=0.5)


def test_hook_in_training_keeps_checkpoints_and_model_unfolded(tmp_path):
    """Enabled from the config: validation during training runs fast, after EMA swapped its
    weights in; the model that keeps training and the best checkpoint written after validation
    have every BN."""
    cfg = tiny_demo_config(str(tmp_path / 'shapes'), str(tmp_path / 'work'))
    cfg.default_hooks.checkpoint.save_best = 'mIoU'
    cfg.custom_hooks = [dict(type='EMAHook'), dict(type='FastInferenceHook', fuse_bn=True)]
    runner = Runner.from_cfg(cfg)
    recorder = _RecordModel()
    runner.register_hook(recorder)
    runner.train()
    assert recorder.models and all(isinstance(m, FastInferenceModel) for m in recorder.models)
    assert not isinstance(runner.model, FastInferenceModel)
    assert count_bn(runner.model) > 0
    best = [f for f in (tmp_path / 'work').iterdir() if f.name.startswith('best_mIoU')]
    assert len(best) == 1
    model = MODELS.build(cfg.model)
    checkpoint = load_checkpoint(model, str(best[0]), map_location='cpu', strict=True)
    assert checkpoint['state_dict'].keys() == runner.model.state_dict().keys()
    assert osp.isfile(tmp_path / 'work' / 'iter_2.pth')
