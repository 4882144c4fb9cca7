"""Inference API: ``init_model`` (the fast path by default), ``inference_model``, and
:func:`~deeplabv3_plugin.checkpoint.segmentor.build_segmentor` (the package's one model builder)."""
import copy
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmcv.transforms import Compose, LoadAnnotations, LoadImageFromFile, TestTimeAug
from mmengine import Config
from mmengine.logging import print_log
from mmseg.registry import MODELS, TRANSFORMS
from torch import nn

from ..checkpoint.segmentor import build_segmentor
from ..cpu_features import resolve_bf16
from ..datasets.transforms import CheckSegSample
from ..deploy.artifacts import choose_calibrated_engine, exported_model
from ..deploy.fast_inference import FastInferenceModel
from ..deploy.int8 import CALIBRATION_IMAGES

__all__ = ['init_model', 'inference_model', 'inference_pipeline']

#: Test-pipeline steps that need a label, which inference does not have (subclasses included).
LABEL_TRANSFORMS = (LoadAnnotations, CheckSegSample)


def init_model(config: Union[str, Path, Config], checkpoint: Optional[str] = None,
               device: str = 'cpu', fast: bool = True, bf16: bool = False,
               force_bf16: bool = False, compile: bool = False,
               cfg_options: Optional[dict] = None, backend: str = 'pytorch',
               precision: str = 'auto', calib_dir: Optional[str] = None,
               calib_num: int = CALIBRATION_IMAGES) -> nn.Module:
    """:func:`build_segmentor`, then (``fast=True``) its :class:`FastInferenceModel`; ``bf16``
    only where it pays (GPU, native-bf16 CPU), ``force_bf16`` everywhere. ``backend``
    ``'onnxruntime'``/``'openvino'`` (or ``'auto'``: the fastest engine measured on this kind of
    CPU that holds accuracy) returns an ``ExportedSegmentor`` of the checkpoint's cached graph
    in ``precision`` (``'auto'``, ``'fp32'``, ``'bf16'``, ``'int8'``)."""
    if (bf16 or force_bf16 or compile) and not fast:
        raise ValueError('init_model: bf16=True or compile=True needs fast=True')
    if bf16 and precision not in ('auto', 'bf16'):
        raise ValueError(f'init_model: bf16=True and precision={precision!r}: choose one')
    model = build_segmentor(config, checkpoint, cfg_options, device=device)
    engine, reason, calibration = choose_calibrated_engine(
        model.cfg, backend, 'bf16' if bf16 else precision, 'fast', device,
        calib_dir=calib_dir, calib_num=calib_num)
    print_log(f'init_model: {reason}', logger='current')
    if engine.exported:
        if checkpoint is None or not fast:
            raise ValueError(f'init_model(backend={backend!r}): {engine} runs a checkpoint\'s '
                             'exported graph: pass checkpoint=... and keep fast=True')
        exported = MODELS.build(exported_model(model.cfg, checkpoint, engine, calibration))
        exported.cfg, exported.dataset_meta = model.cfg, model.dataset_meta
        return exported
    if not fast:
        return model
    bf16 = resolve_bf16(engine.precision == 'bf16', force_bf16, device,
                        what='init_model(bf16=True)')
    return FastInferenceModel(model, bf16=bf16, compile=compile or engine.compile,
                              copy_model=False)


def is_step(step: dict, classes) -> bool:
    kind = step.get('type')
    kind = TRANSFORMS.get(kind) if isinstance(kind, str) else kind
    return isinstance(kind, type) and issubclass(kind, classes)


def inference_pipeline(steps: List[dict]) -> List[dict]:
    """A test (or TTA) pipeline loading paths or BGR arrays, without label steps: found by
    class, inside ``TestTimeAug`` too (mmseg's inferencer drops top-level LoadAnnotations)."""
    result = []
    for step in copy.deepcopy(steps):
        if is_step(step, LABEL_TRANSFORMS):
            continue
        if is_step(step, LoadImageFromFile):
            step['type'] = 'InferencerLoader'
        elif is_step(step, TestTimeAug):
            groups = [[t for t in group if not is_step(t, LABEL_TRANSFORMS)]
                      for group in step['transforms']]
            step['transforms'] = [group for group in groups if group]
        result.append(step)
    if not any(step['type'] == 'InferencerLoader' for step in result):
        raise ValueError(f'no LoadImageFromFile (or subclass) in the test pipeline {steps}')
    return result


def inference_model(model: nn.Module, img: Union[str, Path, np.ndarray, Sequence]
                    ) -> Union[np.ndarray, List[np.ndarray]]:
    """``(H, W)`` int64 label map(s) of an image path or BGR array, or of each of a list (sizes
    may mix); unlike mmseg's ``inference_model`` it leaves ``model.cfg`` unedited."""
    cfg = model.cfg
    pipeline = Compose(inference_pipeline(cfg.get('test_pipeline')
                                          or cfg.test_dataloader.dataset.pipeline))
    label_maps = []
    for image in img if isinstance(img, (list, tuple)) else [img]:
        array = isinstance(image, np.ndarray)
        if array and (image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise ValueError(f'inference_model: img array has shape {image.shape}, expected '
                             '(H, W, 3) BGR or (H, W) gray')
        packed = pipeline(dict(img=image) if array else dict(img_path=str(image)))
        batch = dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']])
        with torch.no_grad():
            label_maps.append(model.test_step(batch)[0].pred_sem_seg.data[0].cpu().numpy())
    return label_maps if isinstance(img, (list, tuple)) else label_maps[0]
