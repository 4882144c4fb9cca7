"""The tools' runner; a test run never overwrites the training run's config dump."""
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

__all__ = ['RunDirRunner', 'build_runner']


class RunDirRunner(Runner):
    """``Runner`` that dumps its config into its own log dir ``<work_dir>/<timestamp>/``.

    ``tools/test.py`` shares the training run's work dir (as mmseg's does), where mmengine's
    dump would replace the training run's config.
    """

    def dump_config(self) -> None:
        if self.rank == 0:
            name = osp.basename(self.cfg.filename) if self.cfg.filename else f'{self.timestamp}.py'
            self.cfg.dump(osp.join(self.log_dir, name))


def build_runner(cfg: Config, keep_work_dir_files: bool = False) -> Runner:
    """The runner of ``cfg`` as mmseg's tools build it; ``keep_work_dir_files``: RunDirRunner."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return (RunDirRunner if keep_work_dir_files else Runner).from_cfg(cfg)
