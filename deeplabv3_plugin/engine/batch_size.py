"""The training batch of a run: the config's total, kept on any number of processes.

The paper trains with a batch of 16 images (Sec. 4.1), whatever the hardware, and the configs'
``1xb16`` says the same; the official ``train.py`` ``main`` gives each of its clones
``train_batch_size // num_clones`` after asserting that it divides. mmengine's
``train_dataloader.batch_size`` is per process, so a config run on N processes by mmseg's tools
trains at N x 16 with the learning rate of 16. The plugin's tools (``tools/train.py``,
``tools/dist_train.sh``, Slurm, ``mim train deeplabv3_plugin``) read it as the total instead and
give each process ``total / N`` (:func:`keep_total_batch`); ``batch_size_per_process=True`` in the
config (or ``--cfg-options``) keeps mmengine's meaning. :class:`TrainingBatchHook` states the
batch at the start of every run and warns when it is not the paper row's, which is all that can
be done for runs through mmseg's own tools.
"""
import logging
from dataclasses import dataclass
from typing import Optional

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..paper.tables import find_row
from ..errors import UserInputError

__all__ = ['BATCH_SIZE_PER_PROCESS', 'BatchSplit', 'TrainingBatchHook', 'keep_total_batch',
           'split_total_batch']

#: The config key that says ``train_dataloader.batch_size`` is per process (mmengine's meaning).
BATCH_SIZE_PER_PROCESS = 'batch_size_per_process'


@dataclass(frozen=True)
class BatchSplit:
    """How a run's training batch is shared: ``per_process`` x ``world_size`` = ``total``."""

    world_size: int
    per_process: int
    total: int


def split_total_batch(total: int, world_size: int) -> BatchSplit:
    """Share a total batch equally between ``world_size`` processes, or refuse to.

    Raises:
        UserInputError: ``total`` is not a multiple of ``world_size``.
    """
    if world_size < 1 or total < 1 or total % world_size:
        divisors = [n for n in range(1, total + 1) if total % n == 0] if total >= 1 else []
        raise UserInputError(
            f'train_dataloader.batch_size={total} is the total batch of the run (all processes '
            f'together, as the paper\'s batch), and {world_size} processes cannot share it '
            f'equally. Start a number of processes that divides it ({divisors}), set '
            f'train_dataloader.batch_size to a multiple of {world_size} (another experiment than '
            f'the config\'s), or pass --cfg-options {BATCH_SIZE_PER_PROCESS}=True to give every '
            f'process {total} images (total {total * world_size}).')
    return BatchSplit(world_size, total // world_size, total)


def keep_total_batch(cfg: Config, world_size: int) -> Optional[BatchSplit]:
    """Make ``cfg`` train at its total batch on ``world_size`` processes (the tools' rule).

    Unless ``cfg.batch_size_per_process`` is true, ``train_dataloader.batch_size`` is the total:
    it becomes the per-process share and ``batch_size_per_process`` becomes True, so that the
    config the run dumps says what each process loaded. None for a config without a training
    loader.
    """
    loader = cfg.get('train_dataloader')
    if not loader or loader.get('batch_size') is None:
        return None
    batch = loader['batch_size']
    if cfg.get(BATCH_SIZE_PER_PROCESS, False):
        return BatchSplit(world_size, batch, batch * world_size)
    split = split_total_batch(batch, world_size)
    loader['batch_size'] = split.per_process
    cfg[BATCH_SIZE_PER_PROCESS] = True
    return split


@HOOKS.register_module()
class TrainingBatchHook(Hook):
    """At the start of training, log the world size, the batch per process, the total batch and
    the learning rate, and warn when the total is not the batch of the paper row the config
    names (``paper_ref``, batches from ``deeplabv3_plugin/paper/tables.yaml``).

    In the ``_base_`` runtime, so runs through mmseg's own tools (``mim train mmseg``), which
    read ``train_dataloader.batch_size`` per process, are warned too.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        per_process = loader.batch_size
        if per_process is None:  # a batch sampler chooses the batch
            per_process = loader.batch_sampler.batch_size
        split = BatchSplit(runner.world_size, per_process, per_process * runner.world_size)
        lr = runner.cfg.get('optim_wrapper', {}).get('optimizer', {}).get('lr')
        print_log(f'Training batch: world size {split.world_size}, {split.per_process} images '
                  f'per process, total batch {split.total}, lr {lr}.', logger='current')
        ref = runner.cfg.get('paper_ref')
        row = find_row(ref.get('table'), ref.get('row')) if isinstance(ref, dict) else None
        if row is None or row.batch is None or row.batch == split.total:
            return
        print_log(
            f'The total batch {split.total} ({split.world_size} process(es) x '
            f'{split.per_process}) is not the batch {row.batch} of the paper row this config '
            f'reproduces ({row.table}, {row.row!r}; its lr is for that batch): this run is '
            f'another experiment. mmseg\'s tools (mim train mmseg) give '
            f'every process train_dataloader.batch_size images; the plugin\'s tools '
            f'(tools/train.py, tools/dist_train.sh, mim train deeplabv3_plugin) keep the '
            f'config\'s total on any number of processes.', logger='current',
            level=logging.WARNING)
