"""The two models the benchmark compares, built the way their users build them.

* ``plugin``: this project's DeepLabV3 from its own base configs
  (``configs/_base_/models/deeplabv3-aspp_r{50,101}.py``: multi-grid ResNet with atrous block4,
  the paper's ASPP head with image pooling, 256 channels, 1x1 projection), ``output_stride`` set
  through the segmentor's single knob.
* ``mmseg``: MMSegmentation's built-in DeepLabV3 from its VOC config
  (``mmseg::deeplabv3/deeplabv3_r{50,101}-d8_4xb4-20k_voc12aug-512x512.py``: ResNetV1c, ASPPHead
  with 512 channels and a 3x3 bottleneck, auxiliary FCN head in training), switched to OS 16 the
  way its ``-d16`` configs do (strides (1, 2, 2, 1), dilations (1, 1, 1, 2), ASPP (1, 6, 12, 18)).

Both: no pretrained weights (speed does not depend on them), SyncBN reverted to BN (one process,
as mmengine's runner does outside distributed training), 21 classes.
"""
import os.path as osp
from typing import List, Tuple

import torch
from mmengine import Config
from mmengine.structures import PixelData
from mmengine.utils import get_installed_path
from mmseg.structures import SegDataSample
from torch import nn

import deeplabv3_plugin.runtime  # noqa: F401  (the plugin's models, safe checkpoint loading)
from deeplabv3_plugin.apis.inference import build_segmentor

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMPLEMENTATIONS = ('plugin', 'mmseg')
DEPTHS = (50, 101)
OUTPUT_STRIDES = (8, 16)
NUM_CLASSES = 21

# mmseg's own OS 8 / OS 16 settings (its -d8 configs and its -d16-mg124 config without MG).
_MMSEG_OS = {
    8: dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), aspp=(1, 12, 24, 36)),
    16: dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), aspp=(1, 6, 12, 18)),
}


def mmseg_config(name: str) -> str:
    """Path of ``mmseg::deeplabv3/<name>`` in the installed mmseg (its ``.mim/configs``)."""
    return osp.join(get_installed_path('mmsegmentation'), '.mim', 'configs', 'deeplabv3', name)


def model_config(impl: str, depth: int, output_stride: int, with_cp: bool = False,
                 crop: int = 513, test_size: int = 513) -> Config:
    """The model config of ``impl`` at ``depth`` and ``output_stride``.

    Args:
        impl (str): ``'plugin'`` or ``'mmseg'``.
        depth (int): 50 or 101.
        output_stride (int): 8 or 16.
        with_cp (bool): Gradient checkpointing in the backbone.
        crop (int): Training crop; the data preprocessor pads training batches to it.
        test_size (int): Test image size; the data preprocessor pads test images to it (the
            plugin's configs pad to 513, the paper's test canvas).

    Returns:
        Config: ``model`` part of the config, ready for ``MODELS.build``.
    """
    if impl not in IMPLEMENTATIONS or depth not in DEPTHS or output_stride not in OUTPUT_STRIDES:
        raise ValueError(f'no benchmark model for impl={impl!r}, depth={depth!r}, '
                         f'output_stride={output_stride!r}: expected impl in {IMPLEMENTATIONS}, '
                         f'depth in {DEPTHS}, output_stride in {OUTPUT_STRIDES}')
    if impl == 'plugin':
        cfg = Config.fromfile(
            osp.join(REPO_ROOT, 'configs', '_base_', 'models', f'deeplabv3-aspp_r{depth}.py'))
        model = cfg.model
        model.output_stride = output_stride
        model.backbone.init_cfg = None
    else:
        cfg = Config.fromfile(mmseg_config(f'deeplabv3_r{depth}-d8_4xb4-20k_voc12aug-512x512.py'))
        model = cfg.model
        model.pretrained = None
        model.backbone.strides = _MMSEG_OS[output_stride]['strides']
        model.backbone.dilations = _MMSEG_OS[output_stride]['dilations']
        model.decode_head.dilations = _MMSEG_OS[output_stride]['aspp']
        model.decode_head.num_classes = NUM_CLASSES
        model.auxiliary_head.num_classes = NUM_CLASSES
    model.backbone.with_cp = with_cp
    model.data_preprocessor.size = (crop, crop)
    model.data_preprocessor.test_cfg = dict(size=(test_size, test_size))
    return model


def build_model(impl: str, depth: int, output_stride: int, device: torch.device,
                with_cp: bool = False, crop: int = 513, test_size: int = 513) -> nn.Module:
    """Build one benchmark model (arguments as :func:`model_config`) on ``device``, eval mode.

    Through the package's one builder, :func:`deeplabv3_plugin.apis.inference.build_segmentor`.
    """
    model = model_config(impl, depth, output_stride, with_cp, crop, test_size)
    return build_segmentor(Config(dict(model=model, default_scope='mmseg')), device=str(device))


def inference_batch(size: int, device: torch.device, seed: int = 0) -> dict:
    """One ``size`` x ``size`` uint8 image packed as the test dataloader packs it."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
    shape = (size, size)
    sample = SegDataSample(metainfo=dict(ori_shape=shape, img_shape=shape, pad_shape=shape))
    return dict(inputs=[image.to(device)], data_samples=[sample])


def training_batch(crop: int, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    """``batch_size`` random crops with random labels, packed as the train dataloader does."""
    generator = torch.Generator().manual_seed(seed)
    inputs: List[torch.Tensor] = []
    samples: List[SegDataSample] = []
    shape: Tuple[int, int] = (crop, crop)
    for _ in range(batch_size):
        inputs.append(
            torch.randint(0, 256, (3, crop, crop), generator=generator,
                          dtype=torch.uint8).to(device))
        label = torch.randint(0, NUM_CLASSES, (1, crop, crop), generator=generator)
        sample = SegDataSample(metainfo=dict(ori_shape=shape, img_shape=shape, pad_shape=shape))
        sample.gt_sem_seg = PixelData(data=label.to(device))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
