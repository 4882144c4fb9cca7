"""SyntheticShapes: the demo dataset generator, its dataset class and its CLI."""
import filecmp
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import deeplabv3_plugin  # noqa: F401  (registers the dataset and transforms)
from deeplabv3_plugin.datasets.shapes_drawing import render_sample
from deeplabv3_plugin.datasets.synthetic_shapes import (CLASSES, META_FILE, PALETTE,
                                                        SyntheticShapesDataset,
                                                        generate_synthetic_shapes)
from helpers import REPO_ROOT as REPO
from helpers.tools import load_tool

BASE_CFG = osp.join(REPO, 'configs/_base_/datasets/synthetic_shapes.py')


def _tiny(root, **kwargs):
    args = dict(num_train=6, num_val=3, image_size=48, seed=3, progress=False)
    args.update(kwargs)
    return generate_synthetic_shapes(str(root), **args)


def test_layout_is_voc_with_palette_labels(tmp_path):
    meta = _tiny(tmp_path / 'shapes')
    root = tmp_path / 'shapes'
    assert meta['reused'] is False and meta['classes'] == list(CLASSES)
    train = (root / 'ImageSets/Segmentation/train.txt').read_text().split()
    val = (root / 'ImageSets/Segmentation/val.txt').read_text().split()
    assert len(train) == 6 and len(val) == 3 and not set(train) & set(val)
    for name in train + val:
        image = Image.open(root / 'JPEGImages' / f'{name}.jpg')
        label = Image.open(root / 'SegmentationClass' / f'{name}.png')
        assert image.mode == 'RGB' and image.size == (48, 48)
        # a palette PNG like VOC's SegmentationClass: pixel values are class indices
        assert label.mode == 'P' and label.size == (48, 48)
        assert set(np.unique(np.asarray(label))) <= set(range(len(CLASSES))) | {255}
        assert label.getpalette()[:3 * len(PALETTE)] == sum(PALETTE, [])
    assert json.loads((root / META_FILE).read_text())['seed'] == 3


def test_deterministic_from_seed(tmp_path):
    _tiny(tmp_path / 'a')
    _tiny(tmp_path / 'b')
    _tiny(tmp_path / 'c', seed=4)
    names = sorted(os.listdir(tmp_path / 'a' / 'JPEGImages'))
    for sub in ('JPEGImages', 'SegmentationClass'):
        match, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a' / sub, tmp_path / 'b' / sub,
                                                   [n.replace('.jpg', '.png') if sub[0] == 'S'
                                                    else n for n in names], shallow=False)
        assert len(match) == len(names) and not mismatch and not errors
    other = filecmp.cmpfiles(tmp_path / 'a' / 'JPEGImages', tmp_path / 'c' / 'JPEGImages',
                             names, shallow=False)
    assert not other[0], 'another seed must give other images'


def test_samples_cover_classes_scales_occlusion_and_ignore_band():
    rng = np.random.default_rng(0)
    seen, areas = set(), []
    for _ in range(40):
        image, label = render_sample(rng, 96, max_objects=4, ignore_radius=1)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert label.shape == (96, 96) and label.dtype == np.uint8
        values = set(np.unique(label).tolist())
        seen |= values
        areas += [int((label == c).sum()) for c in values - {0, 255}]
        assert 255 in values, 'every object edge gets an ignore band'
    assert seen == set(range(len(CLASSES))) | {255}
    assert max(areas) > 8 * min(areas), 'objects must vary in scale'
    # Without the band, labels are only classes. Occlusion shows as two object classes that
    # touch with no background between them.
    touching = 0
    for _ in range(40):
        _, label = render_sample(rng, (64, 80), ignore_radius=0)
        assert label.shape == (64, 80) and 255 not in label and 0 in label and label.max() > 0
        left, right = label[:, :-1], label[:, 1:]
        touching += int(((left != right) & (left > 0) & (right > 0)).any())
    assert touching >= 5


def test_colour_is_a_cue_not_the_answer():
    """The mean hue of a class varies: colour alone must not identify the class."""
    rng = np.random.default_rng(5)
    means = {c: [] for c in range(1, len(CLASSES))}
    for _ in range(60):
        image, label = render_sample(rng, 64, ignore_radius=0)
        for c in means:
            if (label == c).sum() > 30:
                means[c].append(image[label == c].mean(0))
    for c, colours in means.items():
        assert len(colours) > 5
        assert np.std(np.array(colours), axis=0).max() > 25, CLASSES[c]


def test_reuses_identical_and_refuses_to_overwrite(tmp_path):
    root = tmp_path / 'shapes'
    _tiny(root)
    before = (root / 'JPEGImages' / 'shapes_train_00000.jpg').stat().st_mtime_ns
    assert _tiny(root)['reused'] is True
    assert (root / 'JPEGImages' / 'shapes_train_00000.jpg').stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match=r'other parameters.*refusing to overwrite'):
        _tiny(root, seed=9)
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match=r'not empty and has no synthetic_shapes.json'):
        _tiny(foreign)


@pytest.mark.parametrize('kwargs, match', [
    (dict(image_size=16), r'image_size must be .* >= 32, got 16'),
    (dict(image_size=(64, 64, 3)), r'image_size must be'),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny(tmp_path / 'x', **kwargs)


def test_dataset_from_base_config_iterates(tmp_path):
    """The dataset base config builds through the registry and yields packed samples."""
    from mmseg.registry import DATASETS
    root = tmp_path / 'shapes'
    _tiny(root)
    init_default_scope('mmseg')
    cfg = Config.fromfile(BASE_CFG)
    for loader, split_len in ((cfg.train_dataloader, 6), (cfg.val_dataloader, 3)):
        dataset = DATASETS.build(dict(loader.dataset, data_root=str(root)))
        assert isinstance(dataset, SyntheticShapesDataset) and len(dataset) == split_len
        assert dataset.metainfo['classes'] == CLASSES
        sample = dataset[0]
        assert sample['inputs'].shape[0] == 3
        gt = sample['data_samples'].gt_sem_seg.data
        assert gt.shape[-2:] == sample['inputs'].shape[-2:]
        assert set(gt.unique().tolist()) <= set(range(6)) | {255}


def test_cli_generates_and_explains_errors(tmp_path, capsys):
    script = osp.join(REPO, 'tools/generate_shapes.py')
    out = tmp_path / 'cli'
    cmd = [sys.executable, script, str(out), '--num-train', '3', '--num-val', '2',
           '--image-size', '40', '48', '--seed', '1']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'wrote' in done.stdout and '3 train + 2 val images of 40x48 px' in done.stdout
    assert '5/5' in done.stdout, 'a progress bar is shown'
    assert Image.open(out / 'JPEGImages' / 'shapes_val_00001.jpg').size == (48, 40)
    # (reuse of an identical dataset is tested in-process above; the refusal in-process here)
    assert load_tool('generate_shapes').main(cmd[2:-1] + ['2']) == 2
    error = capsys.readouterr().err
    assert str(out) in error and 'refusing to overwrite' in error
