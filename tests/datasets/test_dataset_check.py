"""Dataset preparation and checking tools on tiny generated VOC + SBD and Cityscapes trees.

The main flows run the tools as a user does (subprocess); the error cases call the same
``main(argv)`` in-process to save the interpreter start-up, and the unit checks the tools'
functions (the preparation is standalone scripts in tools/, as in mmseg).
"""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat
from scipy.sparse import csc_matrix

from deeplabv3_plugin.datasets.dataset_check import check_label_file, check_tree
from helpers import REPO_ROOT as REPO
from helpers.tools import load_tool

VOC_TOOL, CITYSCAPES_TOOL = load_tool('prepare_voc_aug'), load_tool('prepare_cityscapes')

VOC_TRAIN, VOC_VAL = ['a', 'b', 'c'], ['d', 'e']
SBD_TRAIN, SBD_VAL = ['b', 'd', 'f', 'g'], ['h', 'a']
ALL_NAMES = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
H, W = 10, 14


def _label(seed: int, border: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 21, (H, W)).astype(np.uint8)
    if border:
        label[0, :] = 255  # VOC's void outline
    return label


def _write_palette_png(path: str, label: np.ndarray) -> None:
    image = Image.fromarray(label, mode='P')
    image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


def _write_lines(path: str, names) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(f'{n}\n' for n in names)


