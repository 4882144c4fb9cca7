"""PASCAL VOC layout dataset whose errors name the key, the path and the expected layout.

mmseg's ``PascalVOCDataset`` asserts on the image directory and split file, a split file naming
absent images fails later in a dataloader worker, and its decoders do not all name the file they
could not read (Pillow's ``cannot identify image file <_io.BytesIO ...>``, OpenCV's
``!buf.empty()``).
"""
import os
import os.path as osp
from typing import List

import cv2
import mmengine.fileio as fileio
from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from ..engine.errors import UserInputError, listing

__all__ = ['CheckedPascalVOCDataset', 'DataError', 'MissingDataError']

_LAYOUT = ('A VOC-layout root holds JPEGImages/, SegmentationClass/ and '
           'ImageSets/Segmentation/<split>.txt.')


class DataError(UserInputError):
    """A dataset file or layout that cannot be used as it is; the tools print it (exit 2)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data root, directory, split file or listed file that does not exist."""


@DATASETS.register_module()
class CheckedPascalVOCDataset(BaseSegDataset):
    """PASCAL VOC 2012 (21 classes), a drop-in for ``PascalVOCDataset`` with clear errors.

    Args:
        ann_file: Split file relative to ``data_root``, one image name per line.
        check_files: Check that every listed image and label exists (one ``stat`` each; turn off
            for slow remote ``backend_args`` or a test split without labels).
    """
    METAINFO = PascalVOCDataset.METAINFO
    #: Appended to "missing data" errors: how a user obtains this dataset.
    HOW_TO_GET = ('Download PASCAL VOC 2012 (and SBD for trainaug) and point `data_root` at '
                  'the VOC2012 directory.')

    def __init__(self, ann_file: str, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 check_files: bool = True, **kwargs) -> None:
        self.check_files = check_files
        super().__init__(ann_file=ann_file, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, **kwargs)

    def _missing(self, what: str, key: str, path: str, expected: str) -> MissingDataError:
        return MissingDataError(
            f'{type(self).__name__}: {what} `{key}`={path!r} (resolved to '
            f'{osp.abspath(path)!r}) does not exist; expected {expected}. {_LAYOUT} '
            f'{self.HOW_TO_GET}')

    def _check_layout(self) -> None:
        if self.data_root is not None and not osp.isdir(self.data_root):
            raise self._missing('the data root', 'data_root', self.data_root, 'a directory')
        for key, expected in (('img_path', 'the image directory (JPEGImages)'),
                              ('seg_map_path', 'the label directory (SegmentationClass)')):
            path = self.data_prefix.get(key)
            if path is not None and not osp.isdir(path):
                raise self._missing('the', f'data_prefix.{key}', path, expected)
        if not self.ann_file:  # mmseg would silently list the whole image directory instead
            raise DataError(
                f'{type(self).__name__}: `ann_file` is empty; VOC-layout datasets need a split '
                f"file listing one image name per line, e.g. "
                f"ann_file='ImageSets/Segmentation/train.txt'.")
        if not osp.isfile(self.ann_file):
            folder = osp.dirname(self.ann_file)
            found = sorted(os.listdir(folder)) if osp.isdir(folder) else []
            raise self._missing(
                'the split file', 'ann_file', self.ann_file,
                'a text file with one image name (no suffix) per line' +
                (f'; split files in {folder!r}: {found}' if found else ''))

    def _check_listed_files(self, data_list: List[dict]) -> None:
        for key, kind, suffix in (('img_path', 'image', self.img_suffix),
                                  ('seg_map_path', 'label', self.seg_map_suffix)):
            missing = [f'line {line}: {info[key]!r}' for line, info in enumerate(data_list, 1)
                       if key in info and not fileio.exists(info[key], self.backend_args)]
            if missing:
                raise MissingDataError(
                    f'{type(self).__name__}: the split file `ann_file`={self.ann_file!r} names '
                    f'{len(missing)} of {len(data_list)} {kind}(s) that do not exist under '
                    f'`data_prefix.{key}`={self.data_prefix.get(key)!r} (expected '
                    f"'<name>{suffix}' for every line): {listing(missing)}. Fix the split file "
                    f'or the data (a partial copy or an interrupted extraction are common causes).')

    def load_data_list(self) -> List[dict]:
        self._check_layout()
        data_list = super().load_data_list()
        if not data_list:
            raise DataError(f'{type(self).__name__}: the split file `ann_file`='
                            f'{self.ann_file!r} lists no images; expected one image name '
                            f'per line.')
        if self.check_files:
            self._check_listed_files(data_list)
        return data_list

    def prepare_data(self, idx: int):
        """Run the pipeline; a file the loaders cannot read is named with the cause."""
        try:
            return super().prepare_data(idx)
        except UserInputError:
            raise
        except (OSError, AssertionError, cv2.error) as error:  # what mmcv's decoders raise
            info = self.get_data_info(idx)
            files = f"image {info['img_path']!r}, label {info.get('seg_map_path')!r}"
            if isinstance(error, FileNotFoundError):
                raise MissingDataError(f'{type(self).__name__}: sample {idx} ({files}): '
                                       f'{error}. {self.HOW_TO_GET}') from error
            raise DataError(
                f'{type(self).__name__}: sample {idx} ({files}) cannot be loaded: '
                f'{type(error).__name__}: {str(error).strip()}. Expected complete, readable files '
                f'(JPEG or PNG); replace or regenerate them, or remove the name from the split '
                f'file `ann_file`={self.ann_file!r}.') from error
