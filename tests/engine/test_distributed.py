"""Distributed training and testing on CPUs: tools/dist_train.sh and dist_test.sh, 2 processes.

Stock mmengine 0.10.7 cannot run ``--launcher pytorch`` on CPUs (cuda set_device, DDP device_ids,
SyncBN); the tools fix that through deeplabv3_plugin.engine.distributed. The run here starts from
a config with SyncBN, as mmseg's configs have, to cover the conversion too.
"""
import glob
import os
import os.path as osp
import re
import socket

import pytest
import torch

import deeplabv3_plugin.runtime  # noqa: F401  (the safe checkpoint loader the tools use)
from helpers.tools import (PAPER_CONFIG, PYTHON, REPO_ROOT, TINY_CONFIG, check_ok,
                             make_voc_aug_dataset, make_voc_dataset, run, tiny_paper_options,
                             tool_env, train_cmd)

DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope='module')
def dist_env(tmp_path_factory):
    env = tool_env(make_voc_dataset(str(tmp_path_factory.mktemp('voc'))))
    env['PYTHON'] = PYTHON  # the interpreter dist_*.sh runs torchrun with
    return env


@pytest.fixture(scope='module')
def dist_trained(tmp_path_factory, dist_env):
    work_dir = str(tmp_path_factory.mktemp('dist_train'))
    env = dict(dist_env, PORT=_free_port())
    proc = run(['bash', DIST_TRAIN, TINY_CONFIG, '2', '--work-dir', work_dir, '--cfg-options',
                'model.backbone.norm_cfg.type=SyncBN', 'model.decode_head.norm_cfg.type=SyncBN'],
               env, timeout=300)
    return work_dir, check_ok(proc).stdout + proc.stderr


def test_dist_train_two_cpu_processes(dist_trained):
    work_dir, output = dist_trained
    assert 'Distributed launcher: pytorch' in output
    assert re.search(r'Distributed training: True', output)
    assert 'world size 2' in output
    assert "model_wrapper_cfg = dict(type='CPUSafeDDP')" in output
    assert 'model.backbone.norm_cfg.type: SyncBN' in output
    assert 'model.decode_head.norm_cfg.type: SyncBN' in output
    assert "env_cfg.dist_cfg.backend: 'nccl' -> 'gloo'" in output
    assert 'Iter(train) [4/4]' in output
    # The same checkpoint a single-process run writes (rank 0 only, DDP prefix stripped).
    from mmengine.runner.checkpoint import _load_checkpoint
    checkpoint = _load_checkpoint(osp.join(work_dir, 'iter_4.pth'), map_location='cpu')
    assert checkpoint['meta']['iter'] == 4
    assert not any(k.startswith('module.') for k in checkpoint['state_dict'])
    bn = [k for k in checkpoint['state_dict'] if k.endswith('running_mean')]
    assert bn and all(torch.isfinite(checkpoint['state_dict'][k]).all() for k in bn)
    dumped = glob.glob(osp.join(work_dir, 'tools_tiny.py'))
    assert dumped and "type='CPUSafeDDP'" in open(dumped[0]).read()


@pytest.mark.slow
def test_dist_train_keeps_the_paper_configs_total_batch(tmp_path):
    """The paper's batch is 16 images in all: two processes load 8 each (tiny data and widths
    through --cfg-options; batch, lr and geometry are the config's)."""
    data = make_voc_aug_dataset(str(tmp_path / 'voc'))
    env = dict(tool_env(data), PYTHON=PYTHON, PORT=_free_port())
    work_dir = str(tmp_path / 'run')
    proc = run(['bash', DIST_TRAIN, PAPER_CONFIG, '2', '--work-dir', work_dir, '--cfg-options',
                *tiny_paper_options(data)], env, timeout=300)
    output = check_ok(proc).stdout + proc.stderr
    assert 'Training batch: world size 2, 8 images per process, total batch 16, lr 0.007' in output
    assert 'is not the batch 16 of the paper row' not in output
    assert 'Iter(train) [1/1]' in output
    # The dumped config says what each process loaded.
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(work_dir, osp.basename(PAPER_CONFIG)))
    assert cfg.train_dataloader.batch_size == 8 and cfg.batch_size_per_process is True


@pytest.mark.slow
def test_dist_test_two_cpu_processes(dist_trained, dist_env, tmp_path):
    work_dir, _ = dist_trained
    env = dict(dist_env, PORT=_free_port())
    proc = check_ok(run(['bash', DIST_TEST, TINY_CONFIG, osp.join(work_dir, 'iter_4.pth'), '2',
                         '--work-dir', str(tmp_path)], env, timeout=300))
    output = proc.stdout + proc.stderr
    assert 'Distributed training: True' in output
    # Both validation images are evaluated once in total across the two processes.
    assert re.search(r'Iter\(test\) \[1/1\]', output)
    assert re.search(r'mIoU: \d', output)


def test_dist_scripts_print_usage():
    proc = run(['bash', DIST_TRAIN, TINY_CONFIG], dict(os.environ))
    assert proc.returncode == 2 and 'usage: bash' in proc.stderr
    proc = run(['bash', DIST_TEST, TINY_CONFIG, 'ckpt.pth'], dict(os.environ))
    assert proc.returncode == 2 and 'usage: bash' in proc.stderr


@pytest.mark.slow
def test_slurm_launcher_on_cpu(dist_env, tmp_path):
    # One srun task, as Slurm describes it: SLURM_* variables, no torchrun variables.
    env = dict(dist_env, SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
               SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1', MASTER_PORT=_free_port())
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(name, None)
    proc = check_ok(run(train_cmd(str(tmp_path), '--launcher', 'slurm', '--cfg-options',
                                  'train_cfg.max_iters=2', 'train_cfg.val_interval=2'), env))
    output = proc.stdout + proc.stderr
    assert 'Distributed launcher: slurm' in output and 'Distributed training: True' in output
    assert 'CPU distributed run (slurm, world size 1)' in output
    assert osp.isfile(osp.join(str(tmp_path), 'iter_2.pth'))
