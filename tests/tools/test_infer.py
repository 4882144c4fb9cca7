"""``tools/infer.py`` as a subprocess: images, a folder, a video, and files it cannot read.

The model is the demo config shrunk (tests/helpers/demo.py) with a freshly built checkpoint;
images are generated SyntheticShapes pictures, the video is written with OpenCV from them.
"""
import os
import os.path as osp
import subprocess
import sys

import cv2
import mmcv
import numpy as np
import pytest
from PIL import Image

from helpers.checkpoints import save_checkpoint
from helpers.demo import tiny_demo_config
from deeplabv3_plugin.apis import inference_model, init_model
from deeplabv3_plugin.datasets.synthetic_shapes import (CLASSES, PALETTE,
                                                         generate_synthetic_shapes)
from helpers.tools import REPO_ROOT, check_ok, tool_env

INFER = osp.join(REPO_ROOT, 'tools', 'infer.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('infer')
    cfg = tiny_demo_config()
    config = str(root / 'model.py')
    cfg.dump(config)
    ckpt = save_checkpoint(cfg, str(root / 'model.pth'), list(CLASSES), PALETTE)
    generate_synthetic_shapes(str(root / 'shapes'), num_train=3, num_val=2, image_size=64,
                              progress=False)
    images = root / 'shapes' / 'JPEGImages'
    names = sorted(os.listdir(images))
    writer = cv2.VideoWriter(str(root / 'clip.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 5, (64, 64))
    for name in names[:3]:
        writer.write(cv2.imread(str(images / name)))
    writer.release()
    (root / 'broken.jpg').write_bytes(b'\xff\xd8\xff not really a JPEG')
    return root, config, ckpt, images, names


def _infer(root, config, ckpt, *args):
    return subprocess.run([sys.executable, INFER, config, ckpt, *args], capture_output=True,
                          text=True, cwd=str(root), env=tool_env(str(root)), timeout=300)


def test_images_folder_and_video_unreadable_files_named_and_skipped(setup):
    root, config, ckpt, images, names = setup
    done = _infer(root, config, ckpt, str(images / names[0]), 'broken.jpg', 'missing.png',
                  str(images), 'clip.mp4', '--out', 'out', '--backend', 'pytorch')
    assert done.returncode == 1, done.stderr
    assert "skipped 'broken.jpg': cannot be read as an image" in done.stderr
    assert "skipped 'missing.png': no such file or folder" in done.stderr
    written = sorted(os.listdir(root / 'out'))
    for name in names:
        stem = osp.splitext(name)[0]
        assert f'{stem}_label.png' in written and f'{stem}_overlay.jpg' in written
    assert 'clip_overlay.mp4' in written and not any(w.startswith('broken') for w in written)
    assert mmcv.VideoReader(str(root / 'out' / 'clip_overlay.mp4')).frame_cnt == 3
    # the label PNG: class indices as pixel values, the dataset's colours as its palette
    label = Image.open(root / 'out' / f'{osp.splitext(names[0])[0]}_label.png')
    assert label.mode == 'P'
    assert label.getpalette()[:3 * len(PALETTE)] == [c for rgb in PALETTE for c in rgb]
    expected = inference_model(init_model(config, ckpt), str(images / names[0]))
    np.testing.assert_array_equal(np.array(label), expected)


@pytest.mark.slow
def test_output_stride_and_tta_options(setup):
    root, config, ckpt, images, names = setup
    done = _infer(root, config, ckpt, str(images / names[1]), '--out', 'tta', '--tta',
                  '--output-stride', '8')
    check_ok(done)
    assert '1 input(s) written to tta' in done.stdout
    label = np.array(Image.open(root / 'tta' / f'{osp.splitext(names[1])[0]}_label.png'))
    assert label.shape == (64, 64) and label.max() < len(CLASSES)
    refused = _infer(root, config, ckpt, str(images / names[1]), '--output-stride', '6')
    assert refused.returncode == 2 and 'power of two' in refused.stderr
