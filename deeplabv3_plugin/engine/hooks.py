"""The plugin's mmengine hooks: checkpoint compatibility, and validation and testing through the
fast inference path."""
import copy
from typing import Sequence

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import find_latest_checkpoint
from mmseg.registry import HOOKS

from ..checkpoint.compatibility import check_state_dict_fits
from ..deploy.fast_inference import FastInferenceModel

__all__ = ['CheckpointCompatibilityHook', 'FastInferenceHook']

LOOPS = ('val', 'test')


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Swap a fast copy of the model (:class:`FastInferenceModel` options; of a ``SegTTAModel``
    its segmentor) in for the ``loops``, then back. ``BELOW_NORMAL``: after ``EMAHook`` swaps
    the EMA weights in, before ``CheckpointHook`` saves a best checkpoint."""

    priority = 'BELOW_NORMAL'

    def __init__(self, channels_last: bool = True, fuse_bn: bool = True, bf16: bool = False,
                 compile: bool = False, loops: Sequence[str] = LOOPS) -> None:
        if isinstance(loops, str) or not set(loops) <= set(LOOPS):
            raise ValueError(f'FastInferenceHook: loops={loops!r}; expected names from {LOOPS}')
        self.options = dict(channels_last=channels_last, fuse_bn=fuse_bn, bf16=bf16,
                            compile=compile)
        self.loops, self._original = tuple(loops), None

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        if mode not in self.loops:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if isinstance(model, BaseTTAModel):
            fast = copy.deepcopy(model)
            fast.module = inner = FastInferenceModel(fast.module, copy_model=False,
                                                     **self.options)
        else:
            fast = inner = FastInferenceModel(model, **self.options)
        self._original, runner.model = runner.model, fast
        runner.logger.info(f'FastInferenceHook: {mode} runs on a fast copy of the model '
                           f'({self.options}, {inner.num_fused_bn} BN folded)')

    def _after_epoch(self, runner, mode: str = 'train') -> None:
        # mmengine's before/after_{val,test}_epoch call these two with the loop's name.
        if self._original is not None:
            runner.model, self._original = self._original, None


@HOOKS.register_module()
class CheckpointCompatibilityHook(Hook):
    """Stop the run when a loaded or resumed checkpoint does not fully fit the model
    (``tools/test.py`` always adds it, ``tools/train.py`` with ``--resume``)."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        source = runner.cfg.get('load_from') or find_latest_checkpoint(runner.work_dir)
        source = repr(source) if source else f'resumed from {runner.work_dir!r}'
        check_state_dict_fits(runner.model, checkpoint, source=source)
