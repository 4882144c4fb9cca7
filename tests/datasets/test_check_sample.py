"""Loading (mmseg's transforms in a checked dataset) and ``CheckSegSample``: each bad sample
fails with an error naming it.

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
from mmseg.apis import MMSegInferencer
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

import deeplabv3_plugin  # noqa: F401  (registers the transforms)
from helpers import REPO_ROOT as REPO
from helpers.checkpoints import save_checkpoint
from helpers.demo import tiny_demo_config
from deeplabv3_plugin.datasets.synthetic_shapes import (CLASSES, PALETTE,
                                                       generate_synthetic_shapes)

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


def _fails_naming(root, match, split='train', error=ValueError):
    with pytest.raises(error) as err:
        _iterate(root, split)
    assert re.search(match, str(err.value), re.DOTALL), str(err.value)
    return str(err.value)


@pytest.mark.parametrize('content', [b'', b'this is not an image at all'])
def test_corrupt_image(root, content):
    """OpenCV says ``!buf.empty()`` for an empty file: the dataset adds the file names."""
    _image(root).write_bytes(content)
    _fails_naming(root, rf'SyntheticShapesDataset: sample 2 \(image .*{NAME}.jpg.*\) cannot be '
                        r'loaded: .*replace or regenerate')


def test_truncated_jpeg(root):
    data = _image(root).read_bytes()
    _image(root).write_bytes(data[:len(data) // 2])
    _fails_naming(root, rf'{NAME}.jpg.* cannot be loaded')


@pytest.mark.parametrize('cut', [True, False])
def test_corrupt_and_truncated_label(root, cut):
    """Pillow's messages name a ``BytesIO``, not the file: the dataset names it."""
    data = _label(root).read_bytes()
    _label(root).write_bytes(data[:len(data) // 2] if cut else b'\x89PNG\r\n\x1a\n garbage')
    _fails_naming(root, rf'label .*{NAME}.png.*\) cannot be loaded: \w+')


def test_file_deleted_after_listing(root):
    """A file gone after the split was checked (e.g. a worker on another disk)."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(BASE_CFG)
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=str(root)))
    _image(root).unlink()
    with pytest.raises(FileNotFoundError, match=rf'sample 2 .*{NAME}.jpg'):
        dataset[2]


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
    _fails_naming(root, rf'CheckSegSample: the label .*{name}.png.*{name}.jpg.* is 30x40 '
                        r'\(HxW\) but its image is 40x40', split)


def test_colour_label_instead_of_indices(root):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(_label(root))
    _fails_naming(root, rf'{NAME}.png.* has shape \(40, 40, 3\); expected a single-channel')


def test_sixteen_bit_label_wrapped_by_mmseg_is_still_refused(root):
    label = np.zeros((40, 40), np.uint16)
    label[0, 0] = 300  # mmseg's astype(uint8) turns this into 44
    cv2.imwrite(str(_label(root)), label)
    _fails_naming(root, rf'{NAME}.png.* contains values 44 \(1 px\) outside the 6 classes')


def test_sixteen_bit_label_wrapping_into_the_classes_is_refused(root):
    label = np.zeros((40, 40), np.uint16)
    label[0, 0] = 257  # mmseg's astype(uint8) turns this into 1, a valid class
    cv2.imwrite(str(_label(root)), label)
    _fails_naming(root, rf'{NAME}.png.* is a I;16 image with values up to 257, which mmseg')


def test_check_seg_sample_without_a_label_passes():
    init_default_scope('mmseg')
    check = TRANSFORMS.build(dict(type='CheckSegSample', num_classes=6))
    assert repr(check) == 'CheckSegSample(num_classes=6, ignore_index=255)'
    assert check(dict(img_path='a.jpg', ori_shape=(4, 4))) == dict(img_path='a.jpg',
                                                                   ori_shape=(4, 4))


def test_plain_mmseg_inferencer_reads_the_demo_config(tmp_path):
    """mmseg's own ``MMSegInferencer`` finds ``LoadImageFromFile`` and drops ``LoadAnnotations``
    in the demo config; ``CheckSegSample`` lets the label-free sample through."""
    cfg = tiny_demo_config()
    ckpt = save_checkpoint(cfg, str(tmp_path / 'demo.pth'), list(CLASSES), PALETTE)
    image = str(tmp_path / 'image.jpg')
    cv2.imwrite(image, np.full((40, 48, 3), 128, np.uint8))
    inferencer = MMSegInferencer(model=cfg, weights=ckpt, device='cpu')
    prediction = inferencer(image, out_dir=str(tmp_path / 'out'))['predictions']
    assert prediction.shape == (40, 48) and set(np.unique(prediction)) <= set(range(6))
    assert os.listdir(tmp_path / 'out' / 'vis') == ['image.jpg']


@pytest.mark.slow
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
