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

    Before each val or test epoch the hook builds a :class:`FastInferenceModel` from a deep copy
    of ``runner.model`` (the segmentor inside a DDP wrapper, or the segmentor inside
    ``SegTTAModel`` with ``--tta``) and sets it as ``runner.model``; after the epoch it puts the
    original back. The model being trained is never converted, folded or cast, so its
    ``state_dict`` (checkpoints), its optimizer and ``set_output_stride`` are untouched.

    Priority ``BELOW_NORMAL`` places the swap after ``EMAHook`` (``NORMAL``) has loaded the EMA
    weights for validation, so the copy is made of the EMA weights, and the restore before
    ``CheckpointHook`` (``VERY_LOW``) saves a best checkpoint in ``after_val_epoch``. The copy
    costs the model's memory once more for the duration of the loop.

    Enable it from a config or from ``tools/test.py``::

        custom_hooks = [dict(type='FastInferenceHook', channels_last=True, fuse_bn=True)]

    Args:
        channels_last (bool): NHWC weights and inputs (same numerics). Default: True.
        fuse_bn (bool): Fold BN into the convolutions (same numerics up to float rounding).
            Default: True.
        bf16 (bool): bf16 autocast (changes numerics; see the README for its mIoU effect).
            Default: False.
        compile (bool): ``torch.compile`` the copy's backbone and decode head; worth it for
            long loops over images of one size (each val/test epoch compiles its copy again).
            Default: False.
        loops (Sequence[str]): Which loops run fast, a subset of ``('val', 'test')``.
            Default: ``('val', 'test')``.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self,
                 channels_last: bool = True,
                 fuse_bn: bool = True,
                 bf16: bool = False,
                 compile: bool = False,
                 loops: Sequence[str] = LOOPS) -> None:
        for name, value in (('channels_last', channels_last), ('fuse_bn', fuse_bn),
                            ('bf16', bf16), ('compile', compile)):
            if not isinstance(value, bool):
                raise TypeError(f'FastInferenceHook: {name} must be a bool, got {value!r}')
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
        if isinstance(model, BaseTTAModel):
            # The TTA model merges softmax outputs of several views; speed up the segmentor it
            # calls and keep the merge (in float32) as it is.
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
        """Put the fast copy in place for validation."""
        self._swap_in(runner, 'val')

    def after_val_epoch(self, runner, metrics=None) -> None:
        """Restore the trained model before checkpoints are written."""
        self._swap_out(runner)

    def before_test_epoch(self, runner) -> None:
        """Put the fast copy in place for testing."""
        self._swap_in(runner, 'test')

    def after_test_epoch(self, runner, metrics=None) -> None:
        """Restore the original model."""
        self._swap_out(runner)
