"""deeplabv3_plugin.checkpoint.compatibility: whether a checkpoint fits a model, every misfit
named."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.models import SegTTAModel
from mmseg.registry import MODELS

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.checkpoint.compatibility import (CheckpointMismatchError,
                                                       check_state_dict_fits, compare_state_dicts)
from helpers.tools import TINY_CONFIG


class _Net(nn.Module):

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)


def test_compare_state_dicts_kinds():
    model = _Net(4).state_dict()
    same = compare_state_dicts(model, _Net(4).state_dict())
    assert not same
    other = _Net(8).state_dict()
    other['extra.weight'] = torch.zeros(1)
    del other['conv.bias']
    del other['bn.num_batches_tracked']  # ignored, as mmengine does
    mismatch = compare_state_dicts(model, other)
    assert mismatch.missing == ['conv.bias']
    assert mismatch.unexpected == ['extra.weight']
    assert ('conv.weight', (8, 3, 3, 3), (4, 3, 3, 3)) in mismatch.shape
    text = mismatch.describe()
    assert 'conv.weight: checkpoint (8, 3, 3, 3) vs model (4, 3, 3, 3)' in text
    assert 'conv.bias' in text and 'extra.weight' in text


def test_check_state_dict_fits_through_prefix_and_wrappers():
    model = _Net(4)
    ddp_style = {f'module.{k}': v for k, v in model.state_dict().items()}
    check_state_dict_fits(model, {'state_dict': ddp_style})
    with DefaultScope.overwrite_default_scope('mmseg'):
        tta = SegTTAModel(module=MODELS.build(Config.fromfile(TINY_CONFIG).model))
    check_state_dict_fits(tta, {'state_dict': tta.module.state_dict()})
    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict_fits(model, {'state_dict': _Net(8).state_dict()}, source="'x.pth'")
    message = str(info.value)
    assert "Checkpoint 'x.pth' does not fit the _Net model" in message
    assert 'bn.weight: checkpoint (8,) vs model (4,)' in message
