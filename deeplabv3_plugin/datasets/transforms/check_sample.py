"""A pipeline step after mmseg's ``LoadAnnotations`` that refuses labels mmseg accepts silently.

A colour rendering (``(H, W, 3)``), a label of another size than its image (resize/crop stretch
both alike) or values outside the classes (cross-entropy fails without the file name, the metric
drops them) would otherwise train or score a wrong model.
"""
from typing import List, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ...engine.errors import listing
from ..checked_voc import DataError

__all__ = ['CheckSegSample', 'label_problems']

#: How to fix each kind of problem, appended to the pipeline's error.
_FIXES = {
    'not single-channel': 'Convert a colour rendering of the classes back to indices (a '
                          'greyscale or palette PNG like VOC SegmentationClass).',
    'size mismatch': 'Regenerate the label at the image resolution (resizing a label needs '
                     'nearest-neighbour interpolation).',
    'label values': "Common causes: labels saved as colours instead of class indices, 1-based "
                    "indices (see the dataset's `reduce_zero_label`), or `num_classes` not "
                    "matching the dataset's classes.",
}


def label_problems(label: np.ndarray, image_hw: Sequence[int], num_classes: int,
                   ignore_index: int = 255) -> List[Tuple[str, str]]:
    """``(kind, what)`` for each problem of a decoded label map (kinds as in ``_FIXES``); shared
    by :class:`CheckSegSample` and ``tools/check_dataset.py``."""
    if label.ndim != 2:
        return [('not single-channel', f'has shape {label.shape}; expected a single-channel map '
                 'of class indices')]
    problems = []
    if label.shape != tuple(image_hw):
        problems.append(('size mismatch', f'is {label.shape[0]}x{label.shape[1]} (HxW) but its '
                         f'image is {image_hw[0]}x{image_hw[1]}; expected the same size'))
    if label.dtype == np.uint8:  # the pipeline's case: a histogram is ~10x faster than unique
        counts = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        counts = counts[values]
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
    ``0..num_classes-1`` (+ ``ignore_index``). Without a label (inference, e.g.
    ``MMSegInferencer``, which drops ``LoadAnnotations``) it does nothing."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        if results.get('gt_seg_map') is None:
            return results
        problems = label_problems(results['gt_seg_map'], results['ori_shape'][:2],
                                  self.num_classes, self.ignore_index)
        if problems:
            kind, what = problems[0]
            raise DataError(
                f"CheckSegSample: the label `seg_map_path`={results.get('seg_map_path')!r} "
                f"(image `img_path`={results.get('img_path')!r}) {what}. {_FIXES[kind]}")
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
