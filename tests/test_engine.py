"""Unit tests of deeplabv3_plugin.engine: option checks, checkpoint checks, CPU distributed set-up.

The tools that use these are run as subprocesses in test_tools.py, test_distributed.py and
test_resume.py; here each piece is pinned on its own, on configs and tiny modules.
"""
import copy
import os
import os.path as osp
import socket
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import DefaultScope
from mmseg.models import SegTTAModel
from mmseg.registry import HOOKS, MODEL_WRAPPERS, MODELS

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.checkpoint.compatibility import (CheckpointMismatchError,
                                                       check_state_dict_fits, compare_state_dicts)
from deeplabv3_plugin.cli import (add_custom_hook, check_checkpoint_arg, enable_amp, enable_tta,
                                  enable_visualization, set_resume, set_test_output_dir,
                                  set_test_output_stride, set_work_dir)
from deeplabv3_plugin.config_checks import cfg_option_problem, check_cfg_options, load_config
from deeplabv3_plugin.engine import (CheckpointCompatibilityHook, CPUSafeDDP, convert_sync_bn_cfg,
                                     prepare_cpu_distributed_cfg, torch_dist_env)
from deeplabv3_plugin.errors import UserInputError

TINY_CONFIG = osp.join(osp.dirname(__file__), 'configs', 'tools_tiny.py')


@pytest.fixture
def cfg():
    return Config.fromfile(TINY_CONFIG)


# --------------------------------------------------------------------------- --cfg-options keys
def test_cfg_option_existing_and_new_keys_pass(cfg):
    as_dict = cfg.to_dict()
    assert cfg_option_problem(as_dict, 'model.backbone.depth') is None
    assert cfg_option_problem(as_dict, 'train_dataloader.dataset.pipeline.2.crop_size') is None
    # New keyword arguments with no look-alike sibling are a legitimate use.
    assert 'output_stride' in as_dict['model'] and 'test_output_stride' not in as_dict['model']
    assert cfg_option_problem(as_dict, 'model.test_output_stride') is None
    assert cfg_option_problem(as_dict, 'model.backbone.norm_eval') is None
    assert cfg_option_problem(as_dict, 'work_dir') is None


def test_cfg_option_typo_of_existing_leaf(cfg):
    problem = cfg_option_problem(cfg.to_dict(), 'model.backbone.dept')
    assert "'model.backbone' has no key 'dept'" in problem
    assert "'model.backbone.depth'" in problem
    problem = cfg_option_problem(cfg.to_dict(), 'train_cfg.max_iter')
    assert "'train_cfg.max_iters'" in problem


def test_cfg_option_missing_parent(cfg):
    problem = cfg_option_problem(cfg.to_dict(), 'model.backbon.depth')
    assert "'model' has no key 'backbon'" in problem
    assert "Did you mean 'model.backbone'" in problem
    problem = cfg_option_problem(cfg.to_dict(), 'nothing_like_this.x')
    assert 'the top level of the config' in problem
    assert 'Its keys are:' in problem and 'model' in problem


def test_cfg_option_bad_list_index_and_scalar_parent(cfg):
    problem = cfg_option_problem(cfg.to_dict(), 'train_dataloader.dataset.pipeline.9.type')
    assert 'is a list of 5 items' in problem and '0..4' in problem
    problem = cfg_option_problem(cfg.to_dict(), 'train_cfg.max_iters.value')
    assert "'train_cfg.max_iters' is 4 (a int)" in problem


def test_check_cfg_options_lists_every_problem(cfg):
    check_cfg_options(cfg, None)
    check_cfg_options(cfg, {'model.backbone.depth': 34})
    with pytest.raises(UserInputError) as info:
        check_cfg_options(cfg, {'model.backbone.dept': 34, 'model.decode_head.chanels': 4,
                                'model.backbone.depth': 34}, 'cfg.py')
    message = str(info.value)
    assert "2 key(s) do not fit the keys of config 'cfg.py'" in message
    assert "'model.backbone.dept'" in message and "'model.decode_head.channels'" in message


def test_load_config_missing_file(tmp_path):
    with pytest.raises(UserInputError, match=r"config file '.*nope\.py' does not exist"):
        load_config(str(tmp_path / 'nope.py'))
    with pytest.raises(UserInputError, match='is a directory'):
        load_config(str(tmp_path))
    assert load_config(TINY_CONFIG).model.type


# --------------------------------------------------------------------------- checkpoint checks
class _Net(nn.Module):

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)


def test_compare_state_dicts_kinds():
    model = _Net(4).state_dict()
    same = compare_state_dicts(model, _Net(4).state_dict())
    assert not same
    other = _Net(8).state_dict()
    other['extra.weight'] = torch.zeros(1)
    del other['conv.bias']
    del other['bn.num_batches_tracked']  # ignored, as mmengine does
    mismatch = compare_state_dicts(model, other)
    assert mismatch.missing == ['conv.bias']
    assert mismatch.unexpected == ['extra.weight']
    assert ('conv.weight', (8, 3, 3, 3), (4, 3, 3, 3)) in mismatch.shape
    text = mismatch.describe()
    assert 'conv.weight: checkpoint (8, 3, 3, 3) vs model (4, 3, 3, 3)' in text
    assert 'conv.bias' in text and 'extra.weight' in text


