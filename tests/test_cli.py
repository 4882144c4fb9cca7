"""deeplabv3_plugin.cli: what each tool option does to the config (the tools run it in
tests/tools/)."""
import copy
import os
import os.path as osp
from unittest import mock

import pytest
from mmengine.config import Config
from mmengine.device import get_device

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.cli import (add_custom_hook, check_checkpoint_arg, enable_amp, enable_tta,
                                  enable_visualization, set_resume, set_test_output_dir,
                                  set_test_output_stride, set_work_dir)
from deeplabv3_plugin.errors import UserInputError

TINY_CONFIG = osp.join(osp.dirname(__file__), 'configs', 'tools_tiny.py')


@pytest.fixture
def cfg():
    return Config.fromfile(TINY_CONFIG)


def test_set_work_dir_priority(cfg):
    set_work_dir(cfg, None, '/x/my_cfg.py')
    assert cfg.work_dir == osp.join('./work_dirs', 'my_cfg')
    cfg.work_dir = 'from_config'
    set_work_dir(cfg, None, '/x/my_cfg.py')
    assert cfg.work_dir == 'from_config'
    set_work_dir(cfg, 'cli', '/x/my_cfg.py')
    assert cfg.work_dir == 'cli'


def test_enable_amp(cfg):
    """float16 AmpOptimWrapper on a GPU; bf16 autocast on a CPU, refused where it is emulated
    unless forced (tools/train.py --amp [--force-bf16])."""
    if get_device() != 'cpu':
        enable_amp(cfg)
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        return
    from deeplabv3_plugin.cpu_features import cpu_features
    if not cpu_features().native_bf16:
        with pytest.raises(UserInputError, match='--amp: on a CPU mixed precision means bf16'):
            enable_amp(cfg)
    enable_amp(cfg, force_bf16=True)
    assert cfg.optim_wrapper.type == 'BF16AutocastOptimWrapper'


def test_set_resume(cfg, tmp_path):
    cfg.work_dir = str(tmp_path)
    set_resume(cfg, None)
    assert cfg.resume is False
    set_resume(cfg, 'auto')  # nothing to resume yet: start from the beginning
    assert cfg.resume is False and cfg.load_from is None
    checkpoint = tmp_path / 'iter_2.pth'
    checkpoint.write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(checkpoint))
    cfg.load_from = 'initial_weights.pth'  # a config's load_from must not win over the run's own
    set_resume(cfg, 'auto')
    assert (cfg.resume, cfg.load_from) == (True, str(checkpoint))
    assert dict(type='CheckpointCompatibilityHook') in cfg.custom_hooks
    with pytest.raises(UserInputError, match=r"--resume checkpoint '.*missing\.pth' does not"):
        set_resume(cfg, str(tmp_path / 'missing.pth'))
    os.remove(checkpoint)
    with pytest.raises(UserInputError, match='last_checkpoint'):
        set_resume(cfg, 'auto')


def test_fresh_start_over_existing_checkpoints_warns(cfg, tmp_path):
    cfg.work_dir = str(tmp_path)
    with mock.patch('deeplabv3_plugin.cli.print_log') as log:
        set_resume(cfg, None)
        assert not log.called
        (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
        set_resume(cfg, None)
    assert cfg.resume is False
    message = log.call_args.args[0]
    assert 'iter_2.pth' in message and 'pass --resume to continue' in message


def test_add_custom_hook_once(cfg):
    add_custom_hook(cfg, dict(type='CheckpointCompatibilityHook'))
    add_custom_hook(cfg, dict(type='CheckpointCompatibilityHook'))
    assert cfg.custom_hooks == [dict(type='CheckpointCompatibilityHook')]


def test_check_checkpoint_arg(tmp_path):
    check_checkpoint_arg('https://example.com/model.pth')  # remote: mmengine downloads it
    with pytest.raises(UserInputError, match=r"checkpoint '.*gone\.pth' does not exist"):
        check_checkpoint_arg(str(tmp_path / 'gone.pth'))


def test_set_test_output_stride_refuses_models_without_the_knob(cfg):
    cfg.model.type = 'EncoderDecoder'
    set_test_output_stride(cfg, None)
    assert 'test_output_stride' not in cfg.model
    with pytest.raises(UserInputError, match="model type 'EncoderDecoder' does not switch its "
                       'output stride'):
        set_test_output_stride(cfg, 8)
    for bad in (0, 12, -8):
        with pytest.raises(UserInputError, match=f'--output-stride {bad}: .*power of two'):
            set_test_output_stride(cfg, bad)


def test_set_test_output_stride_on_the_plugin_segmentor(cfg):
    assert cfg.model.type == 'DeepLabV3'
    set_test_output_stride(cfg, 8)
    assert cfg.model.test_output_stride == 8


def test_set_test_output_stride_asks_the_protocol(cfg):
    """A subclass of DeepLabV3 (through its registry name or as a class) takes the flag."""
    from deeplabv3_plugin.models.segmentors import DeepLabV3

    class _Subclass(DeepLabV3):
        pass

    cfg.model.type = _Subclass
    set_test_output_stride(cfg, 8)
    assert cfg.model.test_output_stride == 8


def test_enable_tta(cfg):
    model = cfg.model
    enable_tta(cfg)
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module == model
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    bare = Config(dict(model=dict(type='EncoderDecoder')))
    with pytest.raises(UserInputError, match='no tta_pipeline and no tta_model'):
        enable_tta(bare)


def test_enable_tta_keeps_the_models_preprocessor(cfg):
    """mmengine gives a model with no data_preprocessor the top-level one (mmseg bases: 512 px);
    under --tta the wrapper must preprocess as the wrapped model does."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg.data_preprocessor = dict(type='SegDataPreProcessor', size=(512, 512))
    cfg.model.data_preprocessor.size = (48, 48)
    enable_tta(cfg)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)  # what Runner.build_model does
    tta = MODELS.build(model_cfg)
    # BaseTTAModel hands its data_preprocessor to the segmentor it wraps, which runs test_step.
    assert tuple(tta.module.data_preprocessor.size) == (48, 48)


def test_enable_visualization_and_out(cfg, tmp_path):
    enable_visualization(cfg, None)
    assert 'draw' not in cfg.default_hooks.visualization
    enable_visualization(cfg, str(tmp_path))
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.interval == 1
    assert cfg.visualizer.save_dir == str(tmp_path)
    cfg.default_hooks.pop('visualization')
    with pytest.raises(UserInputError, match='default_hooks.visualization'):
        enable_visualization(cfg, str(tmp_path))
    set_test_output_dir(cfg, str(tmp_path))
    assert cfg.test_evaluator.output_dir == str(tmp_path)
    assert cfg.test_evaluator.keep_results is True
