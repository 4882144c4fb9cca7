"""Whether a plugin model computes what torchvision's DeepLabV3 computes, beyond its weights."""
import re
from typing import List, Optional, Tuple

import torch
from torch import nn

from deeplabv3_plugin.engine.errors import UserInputError, listing

__all__ = ['TorchvisionConversionError', 'check_torchvision_geometry']


class TorchvisionConversionError(UserInputError):
    """The source is not a torchvision DeepLabV3 state dict that fits the target config."""


#: torchvision's normalisation (ImageNet statistics, RGB, [0, 1] input) on mmseg's 0..255 scale.
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)
#: How torchvision's backbone geometry is spelled in a plugin config.
_BACKBONE_HINT = (' torchvision\'s backbone is MultiGridResNet(stem=\'torchvision\', '
                  'contract_dilation=True, multi_grid=(1, 1, 1)) at output stride 8.')


def _expected_backbone_geometry(name: str) -> Optional[Tuple[int, int, int]]:
    """(stride, dilation, padding) torchvision uses for a backbone conv, by module name."""
    if name == 'conv1':
        return (2, 1, 3)
    match = re.fullmatch(r'layer(\d)\.(\d+)\.(conv2|downsample\.0)', name)
    if match is None:
        return None
    stage, unit, conv = int(match.group(1)), int(match.group(2)), match.group(3)
    stride = 2 if (stage == 2 and unit == 0) else 1
    if conv == 'downsample.0':
        return (stride, 1, 0)
    # replace_stride_with_dilation=[False, True, True]: the first unit keeps the rate before.
    rates = {1: (1, 1), 2: (1, 1), 3: (1, 2), 4: (2, 4)}[stage]
    dilation = rates[0] if unit == 0 else rates[1]
    return (stride, dilation, dilation)


def _head_problems(model: nn.Module) -> List[str]:
    """How the heads differ from torchvision's ``DeepLabHead`` and ``FCNHead`` (eval mode)."""
    from mmseg.models.decode_heads import FCNHead

    from deeplabv3_plugin.models.decode_heads import DeepLabV3Head

    problems = []
    head = model.decode_head
    if not isinstance(head, DeepLabV3Head):
        problems.append(f'decode_head is a {type(head).__name__}, torchvision\'s head is '
                        'DeepLabV3Head(project_dropout=0.5, num_extra_convs=1, dropout_ratio=0)')
    elif head.effective_rates != (12, 24, 36):
        problems.append(f'decode_head ASPP rates are {head.effective_rates} at the model\'s '
                        'eval output stride, torchvision (12, 24, 36) at output stride 8')
    aux = getattr(model, 'auxiliary_head', None)  # EncoderDecoder sets it only when configured
    if aux is not None and not (isinstance(aux, FCNHead) and aux.num_convs == 1
                                and not aux.concat_input and aux.convs[0].conv.kernel_size
                                == (3, 3) and aux.convs[0].conv.dilation == (1, 1)):
        problems.append('auxiliary_head must be FCNHead(num_convs=1, kernel_size=3, dilation=1, '
                        'concat_input=False), torchvision\'s FCNHead')
    return problems


def check_torchvision_geometry(model: nn.Module) -> None:
    """Refuse, naming every difference, a model whose eval-mode function is not torchvision's.

    Weights alone do not pin it (a deep stem, uncontracted rates, OS 16, other ASPP rates,
    ``align_corners=True`` or another normalisation load the same tensors), so conv geometry,
    BN eps, upsampling and the preprocessor are compared.
    """
    was_training = model.training
    model.eval()  # test_output_stride applies in eval mode, where outputs are compared
    problems = []
    try:
        for name, module in model.backbone.named_modules():
            if isinstance(module, nn.Conv2d):
                expected = _expected_backbone_geometry(name)
                found = (module.stride[0], module.dilation[0], module.padding[0])
                if expected is None:
                    if module.kernel_size != (1, 1):
                        problems.append(f'backbone.{name} is not in torchvision\'s ResNet '
                                        f'(stem={getattr(model.backbone, "stem_type", "?")!r}?)')
                elif found != expected:
                    problems.append(f'backbone.{name} has (stride, dilation, padding)={found}, '
                                    f'torchvision {expected}')
        hint = _BACKBONE_HINT if problems else ''
        problems += _head_problems(model)
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.eps != 1e-5:
                problems.append(f'{name} has BN eps={module.eps}, torchvision 1e-5')
        for head_name in ('decode_head', 'auxiliary_head'):
            head_module = getattr(model, head_name, None)
            if head_module is not None and head_module.align_corners:
                problems.append(f'{head_name}.align_corners=True, torchvision upsamples with '
                                'align_corners=False')
        preprocessor = model.data_preprocessor
        mean = getattr(preprocessor, 'mean', None)
        std = getattr(preprocessor, 'std', None)
        if mean is None or std is None or not (
                torch.allclose(mean.flatten().cpu(), torch.tensor(TORCHVISION_MEAN))
                and torch.allclose(std.flatten().cpu(), torch.tensor(TORCHVISION_STD))
                and getattr(preprocessor, 'channel_conversion', False)):
            problems.append(f'data_preprocessor must normalise like torchvision: mean='
                            f'{list(TORCHVISION_MEAN)}, std={list(TORCHVISION_STD)}, '
                            'bgr_to_rgb=True')
    finally:
        model.train(was_training)
    if problems:
        raise TorchvisionConversionError(
            'the target config does not reproduce torchvision\'s DeepLabV3 (use '
            'configs/torchvision/): ' + listing(problems, 12, sep='; ') + '.' + hint)
