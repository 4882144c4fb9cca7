"""A pipeline step after mmseg's ``LoadAnnotations`` that refuses labels mmseg accepts silently.

A colour rendering (``(H, W, 3)``), a label of another size than its image (resize/crop stretch
both alike) or values outside the classes (cross-entropy fails without the file name, the metric
drops them) would otherwise train or score a wrong model.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ...engine.errors import listing
from ..checked_voc import DataError

__all__ = ['CheckSegSample']


@TRANSFORMS.register_module()
class CheckSegSample(BaseTransform):
    """Check that ``gt_seg_map`` is one channel, of the image's size on disk (``ori_shape``),
    with values in ``0..num_classes-1`` or ``ignore_index``. Without a label (inference, e.g.
    ``MMSegInferencer``, which drops ``LoadAnnotations``) it does nothing."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        label = results.get('gt_seg_map')
        if label is None:
            return results
        img_path, seg_path = results.get('img_path'), results.get('seg_map_path')
        if label.ndim != 2:
            raise DataError(
                f'CheckSegSample: the label `seg_map_path`={seg_path!r} decodes to shape '
                f'{label.shape}; expected a single-channel map of class indices (a greyscale '
                f'or palette PNG like VOC SegmentationClass). Convert a colour rendering of the '
                f'classes back to indices first.')
        image_shape = tuple(results['ori_shape'][:2])
        if label.shape != image_shape:
            raise DataError(
                f'CheckSegSample: the label `seg_map_path`={seg_path!r} is {label.shape[0]}x'
                f'{label.shape[1]} (HxW) but its image `img_path`={img_path!r} is '
                f'{image_shape[0]}x{image_shape[1]}; expected the same size, one class index per '
                f'image pixel. Regenerate the label at the image resolution (resizing a label '
                f'needs nearest-neighbour interpolation).')
        counts = np.bincount(label.ravel(), minlength=256)  # ~10x faster than np.unique
        values = np.flatnonzero(counts)
        bad = values[(values >= self.num_classes) & (values != self.ignore_index)]
        if bad.size:
            listed = listing((f'{v} ({counts[v]} px)' for v in bad.tolist()), limit=8)
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
