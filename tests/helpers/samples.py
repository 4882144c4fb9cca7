"""A hook for the resume test: records which images every training iteration drew.

Imported by the training subprocess through ``custom_imports`` (the test puts ``tests/`` on its
``PYTHONPATH``). Each process appends ``<pid> <iteration> <image names>`` lines to
``<work_dir>/drawn_samples.txt``, so the lines of a killed run and of its resumption can be told
apart.
"""
import os
import os.path as osp

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class RecordDrawnSamplesHook(Hook):
    """Append the image names of each training batch, by iteration, to a file in the work dir."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        names = [osp.basename(sample.img_path) for sample in data_batch['data_samples']]
        with open(osp.join(runner.work_dir, 'drawn_samples.txt'), 'a') as f:
            f.write(f'{os.getpid()} {runner.iter} {",".join(names)}\n')


def read_drawn_samples(work_dir: str) -> dict:
    """``{pid: {iteration: names}}`` from the file the hook wrote (a torn last line is skipped)."""
    runs: dict = {}
    with open(osp.join(work_dir, 'drawn_samples.txt')) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and line.endswith('\n'):
                runs.setdefault(int(parts[0]), {})[int(parts[1])] = parts[2]
    return runs
