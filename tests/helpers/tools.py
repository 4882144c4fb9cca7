"""Shared helpers of the tool tests: a tiny generated VOC dataset and running tools as users do.

Used by the tests of tools/, engine/test_distributed.py, engine/test_resume.py and others.
"""
import atexit
import importlib.util
import os
import os.path as osp
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from . import REPO_ROOT
from .voc import write_voc

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
    """VOC-layout ``train``/``val`` splits (``img_000``...) of random VOC classes; returns
    ``root``."""
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
    """Run ``cmd`` in a process of its own, capturing its output as text. ``python tools/*.py``
    runs in a fork of the warm tool server (:mod:`helpers.tool_server`), skipping the 4 s of
    imports, unless its ``PYTHONPATH`` adds more than ``tests/`` to this process's (it may hide a
    module) or ``DEEPLABV3_TESTS_COLD_TOOLS`` is set."""
    cmd, cwd = list(cmd), cwd or REPO_ROOT
    added = [path for path in env.get('PYTHONPATH', '').split(os.pathsep)
             if path not in os.environ.get('PYTHONPATH', '').split(os.pathsep)]
    warm = (len(cmd) > 1 and cmd[0] == PYTHON and osp.dirname(osp.abspath(cmd[1])) == TOOLS_DIR
            and set(added) <= {'', TESTS_DIR} and not os.environ.get('DEEPLABV3_TESTS_COLD_TOOLS'))
    if not warm:
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    return _run_warm(cmd, env, cwd, timeout)


TOOLS_DIR = osp.join(REPO_ROOT, 'tools')
TESTS_DIR = osp.join(REPO_ROOT, 'tests')
_server: Optional[Tuple[subprocess.Popen, Any]] = None


def _tool_server() -> Tuple[subprocess.Popen, Any]:
    global _server
    if _server is None or _server[0].poll() is not None:
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen([PYTHON, osp.join(osp.dirname(__file__), 'tool_server.py'),
                                 str(write_fd)], stdin=subprocess.PIPE, pass_fds=(write_fd, ),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=REPO_ROOT)
        os.close(write_fd)
        _server = proc, os.fdopen(read_fd, 'rb', buffering=0)
        atexit.register(proc.kill)
    return _server


def _reply(replies, timeout: Optional[float] = None) -> Optional[int]:
    if not select.select([replies], [], [], timeout)[0]:
        return None
    data = b''
    while len(data) < 8:
        chunk = replies.read(8 - len(data))
        if not chunk:
            raise RuntimeError('the tool server died')
        data += chunk
    return struct.unpack('>ii', data)[1]


def _run_warm(cmd: List[str], env: Dict[str, str], cwd: str,
              timeout: float) -> subprocess.CompletedProcess:
    server, replies = _tool_server()
    with tempfile.TemporaryDirectory() as tmp:
        out, err = osp.join(tmp, 'stdout'), osp.join(tmp, 'stderr')
        request = pickle.dumps(dict(argv=cmd[1:], env=dict(env), cwd=cwd, stdout=out,
                                    stderr=err))
        server.stdin.write(struct.pack('>I', len(request)) + request)
        server.stdin.flush()
        pid = _reply(replies)
        status = _reply(replies, timeout)
        if status is None:
            os.killpg(pid, signal.SIGKILL)
            _reply(replies)
            raise subprocess.TimeoutExpired(cmd, timeout)
        outputs = []
        for path in (out, err):
            with open(path, encoding='utf-8', errors='replace') as f:
                outputs.append(f.read())
    return subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), *outputs)


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
