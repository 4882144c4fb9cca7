"""The engines that run an exported graph: ONNX Runtime and OpenVINO, on the CPU, one call per
batch (``image``: raw BGR 0..255, N x 3 x H x W float32 -> ``logits``)."""
import os.path as osp
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import UserInputError
from .export import INPUT_NAME

__all__ = ['make_runner']

#: OpenVINO's precision hint per requested precision: 'f32' keeps float32 maths; the int8 graph
#: carries its own (QDQ) quantization, so it needs no hint.
_OPENVINO_HINTS = {'fp32': 'f32', 'bf16': 'bf16'}
_INSTALL = {'onnxruntime': 'pip install onnxruntime',
            'openvino': "pip install openvino (or: pip install 'deeplabv3-plugin[engines]')"}


def _module(backend: str):
    try:
        if backend == 'onnxruntime':
            import onnxruntime
            return onnxruntime
        import openvino
        return openvino
    except ImportError as error:
        raise UserInputError(f'--backend {backend}: {backend} is not installed ({error}); '
                             f'{_INSTALL[backend]}, or pick another --backend.') from None


def make_runner(backend: str, onnx_file: str, precision: str = 'fp32',
                threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """A call ``image -> logits`` running ``onnx_file`` with ``backend`` on the CPU, with
    ``threads`` (default: torch's) intra-op threads; OpenVINO caches its compiled model beside
    the file. ``precision``: what the graph holds ('fp32', 'int8'), or 'bf16' (OpenVINO's bf16
    inference hint on the float32 graph)."""
    threads = threads or torch.get_num_threads()
    engine = _module(backend)
    if backend == 'onnxruntime':
        options = engine.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: a test loop's data workers share the cores.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        session = engine.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])
        return lambda image: session.run(None, {INPUT_NAME: image})[0]
    core = engine.Core()
    core.set_property({'CACHE_DIR': osp.join(osp.dirname(onnx_file), 'openvino_cache')})
    config = {'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY'}
    if precision in _OPENVINO_HINTS:
        config['INFERENCE_PRECISION_HINT'] = _OPENVINO_HINTS[precision]
    request = core.compile_model(onnx_file, 'CPU', config).create_infer_request()
    return lambda image: np.array(request.infer({0: image})[0])
