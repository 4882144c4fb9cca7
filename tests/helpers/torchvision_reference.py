"""A stand-alone re-implementation of torchvision's ResNet and DeepLabV3 for the interop tests.

torchvision cannot be installed beside torch 2.13 here, and the tests must not download weights,
so the tests build the *source* side of a conversion themselves: modules with torchvision's exact
attribute names (hence its exact ``state_dict`` key layout) and its exact forward. What is pinned:

* ``torchvision.models.resnet``: 7x7/2 stem conv (no bias), BN, ReLU, 3x3/2 max-pool; bottleneck
  units with the stride on the 3x3 conv ("ResNet v1.5"), the projection shortcut as
  ``downsample.0`` (1x1 conv) + ``downsample.1`` (BN); ``replace_stride_with_dilation`` turns a
  stage's stride into dilation, and that stage's *first* unit keeps the previous dilation
  (layer3 units use 1, 2, 2, ...; layer4 units 2, 4, 4 at output stride 8).
* ``torchvision.models.segmentation.deeplabv3``: ``backbone`` (the ResNet without avgpool/fc,
  returning layer4 as ``out`` and layer3 as ``aux``), ``classifier`` = ``DeepLabHead``
  (``ASPP`` with a 1x1 branch, three 3x3 atrous branches and a pooling branch, each
  conv-BN-ReLU with 256 channels; ``project`` = 1x1 conv, BN, ReLU, Dropout(0.5); then a 3x3
  conv, BN, ReLU and a 1x1 classifier with bias), ``aux_classifier`` = ``FCNHead``
  (3x3 conv to in_channels // 4, BN, ReLU, Dropout(0.1), 1x1 classifier with bias). Logits are
  upsampled bilinearly to the input size with ``align_corners=False``.

``base_channels`` scales every width (64 is torchvision's); the key layout does not change with
it, so tests can keep the true depth-50/101 layout while staying small.
"""
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

STAGE_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` with Bottleneck units (depth 50 or 101)."""

    def __init__(self, depth: int = 50, num_classes: int = 1000, base_channels: int = 64,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> None:
        super().__init__()
        self.inplanes = base_channels
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, base_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        units = STAGE_UNITS[depth]
        dilate = (False, *replace_stride_with_dilation)
        for i, (num_units, stage_dilate) in enumerate(zip(units, dilate)):
            stride = 1 if i == 0 else 2
            layer = self._make_layer(base_channels * 2**i, num_units, stride, stage_dilate)
            setattr(self, f'layer{i + 1}', layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class IntermediateLayerGetter(nn.Module):
    """The ResNet children up to layer4 (same names), returning layer4 and layer3."""

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        for name in ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4'):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        aux = self.layer3(self.layer2(self.layer1(x)))
        return OrderedDict(aux=aux, out=self.layer4(aux))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int,
                  dilation: int = 1) -> list:
    padding = dilation if kernel_size == 3 else 0
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


class ASPPPooling(nn.Sequential):

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class ASPP(nn.Module):

    def __init__(self, in_channels: int, atrous_rates: Sequence[int],
                 out_channels: int = 256) -> None:
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 3, rate))
                     for rate in atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(len(branches) * out_channels, out_channels, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256,
                 atrous_rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates, channels),
            *_conv_bn_relu(channels, channels, 3),
            nn.Conv2d(channels, num_classes, 1))


class FCNHead(nn.Sequential):

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter_channels = in_channels // 4
        super().__init__(*_conv_bn_relu(in_channels, inter_channels, 3), nn.Dropout(0.1),
                         nn.Conv2d(inter_channels, num_classes, 1))


class DeepLabV3(nn.Module):
    """torchvision's ``deeplabv3_resnet50/101`` (output stride 8, optional aux FCN head)."""

    def __init__(self, depth: int = 50, num_classes: int = 21, aux_loss: bool = True,
                 base_channels: int = 64, head_channels: int = 256) -> None:
        super().__init__()
        resnet = ResNet(depth, base_channels=base_channels,
                        replace_stride_with_dilation=(False, True, True))
        out_channels = base_channels * 32
        self.backbone = IntermediateLayerGetter(resnet)
        self.classifier = DeepLabHead(out_channels, num_classes, head_channels)
        self.aux_classifier = FCNHead(out_channels // 2, num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        result['out'] = F.interpolate(self.classifier(features['out']), size=size,
                                      mode='bilinear', align_corners=False)
        if self.aux_classifier is not None:
            result['aux'] = F.interpolate(self.aux_classifier(features['aux']), size=size,
                                          mode='bilinear', align_corners=False)
        return result


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and BN statistic with random values, so a wrong mapping shows.

    Freshly built BNs have mean 0 / var 1 / weight 1 / bias 0 everywhere, which would hide a
    swapped or missing BN; random statistics (positive variances) make every tensor distinct.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith('num_batches_tracked'):
                tensor.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            elif name.endswith('running_var'):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() > 1:  # conv/linear weights: keep activations of order 1
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1 + (
                    1.0 if name.endswith('.weight') else 0.0))
    return module
