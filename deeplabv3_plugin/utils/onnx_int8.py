"""int8 post-training static quantization of the exported model, with ONNX Runtime.

``tools/export_onnx.py ... --int8 --calib-dir DIR`` runs :func:`quantize_int8` on the float32
graph of :mod:`.onnx_export` (BN already folded into the convolutions): ONNX Runtime's
pre-processing (shape inference, graph optimisation), MinMax calibration on real images, then
QDQ quantization with per-channel int8 weights and uint8 activations. Image pooling
(``ReduceMean`` + broadcast) and the dynamic batch/height/width stay as they were: only the
operators ONNX Runtime can run in int8 get quantize/dequantize pairs, the rest (bilinear
``Resize``, ``ReduceMean``, the normalisation) stays float32 (:func:`int8_summary` lists both).

Why ONNX Runtime and not PyTorch's x86 quantization: it is an existing engine that runs the
model's whole graph with dynamic sizes, and the plugin already exports and checks that graph.

Saturation: without VNNI, ONNX Runtime's x86 int8 kernels multiply u8 x s8 pairs with
``vpmaddubsw``, whose 16-bit sums can saturate; ONNX Runtime's documented remedy is
``reduce_range`` (7-bit weights), which :func:`quantize_int8` applies by default on such CPUs
(a model quantized for one CPU kind still runs on the other).
"""
import contextlib
import glob
import os
import os.path as osp
import tempfile
from collections import Counter
from typing import Dict, List, Optional

import cv2
import numpy as np

from deeplabv3_plugin.engine.errors import UserInputError
from deeplabv3_plugin.utils.cpu_features import cpu_features
from deeplabv3_plugin.utils.onnx_export import INPUT_NAME

__all__ = ['calibration_images', 'quantize_int8', 'int8_summary']

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


def calibration_images(calib_dir: str, num: int) -> List[str]:
    """The first ``num`` images (sorted by name) under ``calib_dir``, searched recursively."""
    if not osp.isdir(calib_dir):
        raise UserInputError(f'--calib-dir {calib_dir!r} is not a directory; expected a folder of '
                             'images like the ones the model will see (e.g. the training '
                             'JPEGImages).')
    if num < 1:
        raise UserInputError(f'--calib-num must be >= 1, got {num}.')
    files = sorted(path for path in glob.glob(osp.join(osp.abspath(calib_dir), '**', '*'),
                                              recursive=True)
                   if path.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise UserInputError(f'--calib-dir {calib_dir!r} holds no image '
                             f'({", ".join(IMAGE_SUFFIXES)} files).')
    return files[:num]


def _reader(files: List[str]):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        """One image at a time, as the graph takes it: (1, 3, H, W) float32, BGR, 0..255."""

        def __init__(self) -> None:
            self.files = iter(files)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            path = next(self.files, None)
            if path is None:
                return None
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise UserInputError(f'calibration image {path!r} cannot be read.')
            return {INPUT_NAME: image.transpose(2, 0, 1)[None].astype(np.float32)}

    return ImageReader()


def quantize_int8(fp32_file: str, out_file: str, images: List[str],
                  reduce_range: Optional[bool] = None) -> None:
    """Write the statically quantized (QDQ, per-channel) int8 model of ``fp32_file``.

    Args:
        fp32_file (str): The float32 ONNX model (:func:`.onnx_export.export_onnx`).
        out_file (str): Where the int8 model goes.
        images (list[str]): Calibration images (:func:`calibration_images`).
        reduce_range (bool, optional): 7-bit weights against u8 x s8 saturation; None: where
            this CPU has no VNNI.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if reduce_range is None:
        reduce_range = not cpu_features().vnni
    fp32_file, out_file = osp.abspath(fp32_file), osp.abspath(out_file)
    # ONNX Runtime's shape inference writes temporary files into the working directory.
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        prepared = osp.join(tmp, 'prepared.onnx')
        try:
            quant_pre_process(fp32_file, prepared)
        except Exception:  # symbolic shape inference cannot follow every exported graph
            quant_pre_process(fp32_file, prepared, skip_symbolic_shape=True)
        # (CalibMaxIntermediateOutputs would bound calibration memory, but ONNX Runtime 1.32
        # drops the collected data instead of merging it, so all images are kept at once.)
        quantize_static(prepared, out_file, _reader(images), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    if not osp.isfile(out_file) or os.path.getsize(out_file) == 0:
        raise RuntimeError(f'ONNX Runtime wrote no int8 model to {out_file!r}')


def int8_summary(onnx_file: str) -> Dict[str, Counter]:
    """Operators of a QDQ model that run in int8 and those that stay float.

    int8: a dequantized input and a quantized output (ONNX Runtime fuses such a
    ``DequantizeLinear -> op -> QuantizeLinear`` group into one int8 kernel); float: the rest.
    """
    import onnx
    graph = onnx.load(onnx_file).graph
    dequantized = {out for node in graph.node if node.op_type == 'DequantizeLinear'
                   for out in node.output}
    quantized = {node.input[0] for node in graph.node if node.op_type == 'QuantizeLinear'}
    weights = {init.name for init in graph.initializer}
    summary = dict(int8=Counter(), float=Counter())
    for node in graph.node:
        if node.op_type in ('QuantizeLinear', 'DequantizeLinear', 'Constant', 'Shape'):
            continue
        data_inputs = [name for name in node.input if name and name not in weights]
        int8 = bool(data_inputs) and data_inputs[0] in dequantized and node.output[0] in quantized
        summary['int8' if int8 else 'float'][node.op_type] += 1
    return summary
