"""The int8 rows of the benchmark: the plugin's model exported, quantized and run by ONNX Runtime.

For one benchmark model, :func:`onnx_variants` exports the float32 graph
(:mod:`deeplabv3_plugin.deploy.export`, BN folded), quantizes it as
``tools/export_onnx.py --int8`` does (:mod:`deeplabv3_plugin.deploy.int8`, calibrated on
generated SyntheticShapes images at the benchmark size) and returns calls that run each graph
on the benchmark image and take the argmax, the same work as ``test_step`` (normalisation,
network, upsampling, argmax). :func:`profile_by_op` shows where the int8 time goes.
"""
import json
import os
import os.path as osp
import tempfile
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from deeplabv3_plugin.apis.fast_inference import fuse_conv_bn
from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes
from deeplabv3_plugin.deploy.export import INPUT_NAME, export_onnx
from deeplabv3_plugin.deploy.int8 import calibration_images, int8_summary, quantize_int8

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


def onnx_variants(model: torch.nn.Module, image: torch.Tensor, threads: int,
                  work_dir: str) -> Tuple[Dict[str, Callable[[], object]], dict]:
    """``{'onnx-fp32': call, 'onnx-int8': call}`` for ``model`` and what was left in float.

    Args:
        model: The plugin segmentor in eval mode (copied, not changed).
        image: The benchmark image, uint8 (3, H, W).
        threads: ONNX Runtime intra-op threads.
        work_dir: Where the .onnx files and the calibration images go.
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
    calls = {}
    for name, path in files.items():
        session = _session(path, threads)
        calls[name] = (lambda s=session: s.run(None, {INPUT_NAME: raw})[0].argmax(1))
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
