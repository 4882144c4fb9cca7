"""Convert torchvision's ``deeplabv3_resnet50/101`` weights into a checkpoint of this plugin.

Why: the paper's best VOC rows start from a model pretrained on COCO (Table 6, "+ COCO
pretraining", fine-tuned with lr 1e-4), and no official DeepLabV3-ResNet checkpoint exists.
The closest public start is torchvision's ``deeplabv3_resnet50/101`` (trained on a COCO subset
with the 21 VOC classes). Its architecture differs from the paper's in a few fixed ways, all
expressible in this plugin (``configs/torchvision/``):

* backbone: ResNet with one 7x7 stem conv (``MultiGridResNet(stem='torchvision')``), output
  stride 8 with *contracted* rates (layer3 units 1, 2, 2, ...; layer4 units 2, 4, 4:
  ``contract_dilation=True``), no multi-grid;
* head: the paper's ASPP (1x1, rates 12/24/36 at OS 8, image pooling, 256 channels, BN) whose
  projection is followed by Dropout(0.5), one extra 3x3 conv + BN + ReLU, and the classifier
  (``DeepLabV3Head(project_dropout=0.5, num_extra_convs=1, dropout_ratio=0.0)``);
* auxiliary head on layer3: 3x3 conv 1024 -> 256 without bias, BN, ReLU, Dropout(0.1), 1x1
  classifier (mmseg's ``FCNHead(num_convs=1, channels=256, concat_input=False,
  dropout_ratio=0.1, in_index=2)``);
* logits upsampled bilinearly with ``align_corners=False``; input normalised with the ImageNet
  mean/std in RGB order (mmseg's ``SegDataPreProcessor`` with the same values, ``bgr_to_rgb``).

The conversion is a pure renaming: every torchvision tensor lands in exactly one plugin tensor
of the same shape (:func:`torchvision_to_plugin_key`), so the converted model computes the same
function. :func:`convert_state_dict` refuses anything that is not such a renaming (unknown or
surplus keys, missing keys, shape or class-count mismatches), and
:func:`check_torchvision_geometry` refuses a target config whose strides, rates, upsampling or
normalisation differ from torchvision's, so a successful conversion *is* the torchvision model.
"""
import copy
import os
import os.path as osp
import re
import tempfile
from collections import OrderedDict
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from deeplabv3_plugin.engine.errors import UserInputError

if TYPE_CHECKING:
    from mmengine.config import Config

__all__ = [
    'TorchvisionConversionError', 'torchvision_prefix_map', 'torchvision_to_plugin_key',
    'plugin_to_torchvision_key', 'detect_resnet_depth', 'load_torchvision_state_dict',
    'convert_state_dict', 'check_torchvision_geometry', 'build_target_model',
    'convert_torchvision_checkpoint', 'default_config_for'
]

#: ResNet depth of torchvision's DeepLabV3 models, by the number of units in layer3.
DEPTH_BY_LAYER3_UNITS = {6: 50, 23: 101}
#: What torchvision's ``IntermediateLayerGetter`` keeps of the ResNet (avgpool/fc are dropped).
_BACKBONE_MODULES = ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')
#: torchvision's normalisation (ImageNet statistics, RGB, [0, 1] input) on mmseg's 0..255 scale.
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)
#: How torchvision's backbone geometry is spelled in a plugin config.
_BACKBONE_HINT = (' torchvision\'s backbone is MultiGridResNet(stem=\'torchvision\', '
                  'contract_dilation=True, multi_grid=(1, 1, 1)) at output stride 8.')
#: At most this many keys are listed per problem in an error message.
_MAX_LISTED = 12


class TorchvisionConversionError(UserInputError):
    """The source is not a torchvision DeepLabV3 state dict that fits the target config.

    A :class:`~deeplabv3_plugin.engine.errors.UserInputError`, so the tool prints the message
    (which names the keys) and exits with status 2 instead of a traceback.
    """


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f', ... ({more} more)' if more > 0 else '')


