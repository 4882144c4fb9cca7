"""Refuse a checkpoint that does not fit the model: mmengine loads with ``strict=False`` and only
logs misfits, so the tools would test half-random weights (fine-tuning may load partially)."""
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

import torch
from mmengine.model import BaseTTAModel, is_model_wrapper

from ..errors import UserInputError, listing

__all__ = [
    'CheckpointMismatchError', 'check_state_dict_fits', 'checkpoint_state_dict',
    'compare_state_dicts'
]


class CheckpointMismatchError(UserInputError):
    """A checkpoint's tensors do not match the model the config builds."""


@dataclass
class StateDictMismatch:
    """Keys the checkpoint lacks, keys the model lacks, ``(key, checkpoint shape, model shape)``."""

    missing: List[str]
    unexpected: List[str]
    shape: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape)

    def describe(self) -> str:
        shapes = [f'{k}: checkpoint {c} vs model {m}' for k, c, m in self.shape]
        kinds = ((shapes, 'tensor(s) have another shape'),
                 (self.missing, 'model key(s) are missing from the checkpoint'),
                 (self.unexpected, 'checkpoint key(s) do not exist in the model'))
        return ' '.join(f'{len(keys)} {what} ({listing(keys)}).' for keys, what in kinds if keys)


def compare_state_dicts(model_state: Mapping[str, Any],
                        checkpoint_state: Mapping[str, Any]) -> StateDictMismatch:
    """How ``checkpoint_state`` differs from ``model_state`` (falsy when it fits); a missing BN
    ``num_batches_tracked`` is ignored, as mmengine does."""
    pairs = [(key, value, checkpoint_state.get(key)) for key, value in model_state.items()]
    return StateDictMismatch(
        missing=[k for k, _, theirs in pairs
                 if theirs is None and not k.endswith('num_batches_tracked')],
        unexpected=[key for key in checkpoint_state if key not in model_state],
        shape=[(k, tuple(theirs.shape), tuple(ours.shape)) for k, ours, theirs in pairs
               if isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor)
               and ours.shape != theirs.shape])


def checkpoint_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """A checkpoint's ``state_dict`` (or the mapping itself), DDP's ``module.`` prefix stripped
    (mmengine's default ``revise_keys``)."""
    state = checkpoint.get('state_dict', checkpoint)
    return {re.sub(r'^module\.', '', key): value for key, value in state.items()}


def check_state_dict_fits(model: torch.nn.Module, checkpoint: Mapping[str, Any],
                          source: str = 'the checkpoint', optional: Tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` loads fully into ``model``
    (DDP and TTA wrappers looked through, as mmengine's loader does); keys starting with an
    ``optional`` prefix are not compared."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    mismatch = compare_state_dicts(*[{k: v for k, v in state.items() if not k.startswith(optional)}
                                     for state in (model.state_dict(),
                                                   checkpoint_state_dict(checkpoint))])
    if mismatch:
        raise CheckpointMismatchError(
            f'Checkpoint {source} does not fit the {type(model).__name__} model built from the '
            f'config: {mismatch.describe()} Pass the config it was trained with (depth, widths, '
            'classes, head), or a checkpoint of this config.')

