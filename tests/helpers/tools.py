"""Shared helpers of the tool tests: a tiny generated VOC dataset and running tools as users do.

Used by the tests of tools/, engine/test_distributed.py, engine/test_resume.py and others.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
from .voc import write_voc

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TINY_CONFIG = osp.join(REPO_ROOT, 'tests', 'configs', 'tools_tiny.py')
PAPER_CONFIG = osp.join(REPO_ROOT, 'configs', 'deeplabv3',
                        'deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py')
TRAIN_TOOL = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST_TOOL = osp.join(REPO_ROOT, 'tools', 'test.py')
PYTHON = sys.executable
BIN_DIR = osp.dirname(PYTHON)


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module, to call its ``main(argv)`` in-process.

    Used for the error paths that stop before any training starts: the same code as the
    subprocess, without paying the interpreter start-up for each case.
    """
    spec = importlib.util.spec_from_file_location(f'_tool_{name}',
                                                  osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_voc_dataset(root: str, num_train: int = 4, num_val: int = 2, size: int = 40,
                     seed: int = 0) -> str:
    """VOC-layout ``train``/``val`` splits (``img_000``...) of random VOC classes; returns ``root``."""
    rng = np.random.default_rng(seed)
    labels = [[0] + rng.integers(1, 21, 2).tolist() for _ in range(num_train + num_val)]
    write_voc(root, labels[:num_train], 'train', size, name_format='img_{:03d}')
    write_voc(root, labels[num_train:], 'val', size, start=num_train, name_format='img_{:03d}')
    return root


def make_voc_aug_dataset(root: str) -> str:
    """:func:`make_voc_dataset` plus the ``aug`` split (SegmentationClassAug) of the trainaug
    configs; returns ``root``."""
    make_voc_dataset(root)
    rng = np.random.default_rng(1)
    labels = [[0] + rng.integers(1, 21, 2).tolist() for _ in range(4)]
    write_voc(root, labels, 'aug', 40, start=100, name_format='img_{:03d}')
    os.symlink('SegmentationClass', osp.join(root, 'SegmentationClassAug'))
    return root


def tiny_paper_options(data_root: str, size: int = 32) -> List[str]:
    """``--cfg-options`` that run :data:`PAPER_CONFIG` in seconds on :func:`make_voc_aug_dataset`:
    ResNet-50 at base width 4, no download, ``size`` px crops, one iteration; its batch, lr and
    geometry stay the config's."""
    crop = f'({size},{size})'
    options = ['model.backbone.depth=50', 'model.backbone.base_channels=4',
               'model.backbone.stem_channels=8', 'model.backbone.init_cfg=None',
               'model.decode_head.in_channels=128', 'model.decode_head.channels=8',
               f'model.data_preprocessor.size={crop}',
               f'model.data_preprocessor.test_cfg.size={crop}',
               'train_cfg.max_iters=1', 'train_cfg.val_interval=1']
    for index in (0, 1):  # train + aug
        dataset = f'train_dataloader.dataset.datasets.{index}'
        options += [f'{dataset}.data_root={data_root}', f'{dataset}.pipeline.4.crop_size={crop}',
                    f'{dataset}.pipeline.5.size={crop}']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    options += [f'{loader}.dataset.data_root={data_root}'
                for loader in ('val_dataloader', 'test_dataloader')]
    return options


def tool_env(data_root: str) -> Dict[str, str]:
    """The environment of a tool subprocess: the tiny dataset, the venv's bin first, no GPU."""
    env = dict(os.environ)
    env['DEEPLABV3_TOOLS_DATA'] = data_root
    env['PATH'] = BIN_DIR + os.pathsep + env.get('PATH', '')
    env['CUDA_VISIBLE_DEVICES'] = ''  # the tests pin the CPU path, also on a GPU machine
    env['OMP_NUM_THREADS'] = '1'
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def run(cmd: Sequence[str], env: Dict[str, str], cwd: Optional[str] = None,
        timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``cmd``, capturing its output as text."""
    return subprocess.run(list(cmd), env=env, cwd=cwd or REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail the test with the tool's output when it did not exit with status 0."""
    assert proc.returncode == 0, (
        f'{" ".join(proc.args)} exited with {proc.returncode}\n--- stdout ---\n'
        f'{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


def train_cmd(work_dir: str, *extra: str, config: str = TINY_CONFIG) -> List[str]:
    return [PYTHON, TRAIN_TOOL, config, '--work-dir', work_dir, *extra]


def eval_cmd(checkpoint: str, work_dir: str, *extra: str, config: str = TINY_CONFIG) -> List[str]:
    return [PYTHON, TEST_TOOL, config, checkpoint, '--work-dir', work_dir, *extra]


def snapshot(directory: str) -> Dict[str, bytes]:
    """Every file under ``directory`` with its contents, to prove nothing was changed."""
    files = {}
    for base, _, names in os.walk(directory):
        for name in names:
            path = osp.join(base, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, directory)] = f.read()
    return files
