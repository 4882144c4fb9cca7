"""The demo config shrunk for tests of the inference path: real config, real dataset, tiny net.

``configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py`` is loaded as users
load it and only made smaller (ResNet-18 at base width 8, 16-channel ASPP, 4 + 2 generated
SyntheticShapes images, 2 iterations), so the tests run the plugin's DeepLabV3 through mmengine's
``Runner`` and ``MODELS.build`` in seconds.
"""
import os.path as osp
from typing import Optional

import torch
from mmengine import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes

from . import REPO_ROOT as REPO

DEMO_CONFIG = osp.join(REPO, 'configs', 'demo',
                       'deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py')
IMAGE_SIZE = 128
#: Input size of the model-level tests (the Runner tests read the 128 px demo images).
MODEL_SIZE = 64


def tiny_demo_config(data_root: Optional[str] = None, work_dir: Optional[str] = None,
                     depth: int = 18, stem: str = 'deep') -> Config:
    """The demo config with a tiny ResNet-``depth`` and, if given, a generated dataset."""
    cfg = Config.fromfile(DEMO_CONFIG)
    backbone = cfg.model.backbone
    backbone.update(depth=depth, stem=stem, base_channels=8, stem_channels=8)
    if depth >= 50:
        backbone.multi_grid = (1, 2, 4)
    cfg.model.decode_head.update(in_channels=64 if depth < 50 else 256, channels=16)
    if data_root is not None:
        generate_synthetic_shapes(data_root, num_train=4, num_val=2, image_size=IMAGE_SIZE,
                                  progress=False)
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.data_root = data_root
            cfg[loader].num_workers = 0
            cfg[loader].persistent_workers = False
        cfg.train_dataloader.batch_size = 2
        cfg.train_cfg.update(max_iters=2, val_interval=2)
        cfg.param_scheduler[0].end = 2
        cfg.default_hooks.checkpoint.interval = 2
        cfg.default_hooks.logger.interval = 1
    if work_dir is not None:
        cfg.work_dir = work_dir
    return cfg


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial statistics and affine parameters, so folding them matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                    module.bias.copy_(0.2 * torch.randn(n, generator=generator))
    return model


def build_tiny_model(depth: int = 18, stem: str = 'deep', **model_overrides) -> torch.nn.Module:
    """The tiny demo DeepLabV3 built by ``MODELS.build`` with random BN statistics, eval mode."""
    cfg = tiny_demo_config(depth=depth, stem=stem)
    cfg.model.data_preprocessor.update(size=(MODEL_SIZE, MODEL_SIZE),
                                       test_cfg=dict(size=(MODEL_SIZE, MODEL_SIZE)))
    cfg.model.update(model_overrides)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return randomize_bn(model).eval()


def count_bn(model) -> int:
    """The batch-norm layers left in ``model`` (folding removes them)."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())
