"""deeplabv3_plugin.engine.hooks: CheckpointCompatibilityHook, and FastInferenceHook in real
runners (test, val under DDP, TTA, validation during training with EMA)."""
import os.path as osp
import socket

import pytest
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from mmengine.runner import Runner, load_checkpoint
from mmseg.registry import HOOKS, MODELS

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.deploy.fast_inference import FastInferenceModel
from deeplabv3_plugin.engine.hooks import CheckpointCompatibilityHook, FastInferenceHook
from helpers.demo import count_bn, tiny_demo_config


pytestmark = pytest.mark.usefixtures('one_thread')


def test_checkpoint_compatibility_hook_is_registered():
    hook = HOOKS.build(dict(type='CheckpointCompatibilityHook'))
    assert isinstance(hook, CheckpointCompatibilityHook)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
