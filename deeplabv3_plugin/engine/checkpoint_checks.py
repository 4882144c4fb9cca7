"""Refuse a checkpoint that does not fit the model, instead of testing half-random weights.

mmengine loads checkpoints with ``strict=False``: keys the model lacks, keys the checkpoint lacks
and tensors of another shape are only *logged*, and the run goes on with those weights left at
their random initialisation. For ``tools/test.py`` that turns "wrong checkpoint for this config"
into a plausible-looking but meaningless mIoU; for ``--resume`` into a training run that silently
restarts part of the model. :class:`CheckpointCompatibilityHook` compares the checkpoint with the
model right after mmengine reads the file (the ``after_load_checkpoint`` hook point, which both
``load_from`` and ``resume`` pass through) and raises :class:`CheckpointMismatchError`, naming the
mismatched keys, before any weight is copied.

Fine-tuning from a checkpoint of another model (``load_from`` in training, e.g. another number of
classes) is a legitimate partial load, so ``tools/train.py`` only adds the hook when resuming.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import find_latest_checkpoint
from mmseg.registry import HOOKS

from .errors import UserInputError

__all__ = [
    'CheckpointCompatibilityHook', 'CheckpointMismatchError', 'StateDictMismatch',
    'check_state_dict_fits', 'compare_state_dicts'
]

_LISTED_PER_KIND = 5
#: mmengine strips DDP's ``module.`` prefix when loading; so does the comparison.
_REVISE_KEYS: Sequence[Tuple[str, str]] = ((r'^module\.', ''), )


class CheckpointMismatchError(UserInputError):
    """A checkpoint's tensors do not match the model the config builds."""


@dataclass
class StateDictMismatch:
    """How a checkpoint's state dict differs from a model's.

    Attributes:
        missing: Model keys the checkpoint does not have.
        unexpected: Checkpoint keys the model does not have.
        shape: ``(key, checkpoint_shape, model_shape)`` for keys present in both with different
            shapes.
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape)

    def describe(self) -> str:
        """One sentence per kind of difference, listing the first few keys of each."""

        def listing(items: List[str]) -> str:
            more = len(items) - _LISTED_PER_KIND
            return ', '.join(items[:_LISTED_PER_KIND]) + (f' and {more} more' if more > 0 else '')

        parts = []
        if self.shape:
            parts.append(f'{len(self.shape)} tensor(s) have another shape ('
                         + listing([f'{k}: checkpoint {tuple(c)} vs model {tuple(m)}'
                                    for k, c, m in self.shape]) + ').')
        if self.missing:
            parts.append(f'{len(self.missing)} model key(s) are missing from the checkpoint ('
                         f'{listing(self.missing)}).')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} checkpoint key(s) do not exist in the model ('
                         f'{listing(self.unexpected)}).')
        return ' '.join(parts)


def compare_state_dicts(model_state: Mapping[str, Any],
                        checkpoint_state: Mapping[str, Any]) -> StateDictMismatch:
    """Compare a model's state dict with a checkpoint's, the way mmengine would load it.

    BN's ``num_batches_tracked`` counters are ignored when missing (mmengine does the same: they
    only matter for momentum-free BN and old checkpoints often lack them).

    Args:
        model_state: ``model.state_dict()``.
        checkpoint_state: The checkpoint's ``state_dict`` with DDP's ``module.`` prefix removed.

    Returns:
        The differences; falsy when the checkpoint fits.
    """
    mismatch = StateDictMismatch()
    for key, value in model_state.items():
        if key not in checkpoint_state:
            if 'num_batches_tracked' not in key:
                mismatch.missing.append(key)
            continue
        theirs = checkpoint_state[key]
        if isinstance(value, torch.Tensor) and isinstance(theirs, torch.Tensor) \
                and value.shape != theirs.shape:
            mismatch.shape.append((key, tuple(theirs.shape), tuple(value.shape)))
    mismatch.unexpected = [key for key in checkpoint_state if key not in model_state]
    return mismatch


def _checkpoint_state(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    state = checkpoint.get('state_dict', checkpoint)
    for pattern, replacement in _REVISE_KEYS:
        state = {re.sub(pattern, replacement, key): value for key, value in state.items()}
    return state


def _bare_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module weights are loaded into: without DDP and test-time-augmentation wrappers."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_state_dict_fits(model: torch.nn.Module, checkpoint: Mapping[str, Any],
                          source: str = 'the checkpoint') -> None:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` loads fully into ``model``.

    Args:
        model: The model (wrappers are looked through, as mmengine's loader does).
        checkpoint: The loaded checkpoint dict (with or without a ``state_dict`` entry).
        source: Where the checkpoint came from (a path), named in the message.
    """
    model = _bare_model(model)
    mismatch = compare_state_dicts(model.state_dict(), _checkpoint_state(checkpoint))
    if mismatch:
        raise CheckpointMismatchError(
            f'Checkpoint {source} does not fit the {type(model).__name__} model built from the '
            f'config: {mismatch.describe()} It was probably trained with another config (other '
            'backbone depth, widths, number of classes or head); pass the config it was trained '
            'with, or a checkpoint trained with this config.')


@HOOKS.register_module()
class CheckpointCompatibilityHook(Hook):
    """Stop the run when a loaded or resumed checkpoint does not fully fit the model.

    Add it with ``custom_hooks = [dict(type='CheckpointCompatibilityHook')]``; ``tools/test.py``
    always does, ``tools/train.py`` with ``--resume``. It acts on ``after_load_checkpoint``, which
    mmengine calls with the file's contents before copying any weight into the model.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Compare the checkpoint with ``runner.model``; raise if they differ."""
        check_state_dict_fits(runner.model, checkpoint, source=_checkpoint_source(runner))


def _checkpoint_source(runner) -> str:
    """The path mmengine is loading: ``load_from``, or the latest checkpoint when auto-resuming."""
    if runner.cfg.get('load_from'):
        return repr(runner.cfg.load_from)
    latest = find_latest_checkpoint(runner.work_dir)
    return repr(latest) if latest else f'resumed from {runner.work_dir!r}'