def torchvision_prefix_map(num_atrous_rates: int = 3) -> Dict[str, str]:
    """Module-prefix map from torchvision's DeepLabV3 onto the plugin segmentor.

    The backbone keeps its names (mmseg's ``ResNet``, which ``MultiGridResNet`` extends, uses
    torchvision's ``conv1``/``bn1``/``layerN.i.convK``/``downsample.0|1``). The decode head uses
    :func:`~deeplabv3_plugin.models.decode_heads.torchvision_key_map` (owned by the head, which
    knows its module layout); the aux ``FCNHead`` is ``Sequential(conv, bn, relu, dropout,
    conv)`` in torchvision and ``convs.0.{conv,bn}`` + ``conv_seg`` in mmseg.

    Args:
        num_atrous_rates (int): Atrous branches of the ASPP (3 in torchvision). Default: 3.

    Returns:
        dict[str, str]: torchvision prefix (ending in ``'.'``) -> plugin prefix. Keys are
        renamed by their longest matching prefix; the remainder (``weight``,
        ``running_mean`` ...) is kept.
    """
    from deeplabv3_plugin.models.decode_heads import torchvision_key_map

    mapping = {f'backbone.{name}.': f'backbone.{name}.' for name in _BACKBONE_MODULES}
    for source, target in torchvision_key_map(num_atrous_rates).items():
        mapping[f'classifier.{source}.'] = f'decode_head.{target}.'
    mapping.update({
        'aux_classifier.0.': 'auxiliary_head.convs.0.conv.',
        'aux_classifier.1.': 'auxiliary_head.convs.0.bn.',
        'aux_classifier.4.': 'auxiliary_head.conv_seg.',
    })
    return mapping


def _rename(key: str, mapping: Mapping[str, str]) -> Optional[str]:
    """Rename ``key`` by its longest prefix in ``mapping``; None if no prefix matches."""
    best = max((p for p in mapping if key.startswith(p)), key=len, default=None)
    return None if best is None else mapping[best] + key[len(best):]


def torchvision_to_plugin_key(key: str, num_atrous_rates: int = 3) -> Optional[str]:
    """The plugin key of a torchvision DeepLabV3 key, or None if torchvision has no such key.

    Example:
        >>> torchvision_to_plugin_key('classifier.0.convs.4.1.weight')
        'decode_head.aspp.image_pool.conv.weight'
    """
    return _rename(key, torchvision_prefix_map(num_atrous_rates))


def plugin_to_torchvision_key(key: str, num_atrous_rates: int = 3) -> Optional[str]:
    """The inverse of :func:`torchvision_to_plugin_key` (used to name missing source keys)."""
    inverse = {v: k for k, v in torchvision_prefix_map(num_atrous_rates).items()}
    return _rename(key, inverse)


def detect_resnet_depth(state_dict: Mapping[str, Tensor]) -> int:
    """ResNet depth of a torchvision DeepLabV3 state dict, from the number of layer3 units.

    Raises:
        TorchvisionConversionError: if there are no ``backbone.layer3`` keys or their count
            matches neither ResNet-50 (6 units) nor ResNet-101 (23 units).
    """
    units = {int(m.group(1)) for k in state_dict
             for m in [re.match(r'backbone\.layer3\.(\d+)\.', k)] if m}
    if not units:
        raise TorchvisionConversionError(
            'the state dict has no backbone.layer3.* keys, so it is not a torchvision '
            f'DeepLabV3-ResNet (first keys: {_listing(list(state_dict)[:_MAX_LISTED])}).')
    count = max(units) + 1
    if count not in DEPTH_BY_LAYER3_UNITS:
        raise TorchvisionConversionError(
            f'backbone.layer3 has {count} units; torchvision\'s DeepLabV3 uses ResNet-50 '
            '(6 units) or ResNet-101 (23 units).')
    return DEPTH_BY_LAYER3_UNITS[count]


def load_torchvision_state_dict(path: str) -> 'OrderedDict[str, Tensor]':
    """Read a torchvision state dict (``torch.save(model.state_dict())``) with weights only.

    Also accepted: the checkpoints of torchvision's reference training script
    (``{'model': state_dict, ...}``) and ``{'state_dict': ...}`` wrappers, and keys prefixed by
    ``module.`` (saved from DistributedDataParallel).

    Raises:
        UserInputError: ``path`` is not a file.
        TorchvisionConversionError: the file cannot be read with ``weights_only=True`` or holds
            no mapping of names to tensors.
    """
    from deeplabv3_plugin.engine.config_checks import check_file_exists

    check_file_exists(path, 'source checkpoint',
                      'Expected a torchvision DeepLabV3 state dict (.pth), e.g. '
                      'deeplabv3_resnet50_coco-cd0a2569.pth.')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a torch file) ...
        raise TorchvisionConversionError(
            f'cannot read {path!r} as a weights-only torch file ({type(error).__name__}: '
            f'{str(error).splitlines()[0] if str(error) else ""}). Save the state dict alone, '
            'e.g. torch.save(checkpoint["model"], "weights.pth").') from error
    if isinstance(obj, Mapping):
        for wrapper in ('model', 'state_dict'):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise TorchvisionConversionError(
            f'{path!r} does not hold a state dict (a mapping of names to tensors), got '
            f'{type(obj).__name__}.')
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                       for k, v in obj.items())


