"""Safe loading of mmengine checkpoints (deeplabv3_plugin.utils.checkpoint).

The checkpoints are written by a real mmengine Runner and read back through mmengine's own
loader (the path ``load_from``, ``resume`` and ``tools/test.py`` take).
"""
import os
import subprocess
import sys
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

import deeplabv3_plugin  # noqa: F401  (registers the loader)
from deeplabv3_plugin.utils.checkpoint import (MMENGINE_CHECKPOINT_GLOBALS,
                                               UnsafeCheckpointError)


class _Linear(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x, y, mode='tensor'):
        out = self.fc(torch.stack(x) if isinstance(x, list) else x).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - torch.as_tensor(y).float())**2).mean())
        return out


class _Points(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.full((2, ), float(i)), y=float(i))


@pytest.fixture(scope='module')
def mmengine_checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('runner')
    runner = Runner(
        model=_Linear(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_Points(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)))
    runner.train()
    return str(work_dir / 'iter_2.pth')


def test_mmengine_checkpoint_loads_weights_only(mmengine_checkpoint):
    ckpt = _load_checkpoint(mmengine_checkpoint, map_location='cpu')
    assert set(ckpt) >= {'state_dict', 'message_hub', 'optimizer', 'meta'}
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    # the statistics methods were rebuilt as the real ones, not as arbitrary attributes
    assert loss._statistics_methods['mean'] is HistoryBuffer.mean
    assert torch.isfinite(torch.tensor(loss.mean()))


def test_torch_global_allowlist_is_left_untouched(mmengine_checkpoint):
    _load_checkpoint(mmengine_checkpoint)
    # torch registers some of its own classes lazily, so only ours are checked: none leaked.
    after = torch.serialization.get_safe_globals()
    leaked = [g for g in MMENGINE_CHECKPOINT_GLOBALS if g in after]
    assert leaked == []
    assert HistoryBuffer not in after and getattr not in after


class _RunsCode:

    def __reduce__(self):
        return (os.system, ('echo should-never-run',))


class _ArbitraryGetattr:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, 'update'))


def test_checkpoint_with_foreign_global_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _RunsCode()}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        _load_checkpoint(str(path))
    message = str(err.value)
    assert str(path) in message
    assert 'posix.system' in message and 'is not allowed' in message
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' in message


def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'payload': _ArbitraryGetattr()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\(HistoryBuffer, 'update'\)"):
        _load_checkpoint(str(path))


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        _load_checkpoint(str(tmp_path / 'nowhere.pth'))


def test_plain_state_dict_still_loads(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save(nn.Linear(2, 1).state_dict(), path)
    assert set(_load_checkpoint(str(path))) == {'weight', 'bias'}


def test_users_escape_hatch_still_works(tmp_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 is the user's own, explicit decision."""
    path = tmp_path / 'trusted.pth'
    torch.save({'payload': Fraction(1, 2)}, path)  # not a global mmengine checkpoints hold
    code = ('import deeplabv3_plugin; from mmengine.runner.checkpoint import _load_checkpoint;'
            f'print(_load_checkpoint({str(path)!r})["payload"])')
    refused = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert refused.returncode != 0 and 'UnsafeCheckpointError' in refused.stderr
    allowed = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                             env={**os.environ, 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'})
    assert allowed.returncode == 0, allowed.stderr
    assert '1/2' in allowed.stdout


def test_torchvision_scheme_needs_no_torchvision(tmp_path, monkeypatch):
    """`torchvision://resnet50` resolves through mmengine's bundled URL table and the hub cache."""
    # The point is that the scheme works without torchvision: make sure that path is exercised.
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    weights = nn.Conv2d(3, 4, 1).state_dict()
    torch.save(weights, cache / 'resnet50-0676ba61.pth')  # the file name of the URL
    loaded = _load_checkpoint('torchvision://resnet50', map_location='cpu')
    assert torch.equal(loaded['weight'], weights['weight'])
    with pytest.raises(KeyError, match="unknown torchvision model 'resnet5O'.*resnet101"):
        _load_checkpoint('torchvision://resnet5O')
