"""``CheckSegSample``, after mmseg's ``LoadAnnotations``: refuses what mmseg accepts silently and
gets wrong (a colour label, a label of another size than its image, values outside the classes)."""
import os.path as osp
from typing import List, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image
from mmseg.registry import TRANSFORMS

from ...errors import UserInputError, listing

__all__ = ['CheckSegSample', 'label_problems']

_FIXES = {
    'not single-channel': 'Save class indices (a greyscale or palette PNG), not colours.',
    'size mismatch': 'Regenerate the label at the image size (resize labels nearest-neighbour).',
    'label values': "Common causes: colours saved instead of class indices, 1-based indices (see "
                    "`reduce_zero_label`) or `num_classes` not matching the dataset's classes.",
}


def label_problems(label: np.ndarray, image_hw: Sequence[int], num_classes: int,
                   ignore_index: int = 255) -> List[Tuple[str, str]]:
    """``(kind, what)`` for each problem of a decoded label map; ``_FIXES[kind]`` says how to fix
    it. Shared by :class:`CheckSegSample` and ``tools/check_dataset.py``."""
    if label.ndim != 2:
        return [('not single-channel', f'has shape {label.shape}; expected a single-channel map '
                 'of class indices')]
    problems = []
    if label.shape != tuple(image_hw):
        problems.append(('size mismatch', f'is {label.shape[0]}x{label.shape[1]} (HxW) but its '
                         f'image is {image_hw[0]}x{image_hw[1]}; expected the same size'))
    if label.dtype == np.uint8:  # the pipeline's case: a histogram is ~10x faster than unique
        counts = np.bincount(label.ravel(), minlength=256)
        values, counts = np.flatnonzero(counts), counts[counts > 0]
    else:
        values, counts = np.unique(label, return_counts=True)
    bad = ((values < 0) | (values >= num_classes)) & (values != ignore_index)
    if bad.any():
        listed = listing((f'{v} ({c} px)' for v, c in zip(values[bad], counts[bad])), limit=8)
        problems.append(('label values', f'contains values {listed} outside the {num_classes} '
                         f'classes; expected class indices 0..{num_classes - 1} or the ignore '
                         f'index {ignore_index}'))
    return problems


@TRANSFORMS.register_module()
class CheckSegSample(BaseTransform):
    """Check ``gt_seg_map`` against its image size on disk (``ori_shape``) and the classes
    ``0..num_classes-1`` (+ ``ignore_index``). Without a label (inference) it does nothing."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        if results.get('gt_seg_map') is None:
            return results
        problems = label_problems(results['gt_seg_map'], results['ori_shape'][:2],
                                  self.num_classes, self.ignore_index)
        path = results.get('seg_map_path')
        if not problems and isinstance(path, str) and osp.isfile(path):
            with Image.open(path) as label:  # mmseg cast the values to uint8: 256 became 0
                peak = np.asarray(label).max() if label.mode.startswith(('I', 'F')) else 0
            if peak > 255:
                problems = [('label values', f'is a {label.mode} image with values up to {peak}, '
                             'which mmseg\'s uint8 labels wrap (256 -> 0); expected class indices '
                             f'0..{self.num_classes - 1} or the ignore index {self.ignore_index}')]
        if problems:
            kind, what = problems[0]
            raise UserInputError(
                f"CheckSegSample: the label `seg_map_path`={results.get('seg_map_path')!r} "
                f"(image `img_path`={results.get('img_path')!r}) {what}. {_FIXES[kind]}")
        return results

    def __repr__(self) -> str:
        return f'CheckSegSample(num_classes={self.num_classes}, ignore_index={self.ignore_index})'
