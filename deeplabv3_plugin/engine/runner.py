"""Building the tools' runner; a test run never writes over the files of a training run.

mmengine's ``Runner`` dumps the config it was given to ``<work_dir>/<config name>.py`` when it is
built. ``tools/test.py`` defaults to the same work dir as training (``work_dirs/<config name>``, as
mmseg's tools do), so every test run (and every failed one) would replace the training run's
config dump with the test config (``load_from`` set, TTA wrapping...). :class:`RunDirRunner`
writes the dump into the run's own timestamped log directory instead, next to its log, where
nothing else is ever written. Everything else is the stock ``Runner``.
"""
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

__all__ = ['RunDirRunner', 'build_runner']


class RunDirRunner(Runner):
    """``Runner`` that dumps its config into ``<work_dir>/<timestamp>/`` (its log directory).

    Each run has its own log directory (mmengine names it by the start time, broadcast from
    rank 0), so two runs never write the same file; the training run's files in ``work_dir``
    (checkpoints, ``last_checkpoint``, its config dump) stay untouched.
    """

    def dump_config(self) -> None:
        """Dump the config next to this run's log (rank 0 only, as mmengine does)."""
        if self.rank != 0:
            return
        name = osp.basename(self.cfg.filename) if self.cfg.filename else f'{self.timestamp}.py'
        self.cfg.dump(osp.join(self.log_dir, name))


def build_runner(cfg: Config, keep_work_dir_files: bool = False) -> Runner:
    """Build the runner a tool runs, as mmseg's tools do, honouring ``cfg.runner_type``.

    Args:
        cfg: The final config.
        keep_work_dir_files: Use :class:`RunDirRunner` so nothing already in ``cfg.work_dir`` is
            overwritten (``tools/test.py``). Ignored when the config names its own
            ``runner_type``, which is then built from mmseg's ``RUNNERS`` registry unchanged.

    Returns:
        The runner, with the model built and the distributed environment set up.
    """
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    runner_cls = RunDirRunner if keep_work_dir_files else Runner
    return runner_cls.from_cfg(cfg)
