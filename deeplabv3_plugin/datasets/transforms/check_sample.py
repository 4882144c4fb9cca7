"""Per-sample validation of a loaded (image, label) pair: sizes and label values.

Two data errors pass mmseg's pipeline silently and surface as a wrong model: a label of another
size than its image (the resize/crop transforms stretch both to the same target; ``IoUMetric``
later fails far from the cause), and label values outside the classes (CPU cross-entropy raises
``Target 37 is out of bounds`` without the file, ``IoUMetric`` drops them silently). Typical
causes: colour-coded labels, 1-based indices, a wrong ``reduce_zero_label``, a class-count
mismatch. :class:`CheckSegSample` goes right after the label loader, before any resize.
"""
from typing import Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ...engine.errors import UserInputError, listing
from ..errors import DataError

__all__ = ['CheckSegSample']


@TRANSFORMS.register_module()
class CheckSegSample(BaseTransform):
    """Check that a sample's label matches its image size and holds only valid classes.

    Reads ``gt_seg_map``, ``ori_shape`` (the image size as read from disk, so test pipelines
    that resize before loading the label work too), ``img_path`` and ``seg_map_path``; changes
    nothing.

    Args:
        num_classes: Classes the model predicts; valid values are ``0..num_classes-1`` and
            ``ignore_index``.
        ignore_index: The value excluded from loss and metric (VOC's void border). Defaults to 255.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if not isinstance(num_classes, int) or not 1 <= num_classes <= 255:
            raise ValueError(f'CheckSegSample: num_classes must be an int in 1..255 (labels are '
                             f'uint8), got {num_classes!r}.')
        if not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes:
            raise ValueError(f'CheckSegSample: ignore_index must be an int outside the class '
                             f'indices 0..{num_classes - 1}, got {ignore_index!r}.')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def _bad_values(self, label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Label values that are neither a class nor the ignore index, and their pixel counts."""
        if label.dtype == np.uint8:  # the usual case: a histogram is ~10x faster than unique
            counts = np.bincount(label.ravel(), minlength=256)
            values = np.flatnonzero(counts)
            counts = counts[values]
        else:
            values, counts = np.unique(label, return_counts=True)
        bad = ((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)
        return values[bad], counts[bad]

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:
            raise UserInputError('CheckSegSample: the sample has no `gt_seg_map`; place '
                                 'CheckSegSample right after LoadAnnotations (or '
                                 'CheckedLoadAnnotations) in the pipeline.')
        label = results['gt_seg_map']
        img_path = results.get('img_path')
        seg_path = results.get('seg_map_path')
        image_shape = tuple(results['ori_shape'][:2])
        if tuple(label.shape[:2]) != image_shape:
            raise DataError(
                f'CheckSegSample: the label `seg_map_path`={seg_path!r} is {label.shape[0]}x'
                f'{label.shape[1]} (HxW) but its image `img_path`={img_path!r} is '
                f'{image_shape[0]}x{image_shape[1]}; expected the same size, one class index per '
                f'image pixel. Regenerate the label at the image resolution (resizing a label '
                f'needs nearest-neighbour interpolation).')
        values, counts = self._bad_values(label)
        if values.size:
            listed = listing((f'{v} ({c} px)' for v, c in zip(values.tolist(), counts.tolist())),
                             limit=8)
            raise DataError(
                f'CheckSegSample: the label `seg_map_path`={seg_path!r} (image {img_path!r}) '
                f'contains values {listed} outside the {self.num_classes} classes; '
                f'expected class indices 0..{self.num_classes - 1} or the ignore index '
                f'{self.ignore_index}. Common causes: labels saved as colours instead of class '
                f'indices, 1-based indices (see the dataset\'s `reduce_zero_label`), or '
                f'`num_classes` not matching the dataset\'s classes.')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
