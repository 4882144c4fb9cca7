"""Inference API: build a segmentor from a config and checkpoint, predict label maps.

::

    from deeplabv3_plugin.apis import init_model, inference_model
    model = init_model('configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py',
                       'work_dirs/demo/<run>/train/iter_1000.pth')
    label_map = inference_model(model, 'image.jpg')          # (H, W) int64 class indices

The model comes back on the fast inference path by default (channels_last, BN folded into the
convolutions: the same predictions up to float rounding, see :mod:`.fast_inference`);
``bf16=True`` adds bf16 autocast where the CPU has native bf16. ``fast=False`` returns the plain
mmseg segmentor. :func:`build_segmentor` is the package's one model builder.
"""
import copy
import os.path as osp
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmcv.transforms import LoadAnnotations
from mmengine import Config
from mmengine.dataset import Compose
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint
from mmseg.registry import MODELS, TRANSFORMS
from torch import nn

from ..datasets.transforms import CheckSegSample
from ..engine.checkpoint_checks import CheckpointMismatchError, compare_state_dicts
from ..engine.config_checks import check_cfg_options, check_file_exists, load_config
from ..engine.errors import UserInputError
from ..utils.cpu_features import resolve_bf16
from .fast_inference import FastInferenceModel

__all__ = ['build_segmentor', 'init_model', 'inference_model']

ImageType = Union[str, Path, np.ndarray]
#: Test-pipeline steps that need a label, which inference does not have (subclasses included:
#: mmseg's ``LoadAnnotations``, the plugin's ``CheckedLoadAnnotations``).
LABEL_TRANSFORMS = (LoadAnnotations, CheckSegSample)


def _check_device(device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"init_model: device={device!r} is not a device: expected 'cpu', "
                         "'cuda' or 'cuda:N'") from error
    if parsed.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'init_model: device={device!r} but CUDA is not available; use '
                         "device='cpu'")
    return parsed


def build_segmentor(config: Union[str, Path, Config],
                    checkpoint: Optional[str] = None,
                    cfg_options: Optional[dict] = None,
                    output_stride: Optional[int] = None,
                    device: str = 'cpu') -> nn.Module:
    """Build ``config``'s segmentor for inference: the one builder of the package.

    :func:`init_model`, ONNX export and the benchmarks all build through here: checked
    ``cfg_options``, no pretrained-weight download (the weights come from ``checkpoint``),
    SyncBN turned into BN (inference runs in one process, where both compute the same), a
    checkpoint that must fit the model (only the training-only auxiliary head may differ;
    mmengine would load the rest and leave the misfits random), ``dataset_meta`` from the
    checkpoint, ``model.cfg`` set, eval mode.

    Args:
        config (str | Path | Config): Config file or object (a Config is copied).
        checkpoint (str, optional): mmengine checkpoint or plain state dict; None keeps the
            initialisation (for tests and speed measurements).
        cfg_options (dict, optional): Overrides merged into the config (keys checked).
        output_stride (int, optional): Run at this output stride (``test_output_stride``), e.g. 8
            for a model trained at 16; needs the plugin's ``DeepLabV3`` segmentor.
        device (str): Where the model goes. Default: ``'cpu'``.

    Returns:
        nn.Module: The segmentor in eval mode.

    Raises:
        UserInputError: A missing file, a bad option key, a checkpoint that does not fit, or
            ``output_stride`` on a segmentor without that knob.
    """
    cfg = copy.deepcopy(config) if isinstance(config, Config) else load_config(str(config))
    name = cfg.filename or '<config>'
    check_cfg_options(cfg, cfg_options, name)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.pop('pretrained', None)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    meta = {}
    if checkpoint is not None:
        meta = _load_fitting_checkpoint(model, checkpoint)
    if output_stride is not None:
        if not hasattr(model, 'test_output_stride'):
            raise UserInputError(
                f'output stride {output_stride}: the model of {name!r} is a '
                f"{type(model).__name__}, which has no output-stride knob; use the plugin's "
                "type='DeepLabV3' segmentor.")
        model.test_output_stride = output_stride
    model.dataset_meta = meta.get('dataset_meta') or dict(
        classes=cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo', {}).get(
            'classes') or tuple(str(i) for i in range(model.decode_head.num_classes)))
    model.cfg = cfg
    return model.to(_check_device(device)).eval()


