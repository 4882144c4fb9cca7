"""Safe loading of real checkpoints (deeplabv3_plugin.checkpoint.loader, deeplabv3_plugin.runtime).

The checkpoints are written by a real mmengine Runner and read back through mmengine's own
loader (the path ``load_from``, ``resume`` and ``tools/test.py`` take). Crafted files are in
tests/checkpoint/test_loader_attacks.py.
"""
import os
import subprocess
import sys
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

import deeplabv3_plugin.runtime  # noqa: F401  (the opt-in safe loader)
from deeplabv3_plugin.checkpoint.loader import (CheckpointError, UnsafeCheckpointError,
                                               load_local_checkpoint)
from deeplabv3_plugin.checkpoint.meta import inert_meta


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


def _same(a, b) -> bool:
    """Deep equality of what checkpoints hold (arrays, tensors, HistoryBuffers, containers)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, HistoryBuffer):
        return a.max_length == b.max_length and all(map(_same, a.data, b.data))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a) and \
            _same(getattr(a, '_metadata', None), getattr(b, '_metadata', None))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b and (not isinstance(a, np.generic) or a.dtype == b.dtype)


def _trusted(path):
    return torch.load(path, weights_only=False)  # files these tests wrote themselves


def test_mmengine_checkpoint_loads_exactly(mmengine_checkpoint):
    ckpt = _load_checkpoint(mmengine_checkpoint, map_location='cpu')
    assert set(ckpt) >= {'state_dict', 'message_hub', 'optimizer', 'meta'}
    # the routes drop the config text mmengine would run (tests/checkpoint/test_routes.py)
    assert _same(ckpt, inert_meta(_trusted(mmengine_checkpoint)))
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and loss.statistics('mean') == loss.mean()
    assert isinstance(ckpt['state_dict'], dict) and hasattr(ckpt['state_dict'], '_metadata')


def test_legacy_format_and_plain_state_dicts_load(mmengine_checkpoint, tmp_path):
    legacy = tmp_path / 'legacy.pth'
    torch.save(_trusted(mmengine_checkpoint), legacy, _use_new_zipfile_serialization=False)
    assert _same(load_local_checkpoint(str(legacy)), _trusted(mmengine_checkpoint))
    weights = tmp_path / 'weights.pth'
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), weights)
    assert _same(_load_checkpoint(str(weights)), _trusted(weights))


def _with_numpy1_names(path, tmp_path):
    """The checkpoint as numpy 1.x writes it: ``numpy.core.multiarray`` instead of ``_core``."""
    out = tmp_path / 'numpy1.pth'
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            dst.writestr(info.filename, data)
    return str(out)


def test_checkpoints_written_under_numpy1_load(mmengine_checkpoint, tmp_path):
    loaded = _load_checkpoint(_with_numpy1_names(mmengine_checkpoint, tmp_path))
    assert _same(loaded, inert_meta(_trusted(mmengine_checkpoint)))


def test_resume_restores_the_message_hub(mmengine_checkpoint, tmp_path):
    """``resume`` through the safe loader: the scalars of the message hub come back."""
    runner = Runner(
        model=_Linear(), work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=_Points(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=2), default_hooks=dict(checkpoint=None))
    runner.resume(mmengine_checkpoint)
    saved = _trusted(mmengine_checkpoint)['message_hub']['log_scalars']['train/loss']
    resumed = runner.message_hub.get_scalar('train/loss')
    assert runner.iter == 2 and _same(resumed, saved)


def test_refusals_name_the_file_and_the_escape_hatch(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'payload': Fraction(1, 2)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        _load_checkpoint(str(path))
    message = str(err.value)
    assert str(path) in message and "the global 'fractions.Fraction'" in message
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1' in message


def test_corrupt_files_raise_the_plugins_error(mmengine_checkpoint, tmp_path):
    with open(mmengine_checkpoint, 'rb') as f:
        data = f.read()
    for name, content in [('truncated', data[:len(data) // 2]), ('magic', b'\x80\x02K\x01.'),
                          ('empty', b''), ('text', b'not a checkpoint\n')]:
        path = tmp_path / f'{name}.pth'
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=str(path)):
            _load_checkpoint(str(path))


def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / 'scripted.pt'
    torch.jit.save(torch.jit.script(nn.Linear(2, 1)), str(path))
    with pytest.raises(UnsafeCheckpointError, match='TorchScript archive'):
        _load_checkpoint(str(path))


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        _load_checkpoint(str(tmp_path / 'nowhere.pth'))


_CHILD_SIDE_EFFECTS = '''
import sys, torch
from fractions import Fraction
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint
import deeplabv3_plugin.runtime
HistoryBuffer()  # mmengine's defaults, as after any training step
from deeplabv3_plugin.checkpoint.safe_globals import torch_safe_globals
# the user's own entries: the real HistoryBuffer must not win over the stand-in by set order, and
# entries equal to the stand-ins must still be there afterwards
torch.serialization.add_safe_globals([Fraction, HistoryBuffer, *torch_safe_globals()])
before = (dict(HistoryBuffer._statistics_methods), list(torch.serialization.get_safe_globals()),
          dict(vars(HistoryBuffer)))
for path in sys.argv[1:]:
    try:
        _load_checkpoint(path)
    except Exception as err:
        print('RESULT', type(err).__name__)
after = (dict(HistoryBuffer._statistics_methods), list(torch.serialization.get_safe_globals()),
         dict(vars(HistoryBuffer)))
# torch's first weights-only load registers its own DTensor entries: compare what is ours
assert before[0] == after[0] and before[2] == after[2], (before, after)
assert set(before[1]) <= set(after[1]), (before[1], after[1])
assert len(after[1]) == len(set(after[1])), after[1]
assert Fraction in torch.serialization.get_safe_globals()
print('RESULT unchanged')
'''


@pytest.mark.slow
def test_loading_changes_nothing_in_the_process(mmengine_checkpoint, tmp_path):
    """No class attribute, no torch safe-globals entry of the user's, is touched by a load."""
    from helpers.pickles import Ops, write_checkpoint
    poison = Ops().glob('mmengine.logging.history_buffer', 'HistoryBuffer').empty_tuple().newobj()
    poison.empty_dict().mark().text('statistics_methods').empty_dict().mark().text('__init__')
    poison.glob('__builtin__', 'getattr').mark().glob('mmengine.logging.history_buffer',
                                                      'HistoryBuffer')
    poison.text('min').tuple_().reduce().setitems().setitems().build()
    poisoned = write_checkpoint(str(tmp_path / 'poison.pth'), bytes(poison), 'zip')
    for seed in '012':  # torch resolves a name held twice by set order, which the seed changes
        proc = subprocess.run([sys.executable, '-c', _CHILD_SIDE_EFFECTS, poisoned,
                               mmengine_checkpoint], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONHASHSEED=seed))
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = [line.split()[1] for line in proc.stdout.splitlines()
                   if line.startswith('RESULT')]
        assert results == ['UnsafeCheckpointError', 'unchanged'], (seed, proc.stdout)


