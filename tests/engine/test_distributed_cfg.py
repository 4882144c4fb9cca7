"""deeplabv3_plugin.engine.distributed on configs and environments: SyncBN on CPU, the wrapper,
gloo, each launcher's variables (engine/test_distributed.py runs the tools under torchrun)."""
import pytest
from mmengine.config import Config

from deeplabv3_plugin.engine import (convert_sync_bn_cfg, prepare_cpu_distributed_cfg,
                                     torch_dist_env)
from deeplabv3_plugin.errors import UserInputError
from helpers.tools import TINY_CONFIG


@pytest.fixture
def cfg():
    return Config.fromfile(TINY_CONFIG)


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
