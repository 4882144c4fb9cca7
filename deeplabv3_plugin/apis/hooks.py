"""An mmengine hook that runs validation and testing through the fast inference path."""
import copy
from typing import Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmseg.registry import HOOKS
from torch import nn

from .fast_inference import FastInferenceModel

__all__ = ['FastInferenceHook']

LOOPS = ('val', 'test')


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Swap an eval-only fast copy of the model in for the val/test loops, then swap it back.

    The copy (:class:`FastInferenceModel` of the segmentor, inside ``SegTTAModel`` with
    ``--tta``) is made before each epoch, so the trained model, its checkpoints, optimizer and
    output-stride switch are untouched. ``BELOW_NORMAL`` priority copies after ``EMAHook`` has
    swapped the EMA weights in, and restores before ``CheckpointHook`` saves a best checkpoint.
    Enable it with ``custom_hooks = [dict(type='FastInferenceHook')]`` or ``tools/test.py``.

    Args:
        channels_last: NHWC weights and inputs (same numerics). Default: True.
        fuse_bn: Fold BN into the convolutions (same numerics up to rounding). Default: True.
        bf16: bf16 autocast (changes numerics; see the README). Default: False.
        compile: ``torch.compile`` the copy's backbone and head (recompiled each epoch).
            Default: False.
        loops: Which of ``('val', 'test')`` run fast. Default: both.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self,
                 channels_last: bool = True,
                 fuse_bn: bool = True,
                 bf16: bool = False,
                 compile: bool = False,
                 loops: Sequence[str] = LOOPS) -> None:
        if isinstance(loops, str) or not set(loops) <= set(LOOPS):
            raise ValueError(f'FastInferenceHook: loops={loops!r} is not allowed: expected a '
                             f'sequence of names from {LOOPS}')
        self.channels_last = channels_last
        self.fuse_bn = fuse_bn
        self.bf16 = bf16
        self.compile = compile
        self.loops = tuple(loops)
        self._original: Optional[nn.Module] = None

    def _fast(self, model: nn.Module) -> Union[FastInferenceModel, BaseTTAModel]:
        options = dict(channels_last=self.channels_last, fuse_bn=self.fuse_bn, bf16=self.bf16,
                       compile=self.compile)
        if isinstance(model, BaseTTAModel):  # speed up its segmentor; keep the float32 merge
            tta = copy.deepcopy(model)
            tta.module = FastInferenceModel(tta.module, copy_model=False, **options)
            return tta
        return FastInferenceModel(model, **options)

    def _swap_in(self, runner, loop: str) -> None:
        if loop not in self.loops:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        fast = self._fast(model)
        self._original = runner.model
        runner.model = fast
        inner = fast.module if isinstance(fast, BaseTTAModel) else fast
        runner.logger.info(
            f'FastInferenceHook: {loop} runs on a fast copy of the model (channels_last='
            f'{self.channels_last}, fuse_bn={self.fuse_bn}: {inner.num_fused_bn} BN folded, '
            f'bf16={self.bf16}, compile={self.compile})')

    def _swap_out(self, runner) -> None:
        if self._original is not None:
            runner.model = self._original
            self._original = None

    def before_val_epoch(self, runner) -> None:
        self._swap_in(runner, 'val')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._swap_out(runner)

    def before_test_epoch(self, runner) -> None:
        self._swap_in(runner, 'test')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._swap_out(runner)