def test_check_state_dict_fits_through_prefix_and_wrappers():
    model = _Net(4)
    ddp_style = {f'module.{k}': v for k, v in model.state_dict().items()}
    check_state_dict_fits(model, {'state_dict': ddp_style})
    with DefaultScope.overwrite_default_scope('mmseg'):
        tta = SegTTAModel(module=MODELS.build(Config.fromfile(TINY_CONFIG).model))
    check_state_dict_fits(tta, {'state_dict': tta.module.state_dict()})
    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict_fits(model, {'state_dict': _Net(8).state_dict()}, source="'x.pth'")
    message = str(info.value)
    assert "Checkpoint 'x.pth' does not fit the _Net model" in message
    assert 'bn.weight: checkpoint (8,) vs model (4,)' in message


def test_checkpoint_compatibility_hook_is_registered():
    hook = HOOKS.build(dict(type='CheckpointCompatibilityHook'))
    assert isinstance(hook, CheckpointCompatibilityHook)


# --------------------------------------------------------------------------- CPU distributed
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def gloo_group():
    """A one-process gloo group, enough to construct DDP wrappers."""
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_cpu_safe_ddp_registered_where_runner_looks():
    assert MODEL_WRAPPERS.get('CPUSafeDDP') is CPUSafeDDP
    # Runner.wrap_model calls get() on mmengine's root registry, which does not search children.
    assert MMENGINE_MODEL_WRAPPERS.get('CPUSafeDDP') is CPUSafeDDP
    assert issubclass(CPUSafeDDP, MMDistributedDataParallel)


def test_cpu_safe_ddp_drops_device_ids_on_cpu(gloo_group):
    # What Runner.wrap_model passes for any DDP subclass: device_ids=[LOCAL_RANK].
    wrapped = MODEL_WRAPPERS.build(dict(type='CPUSafeDDP', broadcast_buffers=False),
                                   default_args=dict(module=_Net(), device_ids=[0]))
    assert wrapped.device_ids is None
    assert isinstance(wrapped.module, _Net)
    with pytest.raises(ValueError, match='device_ids'):
        MMDistributedDataParallel(module=_Net(), device_ids=[0])  # what CPUSafeDDP avoids


def test_cpu_safe_ddp_refuses_sync_bn_on_cpu(gloo_group):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    with pytest.raises(ValueError, match=r"SyncBatchNorm layers \(1\).*type='BN'"):
        CPUSafeDDP(module=model, device_ids=[0])


def test_convert_sync_bn_cfg():
    cfg = Config(dict(model=dict(backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                                 heads=[dict(norm_cfg=dict(type='MMSyncBN')),
                                        dict(norm_cfg=dict(type='GN', num_groups=2))])))
    converted = [p for key in cfg.keys() for p in convert_sync_bn_cfg(cfg[key], key)]
    assert converted == ['model.backbone.norm_cfg', 'model.heads.0.norm_cfg']
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.model.heads[1].norm_cfg.type == 'GN'


def test_prepare_cpu_distributed_cfg(cfg):
    cfg.model.backbone.norm_cfg = dict(type='SyncBN', requires_grad=True)
    cfg.find_unused_parameters = True
    cfg.sync_bn = 'torch'
    changes = prepare_cpu_distributed_cfg(cfg)
    assert cfg.model_wrapper_cfg == dict(type='CPUSafeDDP', broadcast_buffers=False,
                                         find_unused_parameters=True)
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert 'sync_bn' not in cfg
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert any('model.backbone.norm_cfg.type: SyncBN' in c for c in changes)
    assert any("'nccl' -> 'gloo'" in c for c in changes)
    # An explicit MMDistributedDataParallel keeps its arguments, only the type changes.
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=True)
    prepare_cpu_distributed_cfg(cfg)
    assert cfg.model_wrapper_cfg == dict(type='CPUSafeDDP', broadcast_buffers=True)


def test_torch_dist_env_per_launcher():
    torchrun = dict(RANK='1', WORLD_SIZE='2', LOCAL_RANK='1', MASTER_ADDR='h', MASTER_PORT='1')
    assert torch_dist_env('pytorch', torchrun) == torchrun
    with pytest.raises(UserInputError, match='MASTER_ADDR, MASTER_PORT are not set.*torchrun'):
        torch_dist_env('pytorch', dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0'))
    slurm = dict(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1',
                 SLURM_NODELIST='node[1-2]')
    env = torch_dist_env('slurm', slurm, resolve_host=lambda nodes: 'node1')
    assert env == dict(RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node1',
                       MASTER_PORT='29500')
    env = torch_dist_env('slurm', dict(slurm, MASTER_ADDR='head', MASTER_PORT='1234'),
                         resolve_host=lambda nodes: pytest.fail('MASTER_ADDR given'))
    assert (env['MASTER_ADDR'], env['MASTER_PORT']) == ('head', '1234')
    mpi = dict(OMPI_COMM_WORLD_RANK='0', OMPI_COMM_WORLD_SIZE='2', OMPI_COMM_WORLD_LOCAL_RANK='0',
               MASTER_ADDR='head')
    assert torch_dist_env('mpi', mpi)['WORLD_SIZE'] == '2'
    with pytest.raises(UserInputError, match="'none' is not a distributed launcher"):
        torch_dist_env('none', {})


# --------------------------------------------------------------------------- tool options
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
