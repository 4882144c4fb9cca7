"""mmseg's inferencer with the plugin's models: ``MMSegInferencer`` and ``DeepLabV3Inferencer``.

``MMSegInferencer`` is run on plugin configs (``tests/configs/tools_tiny.py``, the demo config),
``DeepLabV3Inferencer`` (the fast path) on the demo config. Inputs as users give them: one image,
a list, a folder; outputs as mmseg writes them: overlays and label PNGs under ``out_dir``.
Predictions are compared with the plugin's own inference API on the same checkpoint.
"""
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.apis import MMSegInferencer
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import INFERENCERS
from PIL import Image

from helpers.checkpoints import save_checkpoint
from helpers.demo import tiny_demo_config
from deeplabv3_plugin.apis import DeepLabV3Inferencer, inference_model, init_model
from deeplabv3_plugin.datasets.synthetic_shapes import CLASSES, PALETTE
from deeplabv3_plugin.cli import enable_tta
from helpers.tools import TINY_CONFIG, make_voc_dataset


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('voc'))
    make_voc_dataset(root, num_train=0, num_val=3, size=40)
    folder = osp.join(root, 'JPEGImages')
    return folder, sorted(osp.join(folder, n) for n in os.listdir(folder))


def test_mmseg_inferencer_runs_a_plugin_config(images, tmp_path):
    folder, paths = images
    meta = PascalVOCDataset.METAINFO
    ckpt = save_checkpoint(Config.fromfile(TINY_CONFIG), str(tmp_path / 'tiny.pth'),
                           meta['classes'], meta['palette'])
    inferencer = MMSegInferencer(model=TINY_CONFIG, weights=ckpt, device='cpu')
    reference = init_model(TINY_CONFIG, ckpt, fast=False)
    one = inferencer(paths[0])['predictions']
    np.testing.assert_array_equal(one, inference_model(reference, paths[0]))
    several = inferencer(paths[:2])['predictions']
    assert len(several) == 2 and several[1].shape == (40, 40)
    out = str(tmp_path / 'out')
    inferencer(folder, out_dir=out)
    assert len(os.listdir(osp.join(out, 'vis'))) == len(os.listdir(osp.join(out, 'pred'))) == 3
    overlay = np.array(Image.open(osp.join(out, 'vis', osp.basename(paths[0]))))
    assert overlay.shape == (40, 40, 3)


def test_deeplabv3_inferencer_reads_the_checked_pipelines(images, tmp_path):
    folder, paths = images
    cfg = tiny_demo_config()
    ckpt = save_checkpoint(cfg, str(tmp_path / 'demo.pth'), list(CLASSES), PALETTE)
    inferencer = DeepLabV3Inferencer(cfg, weights=ckpt, device='cpu', backend='pytorch')
    reference = init_model(cfg, ckpt)
    result = inferencer(paths, out_dir=str(tmp_path / 'out'))
    for path, predicted in zip(paths, result['predictions']):
        np.testing.assert_array_equal(predicted, inference_model(reference, path))
    assert len(os.listdir(tmp_path / 'out' / 'pred')) == 3
    assert inferencer.model.dataset_meta['classes'] == list(CLASSES)
    assert INFERENCERS.get('DeepLabV3Inferencer') is DeepLabV3Inferencer


@pytest.mark.slow
def test_deeplabv3_inferencer_multi_scale_flip_on_arrays(images, tmp_path):
    _, paths = images
    cfg = tiny_demo_config()
    ckpt = save_checkpoint(cfg, str(tmp_path / 'demo.pth'), list(CLASSES), PALETTE)
    enable_tta(cfg)
    inferencer = DeepLabV3Inferencer(cfg, weights=ckpt, device='cpu', backend='pytorch')
    assert type(inferencer.model).__name__ == 'SegTTAModel'
    assert type(inferencer.model.module).__name__ == 'FastInferenceModel'
    image = np.array(Image.open(paths[0]))[..., ::-1].copy()  # BGR, as mmcv.imread gives
    sample = inferencer(image, return_datasamples=True)
    assert tuple(sample.pred_sem_seg.shape) == (40, 40)
    # The same multi-scale + flip model on each exported engine (one cached export).
    for backend in ('onnxruntime', 'openvino'):
        exported = DeepLabV3Inferencer(cfg, weights=ckpt, device='cpu', backend=backend,
                                       precision='fp32')
        assert type(exported.model.module).__name__ == 'ExportedSegmentor'
        assert exported.model.module.backend == backend
        assert exported.model.dataset_meta['classes'] == list(CLASSES)
        other = exported(image, return_datasamples=True).pred_sem_seg.data
        assert (other == sample.pred_sem_seg.data).float().mean() >= 0.999
