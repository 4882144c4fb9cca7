"""A VOC-layout dataset whose errors name the key, the path and the expected layout, where mmseg's
asserts, fails later in a worker, or (Pillow, OpenCV) does not name the file it could not read."""
import os
import os.path as osp
from typing import List

import cv2
import mmengine.fileio as fileio
from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from ..errors import UserInputError, listing

__all__ = ['CheckedPascalVOCDataset', 'MissingDataError']


class MissingDataError(UserInputError, FileNotFoundError):
    """A data root, directory, split file or listed file that does not exist."""


@DATASETS.register_module()
class CheckedPascalVOCDataset(BaseSegDataset):
    """PASCAL VOC 2012 (21 classes), a drop-in for ``PascalVOCDataset`` with clear errors.
    ``check_files``: stat every listed image and label (turn off for slow remote ``backend_args``
    or a test split without labels)."""
    METAINFO = PascalVOCDataset.METAINFO
    HOW_TO_GET = ('Download PASCAL VOC 2012 (and SBD for trainaug) and point `data_root` at '
                  'the VOC2012 directory.')

    def __init__(self, *args, check_files: bool = True, **kwargs) -> None:
        self.check_files = check_files
        super().__init__(*args, **kwargs)

    def _missing(self, what: str, key: str, path: str, expected: str) -> MissingDataError:
        return MissingDataError(
            f'{type(self).__name__}: {what} `{key}`={path!r} (resolved to '
            f'{osp.abspath(path)!r}) does not exist; expected {expected}. A VOC-layout root holds '
            f'JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt. '
            f'{self.HOW_TO_GET}')

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        if self.data_root is not None and not osp.isdir(self.data_root):
            raise self._missing('the data root', 'data_root', self.data_root, 'a directory')
        for key, expected in (('img_path', 'the image directory (JPEGImages)'),
                              ('seg_map_path', 'the label directory (SegmentationClass)')):
            path = self.data_prefix.get(key)
            if path is not None and not osp.isdir(path):
                raise self._missing('the', f'data_prefix.{key}', path, expected)
        if not self.ann_file:  # mmseg would silently list the whole image directory instead
            raise UserInputError(f"{name}: `ann_file` is empty; VOC-layout datasets need a split "
                                 f"file, e.g. ann_file='ImageSets/Segmentation/train.txt'.")
        if not osp.isfile(self.ann_file):
            folder = osp.dirname(self.ann_file)
            found = sorted(os.listdir(folder)) if osp.isdir(folder) else []
            raise self._missing(
                'the split file', 'ann_file', self.ann_file,
                'a text file with one image name (no suffix) per line' +
                (f'; split files in {folder!r}: {found}' if found else ''))
        data_list = super().load_data_list()
        if not data_list:
            raise UserInputError(f'{name}: the split file `ann_file`={self.ann_file!r} lists no '
                                 f'images; expected one image name per line.')
        for key, kind, suffix in (('img_path', 'image', self.img_suffix),
                                  ('seg_map_path', 'label', self.seg_map_suffix)):
            missing = [f'line {line}: {info[key]!r}' for line, info in enumerate(data_list, 1)
                       if self.check_files and key in info
                       and not fileio.exists(info[key], self.backend_args)]
            if missing:
                raise MissingDataError(
                    f'{name}: the split file `ann_file`={self.ann_file!r} names {len(missing)} of '
                    f'{len(data_list)} {kind}(s) that do not exist under `data_prefix.{key}`='
                    f"{self.data_prefix.get(key)!r} (expected '<name>{suffix}' for every line): "
                    f'{listing(missing)}. Fix the split file or the data.')
        return data_list

    def prepare_data(self, idx: int):
        """Run the pipeline; a file the loaders cannot read is named with the cause."""
        try:
            return super().prepare_data(idx)
        except (OSError, AssertionError, cv2.error) as error:  # what mmcv's decoders raise
            info = self.get_data_info(idx)
            files = f"image {info['img_path']!r}, label {info.get('seg_map_path')!r}"
            # mmcv asserts 'failed to load image'; other assertions are pipeline settings
            decode = not isinstance(error, AssertionError) or 'load image' in str(error)
            fix = (f'Expected complete, readable files (JPEG or PNG); replace or regenerate them, '
                   f'or remove the name from the split file `ann_file`={self.ann_file!r}.'
                   if decode else 'Check the pipeline settings (e.g. reduce_zero_label) against '
                   'the dataset.')
            raise (MissingDataError if isinstance(error, FileNotFoundError) else UserInputError)(
                f"{type(self).__name__}: sample {idx} ({files}) "
                f"{'cannot be loaded' if decode else 'failed in the pipeline'}: "
                f'{type(error).__name__}: {str(error).strip()}. {fix}') from error
