"""Resuming an interrupted run: kill a real tools/train.py mid-way, rerun it with --resume.

The resumed run must continue from the last complete checkpoint (iteration counter, optimizer and
poly LR schedule restored) and stop at the same max_iters, so both runs together perform each
iteration once.
"""
import os.path as osp
import re
import signal
import subprocess
import time

from mmengine.runner.checkpoint import _load_checkpoint

import deeplabv3_plugin  # noqa: F401  (the weights-only checkpoint loader the tools use)
from tools_testutils import check_ok, make_voc_dataset, run, tool_env, train_cmd

MAX_ITERS = 60
BASE_LR = 0.01  # tools_tiny.py's SGD lr
SCHEDULE = ['--cfg-options', f'train_cfg.max_iters={MAX_ITERS}',
            f'train_cfg.val_interval={MAX_ITERS}', f'param_scheduler.0.end={MAX_ITERS}',
            'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=3']


def _logged_iters(output: str):
    """``{iteration: lr}`` of every training log line."""
    return {int(it): float(lr) for it, lr in re.findall(
        rf'Iter\(train\) \[\s*(\d+)/{MAX_ITERS}\].*?\slr: ([0-9.e+-]+)', output)}


def _kill_after_first_checkpoint(cmd, env, timeout=180.0) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work_dir = cmd[cmd.index('--work-dir') + 1]
    deadline = time.monotonic() + timeout
    try:
        while not osp.isfile(osp.join(work_dir, 'last_checkpoint')):
            assert proc.poll() is None, f'training exited ({proc.returncode}) before a checkpoint'
            assert time.monotonic() < deadline, 'no checkpoint appeared in time'
            time.sleep(0.02)
        assert proc.poll() is None, 'the run finished before it could be interrupted'
        proc.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_run_resumes_to_the_same_iteration_count(tmp_path):
    env = tool_env(make_voc_dataset(str(tmp_path / 'voc')))
    work_dir = str(tmp_path / 'work')
    cmd = train_cmd(work_dir, *SCHEDULE)
    _kill_after_first_checkpoint(cmd, env)

    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        interrupted_at = _load_checkpoint(f.read().strip(), map_location='cpu')['meta']['iter']
    assert 0 < interrupted_at < MAX_ITERS

    output = check_ok(run(train_cmd(work_dir, '--resume', *SCHEDULE), env)).stdout
    assert f'resumed epoch: 0, iter: {interrupted_at}' in output
    lrs = _logged_iters(output)
    # Only the iterations after the checkpoint run again, up to the same max_iters.
    assert sorted(lrs) == list(range(interrupted_at + 1, MAX_ITERS + 1))
    # The poly schedule continues where it stopped: lr(i) = base * (1 - (i - 1) / T) ** 0.9.
    first = interrupted_at + 1
    expected = BASE_LR * (1 - (first - 1) / MAX_ITERS)**0.9
    assert abs(lrs[first] - expected) < 1e-3 * expected, (lrs[first], expected)

    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        final = f.read().strip()
    assert osp.basename(final) == f'iter_{MAX_ITERS}.pth'
    assert _load_checkpoint(final, map_location='cpu')['meta']['iter'] == MAX_ITERS


def test_resume_without_checkpoint_starts_from_the_beginning(tmp_path):
    env = tool_env(make_voc_dataset(str(tmp_path / 'voc')))
    work_dir = str(tmp_path / 'work')
    proc = check_ok(run(train_cmd(work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=2',
                                  'train_cfg.val_interval=2'), env))
    output = proc.stdout + proc.stderr
    assert 'no checkpoint in work dir' in output and 'starts from the beginning' in output
    assert 'Iter(train) [2/2]' in output
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