def test_importing_the_plugin_leaves_mmengine_alone():
    """``import deeplabv3_plugin`` registers components only; the runtime module is the opt-in."""
    code = '''
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner.checkpoint import CheckpointLoader
before = dict(CheckpointLoader._schemes)
import deeplabv3_plugin
from mmseg.registry import MODELS
assert MODELS.get('DeepLabV3Head') is not None
assert CheckpointLoader._schemes == before and MODEL_WRAPPERS.get('CPUSafeDDP') is None
import deeplabv3_plugin.runtime
from deeplabv3_plugin.checkpoint.routes import load_from_local
assert CheckpointLoader._schemes[''] is load_from_local
assert MODEL_WRAPPERS.get('CPUSafeDDP') is not None
print('ok')
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-3000:]


@pytest.mark.slow
def test_users_escape_hatch_still_works(tmp_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 is the user's own, explicit decision."""
    path = tmp_path / 'trusted.pth'
    torch.save({'payload': Fraction(1, 2)}, path)  # not a global mmengine checkpoints hold
    code = ('import deeplabv3_plugin.runtime; from mmengine.runner.checkpoint import '
            f'_load_checkpoint; print(_load_checkpoint({str(path)!r})["payload"])')
    refused = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert refused.returncode != 0 and 'UnsafeCheckpointError' in refused.stderr
    allowed = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                             env={**os.environ, 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'})
    assert allowed.returncode == 0, allowed.stderr
    assert '1/2' in allowed.stdout
