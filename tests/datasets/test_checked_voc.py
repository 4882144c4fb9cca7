"""CheckedPascalVOCDataset: data-root and split-file errors that name the key and the path."""
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS
from PIL import Image

import deeplabv3_plugin  # noqa: F401  (registers the datasets)
from deeplabv3_plugin.datasets import CheckedPascalVOCDataset
from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes
from deeplabv3_plugin.errors import UserInputError
from helpers import REPO_ROOT as REPO
from helpers.tools import load_tool

BASE_CFG = osp.join(REPO, 'configs/_base_/datasets/synthetic_shapes.py')


@pytest.fixture
def root(tmp_path):
    path = tmp_path / 'shapes'
    generate_synthetic_shapes(str(path), num_train=6, num_val=2, image_size=40, seed=0,
                              progress=False)
    return path


def _build(root, split='train', **overrides):
    """The dataset of the demo's base config, as a Runner would build it."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(BASE_CFG)
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    return DATASETS.build(dict(loader.dataset, data_root=str(root), **overrides))


def test_valid_dataset_builds(root):
    assert len(_build(root)) == 6 and len(_build(root, 'val')) == 2


def test_missing_data_root(tmp_path):
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError) as err:
        _build(missing)
    message = str(err.value)
    assert 'SyntheticShapesDataset: the data root `data_root`=' in message
    assert str(missing) in message and 'does not exist; expected a directory' in message
    assert 'tools/generate_shapes.py' in message, 'says how to get the data'


@pytest.mark.parametrize('sub, key', [('JPEGImages', 'data_prefix.img_path'),
                                      ('SegmentationClass', 'data_prefix.seg_map_path')])
def test_missing_image_or_label_directory(root, sub, key):
    shutil.rmtree(root / sub)
    with pytest.raises(FileNotFoundError, match=rf'`{key}`=.*{sub}.* does not exist'):
        _build(root)


def test_missing_split_file_lists_the_splits_that_exist(root):
    with pytest.raises(FileNotFoundError) as err:
        _build(root, ann_file='ImageSets/Segmentation/trainaug.txt')
    message = str(err.value)
    assert "the split file `ann_file`='" in message and 'trainaug.txt' in message
    assert "['train.txt', 'val.txt']" in message
    assert 'one image name (no suffix) per line' in message


def test_empty_ann_file_and_empty_split(root):
    with pytest.raises(ValueError, match=r'`ann_file` is empty; VOC-layout datasets need'):
        _build(root, ann_file='')
    (root / 'ImageSets/Segmentation/empty.txt').write_text('')
    with pytest.raises(ValueError, match=r'empty.txt.* lists no images'):
        _build(root, ann_file='ImageSets/Segmentation/empty.txt')


def test_split_naming_absent_images(root):
    split = root / 'ImageSets/Segmentation/train.txt'
    names = split.read_text().split()
    split.write_text('\n'.join(names[:2] + ['not_there', 'also_missing'] + names[2:]) + '\n')
    with pytest.raises(FileNotFoundError) as err:
        _build(root)
    message = str(err.value)
    assert 'names 2 of 8 image(s) that do not exist under `data_prefix.img_path`=' in message
    assert "line 3: '" in message and 'not_there.jpg' in message
    assert "line 4: '" in message and 'also_missing.jpg' in message
    assert "expected '<name>.jpg' for every line" in message


def test_split_naming_absent_labels(root):
    os.remove(root / 'SegmentationClass' / 'shapes_train_00004.png')
    with pytest.raises(FileNotFoundError, match=r'names 1 of 6 label\(s\).*line 5: .*'
                                                r'shapes_train_00004.png'):
        _build(root)
    # the check costs one stat per file; it can be turned off for slow remote storage
    assert len(_build(root, check_files=False)) == 6


def test_lazy_init_defers_the_checks(tmp_path):
    dataset = _build(tmp_path / 'nowhere', lazy_init=True)
    with pytest.raises(FileNotFoundError, match='`data_root`'):
        dataset.full_init()


def test_checked_voc_is_a_drop_in_for_pascal_voc(root):
    """Same classes and palette as mmseg's VOC; a bad root is explained, not asserted."""
    assert CheckedPascalVOCDataset.METAINFO == PascalVOCDataset.METAINFO
    init_default_scope('mmseg')
    # a 21-class VOC label on the synthetic images: class 20 (tvmonitor) is legal here
    label = np.full((40, 40), 20, np.uint8)
    Image.fromarray(label).save(root / 'SegmentationClass' / 'shapes_train_00000.png')
    cfg = dict(type='CheckedPascalVOCDataset', data_root=str(root),
               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
               ann_file='ImageSets/Segmentation/train.txt',
               pipeline=[dict(type='LoadImageFromFile'),
                         dict(type='LoadAnnotations'),
                         dict(type='CheckSegSample', num_classes=21),
                         dict(type='PackSegInputs')])
    dataset = DATASETS.build(cfg)
    assert len(dataset.metainfo['classes']) == 21
    assert dataset[0]['data_samples'].gt_sem_seg.data.unique().tolist() == [20]
    with pytest.raises(FileNotFoundError, match=r'CheckedPascalVOCDataset: .*`data_root`.*'
                                                r'Download PASCAL VOC 2012'):
        DATASETS.build(dict(cfg, data_root=str(root / 'VOC2012')))


def test_train_tool_explains_a_missing_data_root(tmp_path):
    """tools/train.py stops on the dataset's message, a UserInputError (which ``run_tool``
    prints as one paragraph, exit 2: tests/tools/)."""
    config = osp.join(REPO, 'configs/demo',
                      'deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py')
    missing = tmp_path / 'not_generated'
    options = [f'{loader}.dataset.data_root={missing}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    with pytest.raises(UserInputError) as info:
        load_tool('train').main([config, '--work-dir', str(tmp_path / 'work'),
                                 '--cfg-options', *options])
    message = str(info.value)
    assert f"SyntheticShapesDataset: the data root `data_root`='{missing}'" in message
    assert 'tools/generate_shapes.py' in message
