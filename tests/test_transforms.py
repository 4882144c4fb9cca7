"""Checked loading and per-sample validation: each bad sample fails with an error naming it.

The cases are reached as a user reaches them: the demo's dataset config is built through the
registry and iterated (train and test pipelines), with one file of a generated dataset broken.
"""
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

import deeplabv3_plugin  # noqa: F401  (registers the transforms)
from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE_CFG = osp.join(REPO, 'configs/_base_/datasets/synthetic_shapes.py')
NAME = 'shapes_train_00002'  # the sample each test breaks


@pytest.fixture
def root(tmp_path):
    path = tmp_path / 'shapes'
    generate_synthetic_shapes(str(path), num_train=4, num_val=1, image_size=40, seed=0,
                              progress=False)
    return path


def _iterate(root, split='train'):
    """Build the split's dataset from the base config and load every sample."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(BASE_CFG)
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    dataset = DATASETS.build(dict(loader.dataset, data_root=str(root)))
    return [dataset[i] for i in range(len(dataset))]


def _image(root):
    return root / 'JPEGImages' / f'{NAME}.jpg'


def _label(root):
    return root / 'SegmentationClass' / f'{NAME}.png'


def test_valid_samples_pass_train_and_test_pipelines(root):
    for split in ('train', 'val'):
        for sample in _iterate(root, split):
            assert sample['inputs'].shape[-2:] == sample['data_samples'].gt_sem_seg.shape


@pytest.mark.parametrize('content, reason', [
    (b'', r'the file is empty \(0 bytes\)'),
    (b'this is not an image at all', r'could not be decoded .*starts with bytes 74 68 69 73'),
])
def test_corrupt_image(root, content, reason):
    _image(root).write_bytes(content)
    with pytest.raises(ValueError) as err:
        _iterate(root)
    message = str(err.value)
    assert message.startswith('CheckedLoadImageFromFile: the image file `img_path`=')
    assert f'{NAME}.jpg' in message and 'is corrupt' in message
    assert re.search(reason, message), message


def test_truncated_jpeg_is_refused_although_cv2_would_decode_it(root):
    data = _image(root).read_bytes()
    _image(root).write_bytes(data[:len(data) // 2])
    assert cv2.imread(str(_image(root))) is not None, 'cv2 silently decodes half a JPEG'
    with pytest.raises(ValueError, match=rf'{NAME}.jpg.*JPEG without its end-of-image marker'):
        _iterate(root)


def test_corrupt_and_truncated_label(root):
    data = _label(root).read_bytes()
    _label(root).write_bytes(data[:len(data) - 20])
    with pytest.raises(ValueError, match=rf'CheckedLoadAnnotations: the label file '
                                         rf'`seg_map_path`=.*{NAME}.png.*PNG without its IEND'):
        _iterate(root, 'train')
    _label(root).write_bytes(b'\x89PNG\r\n\x1a\n garbage IEND')
    with pytest.raises(ValueError, match=rf'{NAME}.png.*could not be decoded \(\w+'):
        _iterate(root, 'train')


def test_label_values_outside_the_classes(root):
    label = np.array(Image.open(_label(root)))
    label[:3, :] = 7
    label[-1, :5] = 128
    Image.fromarray(label).save(_label(root))
    with pytest.raises(ValueError) as err:
        _iterate(root, 'train')
    message = str(err.value)
    assert message.startswith('CheckSegSample: the label `seg_map_path`=')
    assert f'{NAME}.png' in message and f'{NAME}.jpg' in message
    assert 'contains values 7 (120 px), 128 (5 px) outside the 6 classes' in message
    assert 'expected class indices 0..5 or the ignore index 255' in message


def test_ignore_index_is_accepted(root):
    label = np.full((40, 40), 255, np.uint8)
    label[10:20, 10:20] = 5
    Image.fromarray(label).save(_label(root))
    assert len(_iterate(root)) == 4


@pytest.mark.parametrize('split', ['train', 'val'])
def test_label_of_another_size(root, split):
    name = NAME if split == 'train' else 'shapes_val_00000'
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / 'SegmentationClass' /
                                                       f'{name}.png')
    # In the test pipeline the image may be resized before the label is loaded; the check
    # compares against the size the image had on disk.
    with pytest.raises(ValueError, match=rf'CheckSegSample: the label .*{name}.png.* is 30x40 '
                                         rf'\(HxW\) but its image .*{name}.jpg.* is 40x40'):
        _iterate(root, split)


def test_colour_label_instead_of_indices(root):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(_label(root))
    with pytest.raises(ValueError, match=rf'{NAME}.png.* decodes to shape \(40, 40, 3\), i.e. 3 '
                                         rf'channels; expected a single-channel map'):
        _iterate(root)


def test_sixteen_bit_label_is_not_wrapped(root):
    label = np.zeros((40, 40), np.uint16)
    label[0, 0] = 300  # mmseg's astype(uint8) would turn this into class 44
    cv2.imwrite(str(_label(root)), label)
    with pytest.raises(ValueError, match=rf'{NAME}.png.* holds uint16 values 0..300'):
        _iterate(root)


def test_missing_file_named_by_the_loader(root):
    """A file deleted after the dataset was listed (e.g. a worker on another disk)."""
    init_default_scope('mmseg')
    loader = TRANSFORMS.build(dict(type='CheckedLoadImageFromFile'))
    with pytest.raises(FileNotFoundError, match=r'the image file `img_path`=.*gone.jpg'):
        loader(dict(img_path=str(root / 'gone.jpg')))


def test_reduce_zero_label_and_label_map_match_mmseg(root):
    """The checked loader keeps mmseg's semantics for the label transforms it replaces."""
    init_default_scope('mmseg')
    label = np.array([[0, 1, 2], [3, 255, 5]], np.uint8)
    path = str(root / 'small.png')
    Image.fromarray(label).save(path)
    for reduce, label_map in ((True, None), (False, {1: 4, 4: 1}), (True, {0: 2})):
        results = {}
        for name in ('LoadAnnotations', 'CheckedLoadAnnotations'):
            out = TRANSFORMS.build(dict(type=name))(
                dict(seg_map_path=path, reduce_zero_label=reduce, label_map=label_map,
                     seg_fields=[]))
            results[name] = out['gt_seg_map']
            assert out['seg_fields'] == ['gt_seg_map']
        np.testing.assert_array_equal(results['LoadAnnotations'],
                                      results['CheckedLoadAnnotations'])