def convert_state_dict(source: Mapping[str, Tensor], target: Mapping[str, Tensor],
                       num_atrous_rates: int = 3) -> Tuple['OrderedDict[str, Tensor]', List[str]]:
    """Rename a torchvision DeepLabV3 state dict into the layout of ``target``, checking it all.

    Every source key must map onto a target key of the same shape, and every target key must
    be filled, with two tolerated exceptions that change no computation: BN
    ``num_batches_tracked`` counters absent from an old source are taken from ``target``, and
    when the source has no ``aux_classifier`` at all (``aux_loss=False``), the target's
    ``auxiliary_head`` is left out of the result (it only adds a training loss).

    Args:
        source (Mapping[str, Tensor]): torchvision ``DeepLabV3`` state dict.
        target (Mapping[str, Tensor]): state dict (or meta-tensor state dict) of the plugin
            model, giving the expected keys and shapes.
        num_atrous_rates (int): Atrous branches of the target ASPP. Default: 3.

    Returns:
        tuple: the converted state dict (target key order) and notes for the user (list of
        str, e.g. that the auxiliary head was not in the source).

    Raises:
        TorchvisionConversionError: naming the unknown, surplus and missing keys (missing ones
            by their torchvision name), shape mismatches, and a class-count mismatch with the
            option that fixes it.
    """
    mapping = torchvision_prefix_map(num_atrous_rates)
    renamed: Dict[str, str] = {}
    unknown = []
    for key in source:
        new_key = _rename(key, mapping)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = key
    surplus = [src for dst, src in renamed.items() if dst not in target]

    notes = []
    has_aux = any(k.startswith('aux_classifier.') for k in source)
    required = [k for k in target if has_aux or not k.startswith('auxiliary_head.')]
    if not has_aux and len(required) < len(target):
        notes.append('the source has no aux_classifier (torchvision aux_loss=False): the '
                     'auxiliary_head is not in the converted checkpoint and keeps its '
                     'initialisation when the checkpoint is loaded; it only adds a training '
                     'loss (set model.auxiliary_head=None to train without it).')
    missing = [k for k in required if k not in renamed
               and not k.endswith('num_batches_tracked')]

    mismatched, class_counts = [], {}
    for dst, src in renamed.items():
        if dst in target and tuple(source[src].shape) != tuple(target[dst].shape):
            mismatched.append(f'{src} {tuple(source[src].shape)} -> {dst} '
                              f'{tuple(target[dst].shape)}')
            if dst.endswith('conv_seg.weight'):
                class_counts[dst.split('.')[0]] = (source[src].shape[0], target[dst].shape[0])

    problems = []
    if unknown:
        problems.append(f'{len(unknown)} key(s) that torchvision\'s DeepLabV3-ResNet does not '
                        f'have: {_listing(unknown)}')
    if surplus:
        problems.append(f'{len(surplus)} key(s) with no place in the target model (another '
                        f'depth or head?): {_listing(surplus)}')
    if missing:
        names = [plugin_to_torchvision_key(k, num_atrous_rates) or k for k in missing]
        problems.append(f'{len(missing)} key(s) missing from the source: {_listing(names)}')
    for head, (found, expected) in class_counts.items():
        problems.append(f'the source predicts {found} classes, the config\'s {head} '
                        f'{expected}: convert with --cfg-options model.decode_head.num_classes='
                        f'{found} model.auxiliary_head.num_classes={found}')
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatch(es): {_listing(mismatched)}')
    if problems:
        raise TorchvisionConversionError(
            'not a torchvision DeepLabV3 state dict that fits the target config: ' +
            '; '.join(problems) + '.')

    converted = OrderedDict()
    for key in required:
        if key in renamed:
            converted[key] = source[renamed[key]].detach().clone()
        else:  # a num_batches_tracked counter the source lacks
            converted[key] = torch.zeros_like(target[key], device='cpu')
    return converted, notes


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
    """Check, in eval mode, that ``model`` computes what torchvision's DeepLabV3 computes.

    Weights alone do not pin the function: a config with the deep stem, uncontracted rates,
    output stride 16, other ASPP rates, ``align_corners=True`` or another normalisation
    would load the same tensors and give different logits. This compares every conv's stride,
    dilation and padding, the BN epsilons, the upsampling mode and the data preprocessor with
    torchvision's, and leaves the model's mode as it found it.

    Raises:
        TorchvisionConversionError: listing every difference and the config value to change.
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
        more = len(problems) - _MAX_LISTED
        raise TorchvisionConversionError(
            'the target config does not reproduce torchvision\'s DeepLabV3 (use '
            'configs/torchvision/): ' + '; '.join(problems[:_MAX_LISTED]) +
            (f'; ... ({more} more)' if more > 0 else '') + '.' + hint)


def build_target_model(config: Union[str, 'Config'],
                       cfg_options: Optional[dict] = None) -> Tuple[nn.Module, 'Config']:
    """Build the plugin model of ``config`` (no weight initialisation, nothing downloaded).

    Args:
        config (str | Config): Path of a plugin config, e.g.
            ``configs/torchvision/deeplabv3_r50-tv_os8_voc12aug-513x513.py``, or a loaded
            ``Config`` (copied, not modified).
        cfg_options (dict | None): Overrides merged into the config (``--cfg-options``).

    Returns:
        tuple: the model (``nn.Module``, train mode, randomly initialised) and the config.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import deeplabv3_plugin  # noqa: F401  (registers the plugin's modules)
    from deeplabv3_plugin.engine.config_checks import check_cfg_options, load_config

    cfg = copy.deepcopy(config) if isinstance(config, Config) else load_config(config)
    check_cfg_options(cfg, cfg_options, cfg.filename or '')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(cfg.model), cfg


