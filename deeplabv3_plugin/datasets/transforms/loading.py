"""Image and label loading that names the file when it cannot be read.

mmcv's ``LoadImageFromFile`` and mmseg's ``LoadAnnotations`` hand the raw bytes to
``mmcv.imfrombytes``. A broken file then fails far from its cause: an empty file raises
OpenCV's ``(-215:Assertion failed) !buf.empty() in function 'imdecode_'``, undecodable bytes
become ``AssertionError: failed to load image``, Pillow reports ``cannot identify image file
<_io.BytesIO object at 0x...>`` without any path, and a truncated JPEG is silently decoded with
a grey lower half. Labels are also cast with ``astype(np.uint8)``, so a 16-bit label map
wraps around silently and an RGB colour-coded label (instead of class indices) travels on as
an ``(H, W, 3)`` array.

The two transforms here are drop-in replacements (same arguments, same output keys) that
read the bytes once, check them, decode them and raise one
:class:`~deeplabv3_plugin.datasets.errors.DataError` (``MissingDataError`` for absent files)
naming the transform, the result key, the file, its size and what was expected.
"""
import os.path as osp
from typing import Callable, Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from ..errors import DataError, MissingDataError

__all__ = ['CheckedLoadImageFromFile', 'CheckedLoadAnnotations', 'read_and_decode']

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _truncation(content: bytes) -> Optional[str]:
    """Why ``content`` is a truncated JPEG or PNG, or None when its end marker is present.

    cv2 decodes a truncated JPEG without an error (the missing rows come out grey), so the end
    marker is checked explicitly: a JPEG ends with EOI (``FF D9``), a PNG with an ``IEND``
    chunk. Both are searched in the whole file so that data appended after them is accepted.
    """
    if content.startswith(_JPEG_MAGIC) and content.rfind(b'\xff\xd9') < 0:
        return 'it is a JPEG without its end-of-image marker, i.e. the file is truncated'
    if content.startswith(_PNG_MAGIC) and content.rfind(b'IEND') < 0:
        return 'it is a PNG without its IEND chunk, i.e. the file is truncated'
    return None


def read_and_decode(path: str, decode: Callable[[bytes], Optional[np.ndarray]], *,
                    owner: str, key: str, kind: str,
                    backend_args: Optional[dict] = None) -> np.ndarray:
    """Read ``path`` and decode it, or raise an error that names the file and the cause.

    Args:
        path: File to read (any mmengine file backend).
        decode: Turns the bytes into an array; may return None or raise on bad input.
        owner: Name of the calling transform, for the message.
        key: Result key the path came from (``'img_path'``, ``'seg_map_path'``).
        kind: ``'image'`` or ``'label'``, for the message.
        backend_args: mmengine file backend arguments. Defaults to None (local files).

    Returns:
        The decoded array.

    Raises:
        MissingDataError: The file does not exist (a ``FileNotFoundError``).
        DataError: The file is empty, truncated or not decodable (a ``ValueError``).
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


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` whose errors name the image file and what is wrong with it.

    Reads ``results['img_path']`` and adds ``img``, ``img_shape`` and ``ori_shape``, exactly
    like mmcv's transform; a missing, empty, truncated or undecodable file raises instead of
    failing inside the decoder (see the module docstring).

    Args:
        to_float32: Convert the image to float32. Defaults to False.
        color_type: ``mmcv.imfrombytes`` flag. Defaults to ``'color'``.
        imdecode_backend: ``'cv2'``, ``'pillow'``, ``'turbojpeg'`` or ``'tifffile'``.
            Defaults to ``'cv2'``.
        backend_args: mmengine file backend arguments. Defaults to None.
    """

    def __init__(self, to_float32: bool = False, color_type: str = 'color',
                 imdecode_backend: str = 'cv2', backend_args: Optional[dict] = None) -> None:
        super().__init__(to_float32=to_float32, color_type=color_type,
                         imdecode_backend=imdecode_backend, backend_args=backend_args)

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

    Adds ``gt_seg_map`` (uint8, H x W) and appends it to ``seg_fields``, with mmseg's
    ``reduce_zero_label`` and ``label_map`` semantics. On top of the decoding checks it refuses
    what mmseg would silently garble: labels with several channels (an RGB colour rendering
    instead of class indices; a palette PNG decodes to indices and is fine) and values that do
    not fit in uint8. Whether the values are valid *classes* is checked later by
    :class:`~deeplabv3_plugin.datasets.transforms.CheckSegSample`, which knows the class count.

    Args:
        reduce_zero_label: Map label 0 to 255 and shift the others down by one. None takes the
            dataset's setting. Defaults to None.
        backend_args: mmengine file backend arguments. Defaults to None.
        imdecode_backend: Decoder for the label file. Defaults to ``'pillow'`` (mmseg's
            choice: Pillow returns palette indices, not colours).
    """

    def __init__(self, reduce_zero_label: Optional[bool] = None,
                 backend_args: Optional[dict] = None, imdecode_backend: str = 'pillow') -> None:
        super().__init__(reduce_zero_label=reduce_zero_label, backend_args=backend_args,
                         imdecode_backend=imdecode_backend)

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
        if self.reduce_zero_label:  # 0 (background) becomes ignore, the rest shifts down
            label = np.where(label == 0, 255, label - 1).astype(np.uint8)
            label[label == 254] = 255
        label_map = results.get('label_map')
        if label_map:
            remapped = label.copy()
            for old_id, new_id in label_map.items():
                remapped[label == old_id] = new_id
            label = remapped
        results['gt_seg_map'] = label
        results['seg_fields'].append('gt_seg_map')