def _load_fitting_checkpoint(model: nn.Module, checkpoint: str) -> dict:
    """Load ``checkpoint`` into ``model`` if it fits (auxiliary head aside); returns its meta."""
    if '://' not in checkpoint:  # URLs (open-mmlab://, https://) go to mmengine's loaders
        check_file_exists(checkpoint, 'checkpoint', 'Expected a .pth file written by '
                          'tools/train.py or tools/convert_torchvision.py.')
    import deeplabv3_plugin.runtime  # noqa: F401  (loads mmengine checkpoints, safely)
    loaded = _load_checkpoint(checkpoint, map_location='cpu')
    state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise UserInputError(f'checkpoint {checkpoint!r} holds no state dict.')
    state = {key[len('module.'):] if key.startswith('module.') else key: value
             for key, value in state.items()}

    def without_aux(entries: dict) -> dict:
        return {k: v for k, v in entries.items() if not k.startswith('auxiliary_head.')}

    mismatch = compare_state_dicts(without_aux(model.state_dict()), without_aux(state))
    if mismatch:
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint!r} does not fit the {type(model).__name__} model of the '
            f'config: {mismatch.describe()} Use the config it was trained or converted with.')
    model.load_state_dict(state, strict=False)
    return loaded.get('meta', {}) or {}


def init_model(config: Union[str, Path, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               fast: bool = True,
               bf16: bool = False,
               force_bf16: bool = False,
               compile: bool = False,
               cfg_options: Optional[dict] = None) -> nn.Module:
    """Build a segmentor for inference from a config and (optionally) a checkpoint.

    :func:`build_segmentor` (checked checkpoint, SyncBN as BN, eval mode), then with
    ``fast=True`` a :class:`FastInferenceModel` (channels_last + BN folded, built on this model
    without a copy), which offers the segmentor's interface (``test_step``, ``dataset_meta``,
    ``cfg`` ...), so mmseg's own APIs accept it too.

    Args:
        config (str | Path | Config): Config file or object.
        checkpoint (str, optional): Checkpoint file; None keeps random weights.
        device (str): ``'cpu'``, ``'cuda'`` or ``'cuda:N'``. Default: ``'cpu'``.
        fast (bool): Return the fast inference path. Default: True.
        bf16 (bool): bf16 autocast on top of the fast path where it pays: on a GPU or a CPU with
            native bf16 (AVX512-BF16/AMX). Elsewhere bf16 is emulated and slower, so float32 is
            kept, with one warning giving the measured cost. Default: False.
        force_bf16 (bool): bf16 even where it is emulated (for testing). Default: False.
        compile (bool): ``torch.compile`` the network on top of the fast path (the first image,
            and each new image size, compiles; needs ``fast=True``). Default: False.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        nn.Module: The segmentor in eval mode, or its :class:`FastInferenceModel`.
    """
    if isinstance(config, (str, Path)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'init_model: config file {str(config)!r} does not exist')
    elif not isinstance(config, Config):
        raise TypeError(f'init_model: config must be a file path or an mmengine Config, got '
                        f'{type(config).__name__}')
    if checkpoint is not None and '://' not in str(checkpoint) and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'init_model: checkpoint file {str(checkpoint)!r} does not '
                                'exist')
    for name, value in (('bf16', bf16 or force_bf16), ('compile', compile)):
        if value and not fast:
            raise ValueError(f'init_model: {name}=True is part of the fast path; it needs '
                             'fast=True')
    target = _check_device(device)
    model = build_segmentor(config, checkpoint, cfg_options, device=str(target))
    if fast:
        bf16 = resolve_bf16(bf16, force_bf16, target.type, what='init_model(bf16=True)')
        return FastInferenceModel(model, channels_last=True, fuse_bn=True, bf16=bf16,
                                  compile=compile, copy_model=False)
    return model