def test_check_seg_sample_arguments_and_placement():
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match=r'num_classes must be an int in 1..255.*got 0'):
        TRANSFORMS.build(dict(type='CheckSegSample', num_classes=0))
    with pytest.raises(ValueError, match=r'ignore_index must be an int outside .*0..5, got 3'):
        TRANSFORMS.build(dict(type='CheckSegSample', num_classes=6, ignore_index=3))
    check = TRANSFORMS.build(dict(type='CheckSegSample', num_classes=6))
    assert repr(check) == 'CheckSegSample(num_classes=6, ignore_index=255)'
    with pytest.raises(ValueError, match=r'right after LoadAnnotations'):
        check(dict(img_path='a.jpg', ori_shape=(4, 4)))
    # non-uint8 labels (another loader) are checked exactly, without a uint8 wrap-around
    with pytest.raises(ValueError, match=r'values -1 \(1 px\), 256 \(1 px\) outside'):
        check(dict(gt_seg_map=np.array([[-1, 256], [0, 5]]), ori_shape=(2, 2),
                   img_path='a.jpg', seg_map_path='a.png'))


def test_train_tool_stops_on_a_bad_label_with_one_message(root, tmp_path):
    """The path a user takes: tools/train.py on the demo config, data loaded by worker processes."""
    label = np.array(Image.open(_label(root)))
    label[5, 5] = 9
    Image.fromarray(label).save(_label(root))
    config = osp.join(REPO, 'configs/demo',
                      'deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py')
    options = [f'{loader}.dataset.data_root={root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    done = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), config, '--work-dir',
         str(tmp_path / 'work'), '--cfg-options', *options, 'train_cfg.max_iters=2'],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode == 2, done.stderr[-3000:]
    assert 'train.py: error:' in done.stderr
    assert re.search(rf'CheckSegSample: the label `seg_map_path`=.*{NAME}.png.* contains values '
                     r'9 \(1 px\) outside the 6 classes', done.stderr), done.stderr[-3000:]
