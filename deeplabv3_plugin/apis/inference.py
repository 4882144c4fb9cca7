"""Inference API: build a segmentor from a config and checkpoint, predict label maps.

::

    from deeplabv3_plugin.apis import init_model, inference_model
    model = init_model('configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py',
                       'work_dirs/demo/<run>/train/iter_1000.pth')
    label_map = inference_model(model, 'image.jpg')          # (H, W) int64 class indices

The model comes back on the fast inference path by default (channels_last, BN folded into the
convolutions: the same predictions up to float rounding, see :mod:`.fast_inference`);
``bf16=True`` adds bf16 autocast. ``fast=False`` returns the plain mmseg segmentor.
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
from mmseg.apis import init_model as mmseg_init_model
from mmseg.registry import TRANSFORMS
from torch import nn

from ..datasets.transforms import CheckSegSample
from .fast_inference import FastInferenceModel

__all__ = ['init_model', 'inference_model']

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


def init_model(config: Union[str, Path, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               fast: bool = True,
               bf16: bool = False,
               compile: bool = False,
               cfg_options: Optional[dict] = None) -> nn.Module:
    """Build a segmentor for inference from a config and (optionally) a checkpoint.

    Wraps :func:`mmseg.apis.init_model` (config loading, ``cfg_options``, checkpoint and
    ``dataset_meta`` loading, eval mode) and adds two things:

    * SyncBN layers become plain BN (mmengine's ``revert_sync_batchnorm``): inference runs in
      one process, where both compute the same, and the paper's configs use SyncBN.
    * ``fast=True`` returns a :class:`FastInferenceModel` (channels_last + BN folded, built on
      this model without a copy), which offers the segmentor's interface
      (``test_step``, ``dataset_meta``, ``cfg`` ...), so mmseg's own APIs accept it too.

    Args:
        config (str | Path | Config): Config file or object.
        checkpoint (str, optional): Checkpoint file; None keeps random weights.
        device (str): ``'cpu'``, ``'cuda'`` or ``'cuda:N'``. Default: ``'cpu'``.
        fast (bool): Return the fast inference path. Default: True.
        bf16 (bool): bf16 autocast on top of the fast path (changes numerics slightly; needs
            ``fast=True``). Default: False.
        compile (bool): ``torch.compile`` the network on top of the fast path (the first image,
            and each new image size, compiles; needs ``fast=True``). Default: False.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        nn.Module: The segmentor in eval mode, or its :class:`FastInferenceModel`.
    """
    if isinstance(config, (str, Path)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'init_model: config file {str(config)!r} does not exist')
        config = Config.fromfile(config)
    elif not isinstance(config, Config):
        raise TypeError(f'init_model: config must be a file path or an mmengine Config, got '
                        f'{type(config).__name__}')
    if checkpoint is not None and '://' not in str(checkpoint) and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'init_model: checkpoint file {str(checkpoint)!r} does not '
                                'exist')
    for name, value in (('bf16', bf16), ('compile', compile)):
        if value and not fast:
            raise ValueError(f'init_model: {name}=True is part of the fast path; it needs '
                             'fast=True')
    target = _check_device(device)
    import deeplabv3_plugin.runtime  # noqa: F401  (loads mmengine checkpoints, safely)
    model = mmseg_init_model(config, checkpoint, device='cpu', cfg_options=cfg_options)
    model = revert_sync_batchnorm(model).to(target)
    model.eval()
    if fast:
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
