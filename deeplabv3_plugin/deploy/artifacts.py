"""Exported graphs in a cache, made once per checkpoint: ``<cache>/<key>/fp32.onnx`` and
``int8-<calibration>.onnx``, the key hashing the checkpoint's bytes, the model config, the output
stride and the exporter's and quantizer's versions. Height and width stay dynamic, so one graph
serves every image size, TTA scale and engine."""
import copy
import hashlib
import json
import logging
import os
import os.path as osp
import tempfile
from typing import List, Optional, Tuple

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import init_default_scope

from ..checkpoint.routes import file_sha256
from ..errors import UserInputError
from ..version import __version__
from .engines import Engine, choose_engine
from .int8 import CALIBRATION_IMAGES

__all__ = ['cache_root', 'calibration_files', 'choose_calibrated_engine', 'exported_graph',
           'exported_model']

CACHE_ENV = 'DEEPLABV3_PLUGIN_CACHE'


def cache_root() -> str:
    """``$DEEPLABV3_PLUGIN_CACHE``, else ``~/.cache/deeplabv3_plugin``, + ``/engines``."""
    root = os.environ.get(CACHE_ENV) or osp.join(osp.expanduser('~'), '.cache',
                                                 'deeplabv3_plugin')
    return osp.join(root, 'engines')


def _graph_key(cfg: Config, checkpoint: str, output_stride: Optional[int]) -> dict:
    import torch
    weights = checkpoint if '://' in checkpoint else file_sha256(checkpoint)
    return dict(weights=weights, model=json.loads(json.dumps(cfg.model.to_dict(), default=repr,
                                                             sort_keys=True)),
                output_stride=output_stride, exporter=f'torch {torch.__version__}',
                plugin=__version__)


def _write_atomically(target: str, write) -> None:
    """``write(path)`` into a temporary file beside ``target``, then rename it there."""
    handle, partial = tempfile.mkstemp(dir=osp.dirname(target), suffix='.partial.onnx')
    os.close(handle)
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        if osp.exists(partial):
            os.remove(partial)


def calibration_files(cfg: Config, num: int, calib_dir: Optional[str] = None) -> List[str]:
    """``num`` int8 calibration images: the first of ``calib_dir``, else ``num`` spread evenly
    over the config's training split."""
    from .int8 import calibration_images
    if calib_dir:
        return calibration_images(calib_dir, num)
    from mmseg.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    try:
        dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
        dataset = DATASETS.build(dataset_cfg)
        paths = [dataset.get_data_info(int(i))['img_path']
                 for i in np.linspace(0, len(dataset) - 1, min(num, len(dataset))).round()]
    except Exception as error:  # a missing split file, folder or key: say which, and the way out
        raise UserInputError(f'int8 calibration: the training split of the config '
                             f'(train_dataloader.dataset) cannot be listed: {error} Pass '
                             '--calib-dir DIR with images like the test images.') from None
    if not paths:
        raise UserInputError('int8 calibration: the training split of the config is empty; '
                             'pass --calib-dir DIR.')
    return sorted(set(paths))


def exported_graph(cfg: Config, checkpoint: str, precision: str = 'fp32',
                   output_stride: Optional[int] = None,
                   calibration: Optional[List[str]] = None) -> str:
    """Path of the cached graph of ``cfg``'s model with ``checkpoint``'s weights (BN folded) at
    ``output_stride``, in ``precision`` ('fp32', or 'int8' calibrated on ``calibration``);
    made now if it is not in the cache yet. 'bf16' is the float32 graph (the engine converts)."""
    key = _graph_key(cfg, checkpoint, output_stride)
    folder = osp.join(cache_root(), hashlib.sha256(
        json.dumps(key, sort_keys=True).encode()).hexdigest()[:20])
    os.makedirs(folder, exist_ok=True)
    fp32 = osp.join(folder, 'fp32.onnx')
    if not osp.exists(fp32):
        print_log(f'Exporting the model to ONNX, once for this checkpoint: {fp32}',
                  logger='current')
        _write_atomically(fp32, lambda path: _export(cfg, checkpoint, output_stride, path))
        with open(osp.join(folder, 'key.json'), 'w') as out:
            json.dump(key, out, indent=1)
    if precision != 'int8':
        return fp32
    if not calibration:
        raise ValueError('exported_graph: int8 needs calibration images')
    import onnxruntime
    calib_key = hashlib.sha256(json.dumps(
        [onnxruntime.__version__] + [(osp.basename(p), file_sha256(p)) for p in calibration]
    ).encode()).hexdigest()[:12]
    int8 = osp.join(folder, f'int8-{calib_key}.onnx')
    if not osp.exists(int8):
        from .int8 import quantize_int8
        print_log(f'Quantizing to int8 on {len(calibration)} calibration image(s), once: {int8}',
                  logger='current')
        _write_atomically(int8, lambda path: quantize_int8(fp32, path, calibration))
    else:
        print_log(f'Reusing the cached int8 graph {int8}', logger='current')
    return int8


def _export(cfg: Config, checkpoint: str, output_stride: Optional[int], out_file: str) -> None:
    from .fast_inference import fuse_conv_bn
    from ..checkpoint.segmentor import build_segmentor
    from .export import export_onnx
    model = build_segmentor(cfg, checkpoint, output_stride=output_stride)
    fuse_conv_bn(model)
    export_onnx(model, out_file)


def choose_calibrated_engine(cfg: Config, backend: str = 'auto', precision: str = 'auto',
                             goal: str = 'exact', device: str = 'cpu', distributed: bool = False,
                             calib_dir: Optional[str] = None,
                             calib_num: int = CALIBRATION_IMAGES
                             ) -> Tuple[Engine, str, Optional[List[str]]]:
    """:func:`~.engines.choose_engine`, and for int8 its calibration images. Where ``auto``
    chose int8 but no images are at hand (no training split, no ``calib_dir``), it warns and
    takes the float32 choice instead; an int8 asked for by name raises."""
    engine, reason = choose_engine(backend, precision, goal, device, distributed)
    if engine.precision != 'int8':
        return engine, reason, None
    try:
        return engine, reason, calibration_files(cfg, calib_num, calib_dir)
    except UserInputError as error:
        if precision != 'auto':
            raise
        engine, reason = choose_engine(backend, 'fp32', goal, device, distributed)
        print_log(f'{error} Meanwhile running float32: {engine}.', logger='current',
                  level=logging.WARNING)
        return engine, reason, None


def exported_model(cfg: Config, checkpoint: str, engine: Engine,
                   calibration: Optional[List[str]] = None,
                   output_stride: Optional[int] = None,
                   fallback: bool = False) -> Optional[dict]:
    """The ``ExportedSegmentor`` config running ``cfg``'s model with ``checkpoint``'s weights
    on ``engine`` (int8: calibrated on ``calibration``), from the cache. ``fallback`` (the
    engine was chosen by ``auto``): a model the exporter cannot trace gives a warning and None,
    so the caller runs PyTorch."""
    from .segmentor import exported_model_cfg
    try:
        graph = exported_graph(cfg, checkpoint, engine.precision, output_stride, calibration)
    except UserInputError:
        raise
    except Exception as error:  # the exporter's many error types: a model it cannot trace
        if not fallback:
            raise
        print_log(f'{engine} needs the model exported, which failed ({type(error).__name__}: '
                  f'{error}); running PyTorch instead.', logger='current',
                  level=logging.WARNING)
        return None
    return exported_model_cfg(cfg.model, graph, engine.backend, engine.precision)
