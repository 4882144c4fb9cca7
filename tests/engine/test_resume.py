"""Resuming an interrupted run: kill a real tools/train.py mid-way, rerun it with --resume.

The resumed run must continue from the last complete checkpoint (iteration counter, optimizer and
poly LR schedule restored) and stop at the same max_iters, so both runs together perform each
iteration once.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import time

import pytest
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint

import deeplabv3_plugin.runtime  # noqa: F401  (the safe checkpoint loader the tools use)
from helpers.samples import read_drawn_samples
from helpers.tools import (REPO_ROOT, TINY_CONFIG, check_ok, make_voc_dataset, run, tool_env,
                           train_cmd)

MAX_ITERS = 24  # a checkpoint every 2: the run is killed after the first, long before its end
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


@pytest.mark.slow(seconds=20)
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
    # The poly schedule continues where it stopped. mmengine's PolyLR steps after each of the T
    # iterations and reaches eta_min (0) at the last one: lr(i) = base * (1 - (i - 1) / (T - 1))
    # ** 0.9, which is what an uninterrupted run logs.
    first = interrupted_at + 1
    expected = BASE_LR * (1 - (first - 1) / (MAX_ITERS - 1))**0.9
    assert abs(lrs[first] - expected) < 1e-3 * expected, (lrs[first], expected)

    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        final = f.read().strip()
    assert osp.basename(final) == f'iter_{MAX_ITERS}.pth'
    assert _load_checkpoint(final, map_location='cpu')['meta']['iter'] == MAX_ITERS


@pytest.mark.slow
def test_resume_without_checkpoint_starts_from_the_beginning(tmp_path):
    env = tool_env(make_voc_dataset(str(tmp_path / 'voc')))
    work_dir = str(tmp_path / 'work')
    proc = check_ok(run(train_cmd(work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=2',
                                  'train_cfg.val_interval=2'), env))
    output = proc.stdout + proc.stderr
    assert 'no checkpoint in work dir' in output and 'starts from the beginning' in output
    assert 'Iter(train) [2/2]' in output
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))


@pytest.mark.slow(seconds=45)
def test_resumed_bootstrapped_run_draws_the_images_of_the_uninterrupted_run(tmp_path):
    """The sampler is built before ``--resume`` restores the old run's seed, so only a seed fixed
    in the config makes a resumed run draw what the uninterrupted run draws. Every paper config
    takes it from the base runtime (pinned for each config in test_configs.py); this runs the
    tiny config with that seed and the stage-2 bootstrapping sampler, kills it, resumes it, and
    compares the image names of every iteration after the checkpoint."""
    runtime = Config.fromfile(osp.join(REPO_ROOT, 'configs', '_base_', 'default_runtime.py'))
    seed = runtime.randomness['seed']
    assert isinstance(seed, int), 'the base runtime fixes randomness.seed'
    env = tool_env(make_voc_dataset(str(tmp_path / 'voc'), num_train=6))
    env['PYTHONPATH'] = os.pathsep.join(
        [osp.join(REPO_ROOT, 'tests'), env.get('PYTHONPATH', '')])
    config = tmp_path / 'bootstrapped_tiny.py'
    config.write_text(f"""_base_ = [{TINY_CONFIG!r}]
custom_imports = dict(imports=['deeplabv3_plugin', 'helpers.samples'])
custom_hooks = [dict(type='RecordDrawnSamplesHook')]
randomness = dict(seed={seed})
train_dataloader = dict(sampler=dict(
    _delete_=True, type='InfiniteBootstrapSampler', repeat_factor=2.0,
    hard_classes=('bicycle', 'chair', 'diningtable', 'pottedplant', 'sofa', 'person', 'car'),
    cache_dir={str(tmp_path / 'cache')!r}))
""")
    options = ['--cfg-options', *SCHEDULE[1:]]
    whole_dir, resumed_dir = str(tmp_path / 'whole'), str(tmp_path / 'resumed')
    check_ok(run(train_cmd(whole_dir, *options, config=str(config)), env))
    (whole, ) = read_drawn_samples(whole_dir).values()
    assert sorted(whole) == list(range(MAX_ITERS))

    _kill_after_first_checkpoint(train_cmd(resumed_dir, *options, config=str(config)), env)
    with open(osp.join(resumed_dir, 'last_checkpoint')) as f:
        interrupted_at = _load_checkpoint(f.read().strip(), map_location='cpu')['meta']['iter']
    check_ok(run(train_cmd(resumed_dir, '--resume', *options, config=str(config)), env))
    runs = read_drawn_samples(resumed_dir)
    assert len(runs) == 2, 'the killed run and its resumption'
    resumed = [r for r in runs.values() if min(r) == interrupted_at]
    assert len(resumed) == 1
    assert resumed[0] == {i: whole[i] for i in range(interrupted_at, MAX_ITERS)}

