"""Building the tools' runner; a test run never writes over the files of a training run.

mmengine's ``Runner`` dumps its config to ``<work_dir>/<config name>.py``, and ``tools/test.py``
shares the training run's work dir (as mmseg's tools do), so every test run would replace the
training run's config dump. :class:`RunDirRunner` dumps into the run's own timestamped log
directory instead.
"""
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

__all__ = ['RunDirRunner', 'build_runner']


class RunDirRunner(Runner):
    """``Runner`` that dumps its config into ``<work_dir>/<timestamp>/``, its log directory."""

    def dump_config(self) -> None:
        """Dump the config next to this run's log (rank 0 only, as mmengine does)."""
        if self.rank != 0:
            return
        name = osp.basename(self.cfg.filename) if self.cfg.filename else f'{self.timestamp}.py'
        self.cfg.dump(osp.join(self.log_dir, name))


def build_runner(cfg: Config, keep_work_dir_files: bool = False) -> Runner:
    """The runner of ``cfg``, as mmseg's tools build it (``cfg.runner_type`` wins).

    ``keep_work_dir_files`` selects :class:`RunDirRunner` (``tools/test.py``).
    """
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    runner_cls = RunDirRunner if keep_work_dir_files else Runner
    return runner_cls.from_cfg(cfg)
