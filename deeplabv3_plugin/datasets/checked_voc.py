"""PASCAL VOC layout datasets that say what is wrong with the data instead of asserting.

mmseg's ``PascalVOCDataset`` ends its constructor with a bare ``assert`` on the image directory
and split file, and a split file naming absent images only fails later, inside a dataloader
worker. :class:`CheckedPascalVOCDataset` checks the root, both directories, the split file and
every listed file when its data list is loaded, each failure one
:class:`~deeplabv3_plugin.datasets.errors.DataError` naming the config key, the resolved path and
the expected layout. Per-sample checks live in :mod:`deeplabv3_plugin.datasets.transforms`.
"""
import os
import os.path as osp
from typing import List

import mmengine.fileio as fileio
from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from ..engine.errors import listing
from .errors import DataError, MissingDataError

__all__ = ['CheckedPascalVOCDataset']


@DATASETS.register_module()
class CheckedPascalVOCDataset(BaseSegDataset):
    """PASCAL VOC 2012 (21 classes) with clear errors for a missing root, split or file.

    A drop-in for ``PascalVOCDataset`` (same arguments, classes and palette; trainaug through
    ``ConcatDataset`` works the same) reading ``JPEGImages/``, ``SegmentationClass/`` and
    ``ImageSets/Segmentation/<split>.txt``.

    Args:
        ann_file: Split file relative to ``data_root``, e.g.
            ``'ImageSets/Segmentation/train.txt'``.
        check_files: Check that every listed image and label exists (one ``stat`` each; turn off
            for slow remote ``backend_args``). Defaults to True.
        **kwargs: ``BaseSegDataset`` arguments.
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

    def _missing(self, what: str, key: str, value: str, expected: str) -> MissingDataError:
        """One-paragraph "not found" error naming the key, its resolved value and the layout."""
        return MissingDataError(
            f'{type(self).__name__}: {what} `{key}`={value!r} (resolved to '
            f'{osp.abspath(value)!r}) does not exist; expected {expected}. A VOC-layout root '
            f'holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt. '
            f'{self.HOW_TO_GET}')

    def _check_layout(self) -> None:
        """Check the data root, image/label directories and split file before reading it."""
        if self.data_root is not None and not osp.isdir(self.data_root):
            raise self._missing('the data root', 'data_root', self.data_root,
                                'a directory')
        for key, expected in (('img_path', 'the image directory (JPEGImages)'),
                              ('seg_map_path', 'the label directory (SegmentationClass)')):
            path = self.data_prefix.get(key)
            if path is not None and not osp.isdir(path):
                raise self._missing('the', f'data_prefix.{key}', path, expected)
        if not self.ann_file:
            raise DataError(
                f'{type(self).__name__}: `ann_file` is empty; VOC-layout datasets need a split '
                f'file listing one image name per line, e.g. '
                f"ann_file='ImageSets/Segmentation/train.txt'.")
        if not osp.isfile(self.ann_file):
            folder = osp.dirname(self.ann_file)
            found = sorted(os.listdir(folder)) if osp.isdir(folder) else []
            hint = f' Split files in {folder!r}: {found}.' if found else ''
            raise MissingDataError(
                f'{type(self).__name__}: the split file `ann_file`={self.ann_file!r} '
                f'(resolved to {osp.abspath(self.ann_file)!r}) is not a file; expected a text '
                f'file with one image name (no suffix) per line.{hint} {self.HOW_TO_GET}')

    def _exists(self, path: str) -> bool:
        if self.backend_args is None:
            return osp.isfile(path)
        return fileio.exists(path, backend_args=self.backend_args)

    def _check_listed_files(self, data_list: List[dict]) -> None:
        """Check that every image and label the split file names exists on disk."""
        for key, prefix_key, kind in (('img_path', 'img_path', 'image'),
                                      ('seg_map_path', 'seg_map_path', 'label')):
            missing = [(line, info[key]) for line, info in enumerate(data_list, start=1)
                       if key in info and not self._exists(info[key])]
            if not missing:
                continue
            listed = listing(f'line {line}: {path!r}' for line, path in missing)
            suffix = self.img_suffix if kind == 'image' else self.seg_map_suffix
            raise MissingDataError(
                f'{type(self).__name__}: the split file `ann_file`={self.ann_file!r} names '
                f'{len(missing)} of {len(data_list)} {kind}(s) that do not exist under '
                f'`data_prefix.{prefix_key}`={self.data_prefix.get(prefix_key)!r} (expected '
                f"'<name>{suffix}' for every line): {listed}. Fix the split file or the "
                f'data (a partial copy or an interrupted extraction are common causes).')

    def load_data_list(self) -> List[dict]:
        """Check the layout, read the split file, then check that the listed files exist."""
        self._check_layout()
        data_list = super().load_data_list()
        if not data_list:
            raise DataError(f'{type(self).__name__}: the split file `ann_file`='
                             f'{self.ann_file!r} lists no images; expected one image name '
                             f'per line.')
        if self.check_files:
            self._check_listed_files(data_list)
        return data_list