def write_sbd_mat(path: str, segmentation: np.ndarray, key: str = 'GTcls') -> None:
    """An SBD class file: struct GTcls with Boundaries, Segmentation and CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)  # a MATLAB cell of one sparse map per class
    for index in range(20):
        boundaries[index, 0] = csc_matrix(segmentation.shape, dtype=np.uint8)
    struct = {'Boundaries': boundaries, 'Segmentation': segmentation,
              'CategoriesPresent': np.unique(segmentation[segmentation > 0]).astype(np.uint8)}
    savemat(path, {key: struct})


@pytest.fixture
def voc_sbd(tmp_path):
    """VOC2012 (JPEGImages for every name, VOC labels for train/val) + SBD dataset/cls."""
    voc, sbd = tmp_path / 'VOCdevkit' / 'VOC2012', tmp_path / 'benchmark_RELEASE'
    for sub in ('JPEGImages', 'SegmentationClass'):
        os.makedirs(voc / sub)
    os.makedirs(sbd / 'dataset' / 'cls')
    for i, name in enumerate(ALL_NAMES):
        Image.fromarray(np.full((H, W, 3), 10 * i, np.uint8)).save(voc / 'JPEGImages' /
                                                                   f'{name}.jpg')
        if name in VOC_TRAIN + VOC_VAL:
            _write_palette_png(str(voc / 'SegmentationClass' / f'{name}.png'), _label(i))
        if name in SBD_TRAIN + SBD_VAL:
            write_sbd_mat(str(sbd / 'dataset' / 'cls' / f'{name}.mat'),
                          _label(100 + i, border=False))
    split_dir = voc / 'ImageSets' / 'Segmentation'
    _write_lines(str(split_dir / 'train.txt'), VOC_TRAIN)
    _write_lines(str(split_dir / 'val.txt'), VOC_VAL)
    _write_lines(str(split_dir / 'trainval.txt'), VOC_TRAIN + VOC_VAL)
    _write_lines(str(sbd / 'dataset' / 'train.txt'), SBD_TRAIN)
    _write_lines(str(sbd / 'dataset' / 'val.txt'), SBD_VAL)
    return str(voc), str(sbd)


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', f'{tool}.py'), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


# ----------------------------------------------------------------------------- VOC + SBD
def test_aug_lists_follow_mmseg_and_exclude_val():
    trainaug, aug = VOC_TOOL.make_aug_lists(VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL)
    assert trainaug == ['a', 'b', 'c', 'f', 'g', 'h']  # VOC train | SBD - VOC val
    assert aug == ['f', 'g', 'h']  # SBD - VOC train - VOC val
    assert not set(trainaug) & set(VOC_VAL)


@pytest.mark.slow
def test_prepare_then_check_voc_aug(voc_sbd):
    voc, sbd = voc_sbd
    done = _run('prepare_voc_aug', voc, sbd)
    assert done.returncode == 0, done.stderr
    assert 'trainaug.txt: 6 images, aug.txt: 3 images' in done.stdout
    assert 'the paper\'s has 10582' in done.stdout  # a subset is fine, but said so
    assert 'converting SBD labels: 6 file(s)' in done.stderr and '6/6' in done.stderr  # progress
    split_dir = osp.join(voc, 'ImageSets', 'Segmentation')
    assert open(osp.join(split_dir, 'aug.txt')).read().split() == ['f', 'g', 'h']
    assert open(osp.join(split_dir, 'trainaug.txt')).read().split() == [
        'a', 'b', 'c', 'f', 'g', 'h']
    aug_dir = osp.join(voc, 'SegmentationClassAug')
    # SBD-only images: the .mat's class map as a single-channel PNG of indices
    for name in ('f', 'g', 'h', 'd'):
        mat = loadmat(osp.join(sbd, 'dataset', 'cls', f'{name}.mat'))
        expected = mat['GTcls'][0]['Segmentation'][0]
        np.testing.assert_array_equal(np.array(Image.open(osp.join(aug_dir, f'{name}.png'))),
                                      expected)
    # VOC train images: VOC's own (finer) label replaces SBD's
    for name in VOC_TRAIN:
        with open(osp.join(aug_dir, f'{name}.png'), 'rb') as a, open(
                osp.join(voc, 'SegmentationClass', f'{name}.png'), 'rb') as b:
            assert a.read() == b.read()

    checked = _run('check_dataset', voc)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for line in ('train             3 images (paper: 1464)   OK',
                 'trainaug          6 images (paper: 10582)  OK'):
        assert line in checked.stdout
    assert 'Result: 0 error(s)' in checked.stdout
    strict = load_tool('check_dataset').main([voc, '--strict'])
    assert strict == 1, 'counts differing from the paper\'s fail with --strict'


def test_prepare_voc_aug_names_missing_and_malformed_mat(voc_sbd, capsys):
    voc, sbd = voc_sbd
    os.remove(osp.join(sbd, 'dataset', 'cls', 'g.mat'))
    assert VOC_TOOL.main([voc, sbd]) == 1
    err = capsys.readouterr().err
    assert 'g.mat' in err and 'dataset/train.txt or val.txt' in err
    write_sbd_mat(osp.join(sbd, 'dataset', 'cls', 'g.mat'), _label(1, border=False), key='GTinst')
    assert VOC_TOOL.main([voc, sbd]) == 1
    err = capsys.readouterr().err
    assert 'g.mat' in err and 'GTcls' in err and "'GTinst'" in err
    assert VOC_TOOL.main([voc, osp.join(sbd, 'nowhere')]) == 1
    assert 'dataset/cls' in capsys.readouterr().err


def test_read_sbd_segmentation_rejects_values_outside_the_classes(tmp_path):
    path = str(tmp_path / 'x.mat')
    write_sbd_mat(path, np.full((4, 5), 3, np.uint8))
    assert VOC_TOOL.read_sbd_segmentation(path).tolist() == np.full((4, 5), 3).tolist()
    write_sbd_mat(path, np.full((4, 5), 40, np.uint8))
    with pytest.raises(VOC_TOOL.DatasetPrepError, match=r'x\.mat.*\[40\].*0\.\.20'):
        VOC_TOOL.read_sbd_segmentation(path)


def _prepared(voc_sbd):
    voc, sbd = voc_sbd
    assert VOC_TOOL.main([voc, sbd]) == 0
    return voc


def test_check_names_missing_files_bad_values_sizes_and_leaks(voc_sbd, capsys):
    voc = _prepared(voc_sbd)
    capsys.readouterr()
    os.remove(osp.join(voc, 'JPEGImages', 'g.jpg'))  # listed in aug/trainaug
    _write_palette_png(osp.join(voc, 'SegmentationClass', 'e.png'),
                       np.full((H, W), 37, np.uint8))  # value outside 0..20, 255
    _write_palette_png(osp.join(voc, 'SegmentationClassAug', 'f.png'),
                       np.zeros((H + 1, W), np.uint8))  # size differs from its image
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(
        osp.join(voc, 'SegmentationClassAug', 'h.png'))  # colour-coded label
    with open(osp.join(voc, 'ImageSets', 'Segmentation', 'aug.txt'), 'a') as f:
        f.write('d\n')  # a val image in a training split
    assert load_tool('check_dataset').main([voc]) == 1
    out = capsys.readouterr().out
    split_file = 'ImageSets/Segmentation/aug.txt'
    assert f'image {osp.join(voc, "JPEGImages", "g.jpg")} (listed in {split_file}) does ' \
        'not exist' in out
    assert f'{osp.join(voc, "SegmentationClass", "e.png")} contains values 37 (140 px)' in out
    assert f'{osp.join(voc, "SegmentationClassAug", "f.png")} is 11x14 (HxW) but its image' in out
    assert 'h.png has shape (10, 14, 3)' in out and 'single-channel' in out
    assert '1 image(s) of aug are also in val (e.g. d)' in out
    assert 'FAILED' in out


def test_check_dataset_exit_codes_for_bad_arguments(tmp_path, voc_sbd, capsys):
    tool = load_tool('check_dataset')
    assert tool.main([str(tmp_path / 'missing')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert tool.main([str(tmp_path)]) == 2  # neither layout
    assert 'JPEGImages' in capsys.readouterr().err
    assert tool.main([voc_sbd[0], '--splits', 'test']) == 2
    assert "unknown split(s) ['test']" in capsys.readouterr().err
    # a missing required split is an error; a missing optional one a warning
    os.remove(osp.join(voc_sbd[0], 'ImageSets', 'Segmentation', 'val.txt'))
    report = check_tree(voc_sbd[0], check_labels=False)
    assert any('val.txt does not exist' in e for s in report.splits for e in s.errors)
    assert any('aug.txt does not exist (run tools/prepare_voc_aug.py' in w
               for s in report.splits for w in s.warnings)


# ----------------------------------------------------------------------------- Cityscapes
def test_train_id_table_is_the_standard_one():
    lut, table = CITYSCAPES_TOOL.TRAIN_ID_LUT, CITYSCAPES_TOOL.CITYSCAPES_ID_TO_TRAIN_ID
    assert len(table) == 19
    assert sorted(table.values()) == list(range(19))
    assert (lut[7], lut[8], lut[26], lut[33]) == (0, 1, 13, 18)  # road, sidewalk, car, bicycle
    for ignored in (0, 1, 4, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255):
        assert lut[ignored] == 255


@pytest.fixture
def cityscapes(tmp_path):
    root = tmp_path / 'cityscapes'
    for split, city, count in (('train', 'aachen', 2), ('val', 'frankfurt', 1)):
        img_dir, gt_dir = root / 'leftImg8bit' / split / city, root / 'gtFine' / split / city
        os.makedirs(img_dir)
        os.makedirs(gt_dir)
        for i in range(count):
            stem = f'{city}_{i:06d}_000019'
            Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(
                img_dir / f'{stem}_leftImg8bit.png')
            ids = np.array([[7, 8, 26, 33, 0, 4, 24] * 2] * H, np.uint8)
            Image.fromarray(ids).save(gt_dir / f'{stem}_gtFine_labelIds.png')
    return str(root)


def test_prepare_then_check_cityscapes(cityscapes):
    done = _run('prepare_cityscapes', cityscapes)
    assert done.returncode == 0, done.stderr
    assert 'wrote 3 *_labelTrainIds.png' in done.stdout
    assert 'converting gtFine label ids to train ids: 3 file(s)' in done.stderr
    out = osp.join(cityscapes, 'gtFine', 'train', 'aachen',
                   'aachen_000000_000019_gtFine_labelTrainIds.png')
    assert np.array(Image.open(out))[0].tolist() == [0, 1, 13, 18, 255, 255, 11] * 2
    report = check_tree(cityscapes)
    assert report.layout == 'cityscapes' and report.ok(), report.format()
    assert [s.count for s in report.splits[:2]] == [2, 1]
    assert report.splits[0].errors == [] and report.splits[1].errors == []


def test_prepare_cityscapes_names_bad_files(cityscapes, capsys):
    bad = osp.join(cityscapes, 'gtFine', 'val', 'frankfurt',
                   'frankfurt_000000_000019_gtFine_labelIds.png')
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(bad)  # a colour image
    assert CITYSCAPES_TOOL.main([cityscapes]) == 1
    captured = capsys.readouterr()
    assert 'wrote 2 ' in captured.out and bad in captured.err and 'single-channel' in captured.err
    Image.fromarray(np.full((H, W), 40, np.uint8)).save(bad)  # not raw ids
    assert CITYSCAPES_TOOL.main([cityscapes]) == 1
    assert 'holds values [40]' in capsys.readouterr().err
    assert CITYSCAPES_TOOL.main([cityscapes, '--gt-dir', 'gtCoarse']) == 1
    assert 'gtCoarse' in capsys.readouterr().err


def test_check_label_file_reports_each_kind(tmp_path):
    img, label = str(tmp_path / 'i.jpg'), str(tmp_path / 'l.png')
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img)
    Image.fromarray(np.full((H, W), 19, np.uint8)).save(label)
    assert [k for k, _ in check_label_file(img, label, num_classes=19)] == ['label values']
    assert check_label_file(img, label, num_classes=21) == []
    with open(label, 'wb') as f:
        f.write(b'not a png')
    assert [k for k, _ in check_label_file(img, label, 21)] == ['unreadable']


# ----------------------------------------------------------------------------- links in a dataset
def _victim(tmp_path, name: str) -> str:
    """A file outside the dataset that a link shipped inside it points at."""
    path = tmp_path / 'outside' / name
    os.makedirs(path.parent, exist_ok=True)
    path.write_bytes(b'not yours to overwrite')
    return str(path)


def _untouched(path: str) -> bool:
    with open(path, 'rb') as f:
        return f.read() == b'not yours to overwrite'


def test_prepare_voc_aug_replaces_linked_files_without_writing_their_targets(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    split_link = osp.join(voc, 'ImageSets', 'Segmentation', 'trainaug.txt')
    split_victim = _victim(tmp_path, 'bashrc')
    os.symlink(split_victim, split_link)
    os.makedirs(osp.join(voc, 'SegmentationClassAug'))
    label_link = osp.join(voc, 'SegmentationClassAug', 'f.png')
    label_victim = _victim(tmp_path, 'victim.png')
    os.symlink(label_victim, label_link)
    done = _run('prepare_voc_aug', voc, sbd)
    assert done.returncode == 0, done.stderr
    assert _untouched(split_victim) and _untouched(label_victim)
    assert not osp.islink(split_link) and not osp.islink(label_link)
    assert open(split_link).read().split() == ['a', 'b', 'c', 'f', 'g', 'h']
    assert Image.open(label_link).size == (W, H)


def test_prepare_voc_aug_refuses_a_linked_directory(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    os.symlink(elsewhere, osp.join(voc, 'SegmentationClassAug'))
    done = _run('prepare_voc_aug', voc, sbd)
    assert done.returncode == 1
    assert f"{osp.join(voc, 'SegmentationClassAug')!r} is a symbolic link" in done.stderr
    assert 'Traceback' not in done.stderr
    assert os.listdir(elsewhere) == []


def test_prepare_cityscapes_never_writes_through_links(cityscapes, tmp_path):
    gt_train = osp.join(cityscapes, 'gtFine', 'train', 'aachen')
    label_link = osp.join(gt_train, 'aachen_000000_000019_gtFine_labelTrainIds.png')
    label_victim = _victim(tmp_path, 'victim.png')
    os.symlink(label_victim, label_link)
    # a city directory that is a link to another tree holding *_labelIds.png files
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(
        elsewhere / 'bonn_000000_000019_gtFine_labelIds.png')
    linked_city = osp.join(cityscapes, 'gtFine', 'val', 'bonn')
    os.symlink(elsewhere, linked_city)
    done = _run('prepare_cityscapes', cityscapes)
    assert done.returncode == 1
    assert 'wrote 3 *_labelTrainIds.png' in done.stdout  # the real files, the link replaced
    assert f'{linked_city!r} is a symbolic link' in done.stderr
    assert _untouched(label_victim) and not osp.islink(label_link)
    assert np.array(Image.open(label_link))[0].tolist() == [0, 1, 13, 18, 255, 255, 11] * 2
    assert os.listdir(elsewhere) == ['bonn_000000_000019_gtFine_labelIds.png']
