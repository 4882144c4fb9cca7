"""The training batch: the config's total kept by the plugin's tools on any number of processes,
and TrainingBatchHook's warning inside runs of mmseg's own tools (deeplabv3_plugin.engine
.batch_size). The 2-process run of a paper config is in engine/test_distributed.py."""
import copy
import os.path as osp
import re
import shutil

import pytest
from mmengine.config import Config

from deeplabv3_plugin.engine import keep_total_batch, launcher_world_size, split_total_batch
from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.paper.tables import find_row
from helpers.tools import (BIN_DIR, PAPER_CONFIG, check_ok, load_tool, make_voc_aug_dataset,
                             run, tiny_paper_options, tool_env)


@pytest.fixture(scope='module')
def paper_cfg() -> Config:
    return Config.fromfile(PAPER_CONFIG)


@pytest.mark.parametrize('world_size,per_process', [(1, 16), (2, 8), (4, 4), (16, 1)])
def test_total_batch_is_shared_between_the_processes(world_size, per_process):
    split = split_total_batch(16, world_size)
    assert (split.world_size, split.per_process, split.total) == (world_size, per_process, 16)


def test_a_total_the_processes_cannot_share_is_refused():
    with pytest.raises(UserInputError) as error:
        split_total_batch(16, 3)
    message = str(error.value)
    assert 'train_dataloader.batch_size=16 is the total batch' in message
    assert '3 processes cannot share it' in message and '[1, 2, 4, 8, 16]' in message
    assert '--cfg-options batch_size_per_process=True' in message and '(total 48)' in message


def test_paper_config_keeps_its_total_on_four_processes(paper_cfg):
    cfg = copy.deepcopy(paper_cfg)
    split = keep_total_batch(cfg, 4)
    assert (split.per_process, split.total) == (4, 16)
    assert cfg.train_dataloader.batch_size == 4 and cfg.batch_size_per_process is True
    # The config now says per process: applying the rule again changes nothing.
    assert keep_total_batch(cfg, 4).total == 16 and cfg.train_dataloader.batch_size == 4


def test_per_process_semantics_on_request(paper_cfg):
    cfg = copy.deepcopy(paper_cfg)
    cfg.merge_from_dict({'batch_size_per_process': True})
    split = keep_total_batch(cfg, 4)
    assert (split.per_process, split.total) == (16, 64)
    assert cfg.train_dataloader.batch_size == 16


def test_launcher_world_size():
    assert launcher_world_size('none', {}) == 1
    env = dict(RANK='0', WORLD_SIZE='4', LOCAL_RANK='0', MASTER_ADDR='h', MASTER_PORT='1')
    assert launcher_world_size('pytorch', env) == 4
    slurm = dict(SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_LOCALID='3', SLURM_NODELIST='n[1-2]')
    assert launcher_world_size('slurm', slurm) == 8
    with pytest.raises(UserInputError, match='WORLD_SIZE'):
        launcher_world_size('pytorch', {})


def test_paper_rows_state_their_batch():
    assert find_row('Table 5', 'MG(1,2,4), ASPP(6,12,18), image pooling').batch == 16
    assert find_row('Table 9', 'batch 4').batch == 4
    assert find_row('Table 10', 'train OS=32, eval OS=8').batch == 24
    assert find_row('Table 12', 'OS=16').batch is None  # the paper does not say


def test_train_tool_refuses_three_processes_for_a_total_of_16(monkeypatch, tmp_path):
    for name, value in dict(RANK='0', WORLD_SIZE='3', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT='29999').items():
        monkeypatch.setenv(name, value)
    train = load_tool('train')
    with pytest.raises(UserInputError, match=r'3 processes cannot share it equally'):
        train.main([PAPER_CONFIG, '--launcher', 'pytorch', '--work-dir', str(tmp_path)])


@pytest.mark.slow
def test_mmseg_tools_run_is_warned_when_its_total_is_not_the_paper_rows(tmp_path):
    """`mim train mmseg` reads train_dataloader.batch_size per process and cannot be changed;
    the hook of the _base_ runtime says, from inside the run, that batch 2 is not Table 5's 16."""
    mim = osp.join(BIN_DIR, 'mim')
    assert osp.isfile(mim) or shutil.which('mim'), 'openmim is part of the environment'
    data = make_voc_aug_dataset(str(tmp_path / 'voc'))
    proc = check_ok(run([mim, 'train', 'mmseg', PAPER_CONFIG, '--work-dir', str(tmp_path / 'run'),
                         '--cfg-options', *tiny_paper_options(data),
                         'train_dataloader.batch_size=2'], tool_env(data), timeout=300))
    output = proc.stdout + proc.stderr
    assert 'Training batch: world size 1, 2 images per process, total batch 2, lr 0.007' in output
    assert re.search(r'The total batch 2 \(1 process\(es\) x 2\) is not the batch 16 of the '
                     r"paper row this config reproduces \(Table 5, 'MG\(1,2,4\), "
                     r"ASPP\(6,12,18\), image pooling'", output)