def _needs_label(step: dict) -> bool:
    transform = step.get('type')
    if isinstance(transform, str):
        transform = TRANSFORMS.get(transform)
    return isinstance(transform, type) and issubclass(transform, LABEL_TRANSFORMS)


def _test_pipeline(cfg: Config, from_array: bool) -> Compose:
    """The config's test pipeline without the label steps, reading arrays or files."""
    if 'test_pipeline' in cfg:
        steps = copy.deepcopy(cfg.test_pipeline)
    elif 'test_dataloader' in cfg:
        steps = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    else:
        raise KeyError('inference_model: the model config has neither test_pipeline nor '
                       'test_dataloader.dataset.pipeline; add the test pipeline to the config')
    steps = [step for step in steps if not _needs_label(step)]
    if from_array:
        steps[0] = dict(type='LoadImageFromNDArray')
    return Compose(steps)


def _check_image(img) -> None:
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise ValueError(f'inference_model: img array has shape {img.shape}, expected '
                             '(H, W, 3) BGR or (H, W) gray')
    elif isinstance(img, (str, Path)):
        if not osp.isfile(img):
            raise FileNotFoundError(f'inference_model: image file {str(img)!r} does not exist')
    else:
        raise TypeError(f'inference_model: img must be an image path or a numpy array, got '
                        f'{type(img).__name__}')


def inference_model(model: nn.Module,
                    img: Union[ImageType, Sequence[ImageType]]
                    ) -> Union[np.ndarray, List[np.ndarray]]:
    """Predict the label map of one image or of each image of a list.

    Images go through the config's test pipeline (resize, packing; the steps that load or check
    a label removed, see :data:`LABEL_TRANSFORMS`) and
    the model's ``test_step`` one at a time, so images of any size can be mixed. This is
    :func:`mmseg.apis.inference_model` without its two problems: mmseg edits ``model.cfg``'s
    pipeline in place (after an array, a file path fails), and it only removes steps named
    ``LoadAnnotations``, so the plugin's checked pipelines (``CheckedLoadAnnotations``,
    ``CheckSegSample``) fail there for want of a label.

    Args:
        model (nn.Module): From :func:`init_model` (fast or plain), or any mmseg segmentor
            with a ``cfg``.
        img (str | Path | np.ndarray | list): Image file(s) or array(s) (H, W, 3) in BGR order,
            as ``mmcv.imread`` returns them.

    Returns:
        np.ndarray | list[np.ndarray]: ``(H, W)`` int64 class indices at the image's original
        size; a list when ``img`` is a list or tuple.
    """
    cfg = getattr(model, 'cfg', None)
    if not isinstance(cfg, Config):
        raise TypeError(f'inference_model: the model ({type(model).__name__}) has no .cfg, the '
                        'config whose test pipeline prepares the images; build it with '
                        'init_model(config, checkpoint)')
    images = list(img) if isinstance(img, (list, tuple)) else [img]
    if not images:
        raise ValueError('inference_model: img is an empty list')
    for image in images:
        _check_image(image)
    pipelines = {}
    label_maps = []
    for image in images:
        from_array = isinstance(image, np.ndarray)
        if from_array not in pipelines:
            pipelines[from_array] = _test_pipeline(cfg, from_array)
        packed = pipelines[from_array](dict(img=image) if from_array else dict(
            img_path=str(image)))
        batch = dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']])
        with torch.no_grad():
            sample = model.test_step(batch)[0]
        label_maps.append(sample.pred_sem_seg.data[0].cpu().numpy())
    return label_maps if isinstance(img, (list, tuple)) else label_maps[0]
