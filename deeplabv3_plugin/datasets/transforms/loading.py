"""Image and label loading that names the file when it cannot be read.

mmcv's ``LoadImageFromFile`` and mmseg's ``LoadAnnotations`` fail far from the cause on a broken
file (OpenCV's ``!buf.empty()``, Pillow's ``cannot identify image file <_io.BytesIO ...>``, a
truncated JPEG silently decoded with a grey lower half), and labels are cast with
``astype(np.uint8)``, so a 16-bit map wraps around and an RGB rendering travels on as
``(H, W, 3)``. These drop-in replacements (same arguments and outputs) raise one
:class:`~deeplabv3_plugin.datasets.errors.DataError` naming the file and what was expected.
"""
import os.path as osp
from typing import Callable, Mapping, Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from ..errors import DataError, MissingDataError

__all__ = ['CheckedLoadImageFromFile', 'CheckedLoadAnnotations', 'map_labels', 'read_and_decode']

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _truncation(content: bytes) -> Optional[str]:
    """Why ``content`` is a truncated JPEG or PNG (no EOI / IEND marker, which cv2 does not
    check), or None."""
    if content.startswith(_JPEG_MAGIC) and content.rfind(b'\xff\xd9') < 0:
        return 'it is a JPEG without its end-of-image marker, i.e. the file is truncated'
    if content.startswith(_PNG_MAGIC) and content.rfind(b'IEND') < 0:
        return 'it is a PNG without its IEND chunk, i.e. the file is truncated'
    return None


def read_and_decode(path: str, decode: Callable[[bytes], Optional[np.ndarray]], *,
                    owner: str, key: str, kind: str,
                    backend_args: Optional[dict] = None) -> np.ndarray:
    """Read ``path`` and ``decode`` its bytes, or raise naming the file and the cause.

    ``owner`` (the transform), ``key`` (the result key of the path) and ``kind`` (``'image'`` or
    ``'label'``) name things in the message. Raises :class:`MissingDataError` (a
    ``FileNotFoundError``) for an absent file, :class:`DataError` for an empty, truncated or
    undecodable one.
    """
    try:
        content = fileio.get(path, backend_args=backend_args)
    except FileNotFoundError as err:
        raise MissingDataError(
            f'{owner}: the {kind} file `{key}`={path!r} does not exist (resolved to '
            f'{osp.abspath(path)!r}). Check the dataset root and split file.') from err
    reason = 'the file is empty (0 bytes)' if not content else _truncation(content)
    image, error = None, None
    if reason is None:
        try:
            image = decode(content)
        except Exception as err:  # the decoders raise many types; all mean "not decodable"
            error = err
        if image is None or image.size == 0:
            head = content[:8].hex(' ')
            detail = f'{type(error).__name__}: {error}' if error else 'the decoder returned none'
            reason = f'it could not be decoded ({detail}; the file starts with bytes {head})'
    if reason is not None:
        raise DataError(
            f'{owner}: the {kind} file `{key}`={path!r} ({len(content)} bytes) is corrupt: '
            f'{reason}. Expected a complete, readable {kind} file (JPEG or PNG). Replace or '
            f'regenerate this file, or remove its name from the split file.') from error
    return image


def map_labels(label: np.ndarray, reduce_zero_label: bool,
               label_map: Optional[Mapping[int, int]]) -> np.ndarray:
    """mmseg ``LoadAnnotations``' label semantics on a uint8 map (or on a set of its values).

    ``reduce_zero_label`` sends 0 to the ignore index 255 and shifts the other classes down by
    one; then ``label_map`` (set by a custom ``metainfo['classes']`` subset) renames ids.
    """
    if reduce_zero_label:
        label = np.where(label == 0, 255, label - 1).astype(np.uint8)
        label[label == 254] = 255
    if label_map:
        remapped = label.copy()
        for old_id, new_id in label_map.items():
            remapped[label == old_id] = new_id
        label = remapped
    return label


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` whose errors name the image file and what is wrong with it."""

    def transform(self, results: dict) -> dict:
        img = read_and_decode(
            results['img_path'],
            lambda b: mmcv.imfrombytes(b, flag=self.color_type, backend=self.imdecode_backend),
            owner=type(self).__name__, key='img_path', kind='image',
            backend_args=self.backend_args)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class CheckedLoadAnnotations(LoadAnnotations):
    """mmseg ``LoadAnnotations`` that names the label file when it is unusable.

    Beyond decoding, it refuses what mmseg would garble silently: several channels (a colour
    rendering; palette PNGs decode to indices and are fine) and values beyond uint8. Whether the
    values are *classes* is checked by :class:`~.check_sample.CheckSegSample`.
    """

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        owner = type(self).__name__
        label = read_and_decode(
            path, lambda b: mmcv.imfrombytes(b, flag='unchanged', backend=self.imdecode_backend),
            owner=owner, key='seg_map_path', kind='label', backend_args=self.backend_args)
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[..., 0]
        if label.ndim != 2:
            raise DataError(
                f'{owner}: the label file `seg_map_path`={path!r} decodes to shape '
                f'{label.shape}, i.e. {label.shape[2]} channels; expected a single-channel map '
                f'of class indices (a greyscale or palette PNG like VOC SegmentationClass). A '
                f'colour rendering of the classes must be converted back to indices first.')
        if label.dtype != np.uint8:
            low, high = int(label.min()), int(label.max())
            if low < 0 or high > 255:
                raise DataError(
                    f'{owner}: the label file `seg_map_path`={path!r} holds {label.dtype} values '
                    f'{low}..{high}; expected class indices that fit in uint8 (0..255, '
                    f'255 = ignore). mmseg would wrap these around silently.')
            label = label.astype(np.uint8)
        dataset_reduce = results.get('reduce_zero_label', False)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = dataset_reduce
        if self.reduce_zero_label != dataset_reduce:
            raise DataError(
                f'{owner}: reduce_zero_label={self.reduce_zero_label} in the pipeline but '
                f'{dataset_reduce} in the dataset; set it in one place (the dataset) only.')
        label = map_labels(label, self.reduce_zero_label, results.get('label_map'))
        results['gt_seg_map'] = label
        results['seg_fields'].append('gt_seg_map')