def _dataset_meta(num_classes: int) -> Optional[dict]:
    """VOC class names and palette when the model predicts torchvision's 21 VOC classes."""
    if num_classes != 21:
        return None
    from mmseg.datasets import PascalVOCDataset
    meta = PascalVOCDataset.METAINFO
    return dict(classes=list(meta['classes']), palette=[list(c) for c in meta['palette']])


def convert_torchvision_checkpoint(src: str, dst: str, config: Union[str, 'Config'],
                                   cfg_options: Optional[dict] = None) -> dict:
    """Convert a torchvision DeepLabV3 file into an mmengine checkpoint of ``config``.

    Nothing is written unless the whole conversion succeeds; the file is written to a
    temporary name next to ``dst`` and renamed into place.

    Args:
        src (str): torchvision state dict file (``deeplabv3_resnet50_coco-cd0a2569.pth`` ...).
        dst (str): Output checkpoint, ``{'state_dict': ..., 'meta': ...}``; load it with
            ``load_from``, ``tools/test.py`` or the inference API.
        config (str | Config): Plugin config (path or loaded) that reproduces torchvision's
            architecture.
        cfg_options (dict | None): Config overrides (e.g. another ``num_classes``).

    Returns:
        dict: the checkpoint's ``meta`` (source, config, depth, converted tensor count,
        notes, ``dataset_meta`` with the VOC classes when there are 21 classes).

    Raises:
        UserInputError: ``src`` or ``config`` does not exist, or a ``cfg_options`` key does not
            fit the config.
        TorchvisionConversionError: the source or the config does not fit (see
            :func:`convert_state_dict` and :func:`check_torchvision_geometry`).
    """
    source = load_torchvision_state_dict(src)
    depth = detect_resnet_depth(source)
    model, cfg = build_target_model(config, cfg_options)
    target_depth = getattr(model.backbone, 'depth', None)
    if target_depth != depth:
        raise TorchvisionConversionError(
            f'the source is a ResNet-{depth} DeepLabV3, the config {cfg.filename!r} builds '
            f'ResNet-{target_depth}: use the r{depth} config of configs/torchvision/.')
    check_torchvision_geometry(model)
    num_rates = len(model.decode_head.effective_rates)
    converted, notes = convert_state_dict(source, model.state_dict(), num_rates)
    num_classes = model.decode_head.out_channels
    meta = dict(
        converted_from=osp.abspath(src),
        converter='deeplabv3_plugin.utils.torchvision_convert',
        source_layout='torchvision.models.segmentation.deeplabv3_resnet{}'.format(depth),
        config=osp.abspath(cfg.filename) if cfg.filename else None,
        cfg=cfg.pretty_text,
        depth=depth,
        num_tensors=len(converted),
        notes=notes)
    dataset_meta = _dataset_meta(num_classes)
    if dataset_meta is not None:
        meta['dataset_meta'] = dataset_meta

    out_dir = osp.dirname(osp.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(prefix='.convert-', suffix='.pth', dir=out_dir)
    os.close(handle)
    try:
        torch.save(dict(state_dict=converted, meta=meta), tmp_path)
        os.replace(tmp_path, dst)
    finally:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
    return meta


def default_config_for(depth: int, config_dir: str) -> str:
    """The torchvision-variant config of ``depth`` in ``config_dir``."""
    return osp.join(config_dir, f'deeplabv3_r{depth}-tv_os8_voc12aug-513x513.py')
