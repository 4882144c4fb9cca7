"""int8 post-training static quantization with ONNX Runtime: QDQ, MinMax calibration, per-channel
int8 weights, uint8 activations; ``Resize``, ``ReduceMean`` and the normalisation stay float32."""
import contextlib
import glob
import os.path as osp
import tempfile
from collections import Counter
from typing import Dict, List, Optional

import cv2
import numpy as np

from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.cpu_features import cpu_features
from deeplabv3_plugin.deploy.export import INPUT_NAME

__all__ = ['CALIBRATION_IMAGES', 'calibration_images', 'quantize_int8', 'int8_summary']

#: Default calibration images: ONNX Runtime's MinMax calibration holds every activation of every
#: image in memory (its bounded mode drops data), about 0.3 GB per 513 x 513 image for R-101.
CALIBRATION_IMAGES = 16

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


def calibration_images(calib_dir: str, num: int) -> List[str]:
    """The first ``num`` images (sorted by name) under ``calib_dir``, searched recursively."""
    files = sorted(path for path in glob.glob(osp.join(osp.abspath(calib_dir), '**', '*'),
                                              recursive=True)
                   if path.lower().endswith(IMAGE_SUFFIXES))
    if not files or num < 1:
        raise UserInputError(f'--calib-dir {calib_dir!r} --calib-num {num}: expected a folder of '
                             f'images ({", ".join(IMAGE_SUFFIXES)}) like the ones the model will '
                             'see, and a number >= 1.')
    return files[:num]


class _CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol: ``get_next`` until None."""

    def __init__(self, files: List[str]) -> None:
        self.files = iter(files)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        path = next(self.files, None)
        if path is None:
            return None
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise UserInputError(f'calibration image {path!r} cannot be read.')
        return {INPUT_NAME: image.transpose(2, 0, 1)[None].astype(np.float32)}


def quantize_int8(fp32_file: str, out_file: str, images: List[str],
                  reduce_range: Optional[bool] = None) -> None:
    """Write the QDQ int8 model of ``fp32_file`` calibrated on ``images``; ``reduce_range``
    None: 7-bit weights where this CPU has no VNNI (x86 int8 sums can saturate there)."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range = not cpu_features().vnni if reduce_range is None else reduce_range
    fp32_file, out_file = osp.abspath(fp32_file), osp.abspath(out_file)
    # ONNX Runtime's shape inference writes temporary files into the working directory.
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        prepared = osp.join(tmp, 'prepared.onnx')
        try:
            quant_pre_process(fp32_file, prepared)
        except Exception:  # symbolic shape inference cannot follow every exported graph
            quant_pre_process(fp32_file, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, out_file, _CalibrationReader(images),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)


def int8_summary(onnx_file: str) -> Dict[str, Counter]:
    """Operators of a QDQ model that run in int8 (dequantized input, quantized output: ONNX
    Runtime fuses such a group into one int8 kernel) and those that stay float."""
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
