"""The engine rows of the benchmark: the plugin's model exported once, quantized, and run by
ONNX Runtime and OpenVINO.

For one benchmark model, :func:`onnx_variants` exports the float32 graph
(:mod:`deeplabv3_plugin.deploy.export`, BN folded), quantizes it as the tools do
(:mod:`deeplabv3_plugin.deploy.int8`, calibrated on generated SyntheticShapes images at the
benchmark size) and returns calls that run each graph through ``ExportedSegmentor.test_step``
on the benchmark batch: the same work as the PyTorch rows' ``test_step`` (preprocessing,
network, upsampling, argmax). :func:`profile_by_op` shows where the int8 time goes.
"""
import importlib.util
import json
import os
import os.path as osp
import tempfile
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from deeplabv3_plugin.deploy.fast_inference import fuse_conv_bn
from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes
from deeplabv3_plugin.deploy.export import INPUT_NAME, export_onnx
from deeplabv3_plugin.deploy.int8 import calibration_images, int8_summary, quantize_int8
from deeplabv3_plugin.cpu_features import cpu_features

CALIBRATION_IMAGES = 4  # calibration holds every activation of every image in memory


def _session(onnx_file: str, threads: int, profile_dir: str = ''):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = osp.join(profile_dir, 'profile')
    return ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])


def calibration_set(size: int, root: str) -> List[str]:
    """Generated SyntheticShapes images at ``size`` px, for calibration."""
    generate_synthetic_shapes(root, num_train=CALIBRATION_IMAGES, num_val=1, image_size=size,
                              seed=1, progress=False)
    return calibration_images(osp.join(root, 'JPEGImages'), CALIBRATION_IMAGES)


#: Row name -> (backend, graph, precision): one export serves every engine.
ENGINE_ROWS = {
    'onnx-fp32': ('onnxruntime', 'onnx-fp32', 'fp32'),
    'onnx-int8': ('onnxruntime', 'onnx-int8', 'int8'),
    'ov-fp32': ('openvino', 'onnx-fp32', 'fp32'),
    'ov-bf16': ('openvino', 'onnx-fp32', 'bf16'),
    'ov-int8': ('openvino', 'onnx-int8', 'int8'),
}


def onnx_variants(model: torch.nn.Module, image: torch.Tensor, threads: int, work_dir: str,
                  batch: Callable[[], dict]) -> Tuple[Dict[str, Callable[[], object]], dict]:
    """Calls of :data:`ENGINE_ROWS` for ``model`` (OpenVINO rows where it is installed) and
    what was left in float.

    Args:
        model: The plugin segmentor in eval mode (copied, not changed).
        image: The benchmark image, uint8 (3, H, W).
        threads: Engine intra-op threads.
        work_dir: Where the .onnx files and the calibration images go.
        batch: Makes a fresh packed test batch of the benchmark image.
    """
    import copy
    folded = copy.deepcopy(model).cpu()
    fuse_conv_bn(folded)
    files = {name: osp.join(work_dir, f'{name}.onnx') for name in ('onnx-fp32', 'onnx-int8')}
    export_onnx(folded, files['onnx-fp32'])
    size = image.shape[-1]
    quantize_int8(files['onnx-fp32'], files['onnx-int8'],
                  calibration_set(size, osp.join(work_dir, f'calibration_{size}')))
    raw = image.float().cpu().numpy()[None]
    from deeplabv3_plugin.deploy.segmentor import ExportedSegmentor
    calls = {}
    for name, (backend, graph, precision) in ENGINE_ROWS.items():
        if backend == 'openvino' and importlib.util.find_spec('openvino') is None:
            continue
        if precision == 'bf16' and not cpu_features().native_bf16:
            continue  # OpenVINO would run it in float32: the same as ov-fp32
        segmentor = ExportedSegmentor(
            files[graph], model.data_preprocessor, backend, precision,
            model.decode_head.align_corners, model.decode_head.out_channels, threads)
        calls[name] = (lambda s=segmentor: s.test_step(batch()))
    summary = {kind: dict(ops) for kind, ops in int8_summary(files['onnx-int8']).items()}
    return calls, dict(files=files, int8_ops=summary, raw=raw)


def profile_by_op(onnx_file: str, raw: np.ndarray, threads: int, top: int = 8) -> List[dict]:
    """ONNX Runtime's per-node profile of one run (after a warm-up), summed per operator type."""
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(onnx_file, threads, profile_dir=tmp)
        session.run(None, {INPUT_NAME: raw})
        session.run(None, {INPUT_NAME: raw})
        trace = session.end_profiling()
        with open(trace) as f:
            events = json.load(f)
        os.remove(trace)
    runs = [e for e in events if e.get('name') == 'model_run']
    last_start = runs[-1]['ts'] if runs else 0
    per_op: Dict[str, float] = defaultdict(float)
    for event in events:
        if event.get('cat') == 'Node' and event['ts'] >= last_start and \
                event.get('name', '').endswith('_kernel_time'):
            per_op[event['args'].get('op_name', '?')] += event['dur'] / 1e3
    total = sum(per_op.values()) or 1.0
    rows = sorted(per_op.items(), key=lambda item: -item[1])[:top]
    return [dict(op=op, ms=ms, share=ms / total) for op, ms in rows]
