"""The repo's configs in tests: fast repeated ``Config.fromfile``, models shrunk to tiny widths,
random samples (shared by test_configs.py and test_protocol.py).

mmengine resolves each ``mmseg::`` base of a config by parsing all ~100 YAML metafiles of the
installed mmseg (about 0.7 s a time on the CI machine). The answer is the same for the whole
process, so :func:`cached_scoped_bases` memoises mmengine's lookup while the tests run; the
configs are still parsed and merged exactly as ``tools/train.py`` does.
"""
import contextlib
import copy
import functools
import os.path as osp

import mmengine.config.config as mmengine_config
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from . import REPO_ROOT as REPO

INTEROP_CONFIG = osp.join(REPO, 'configs', 'mmseg_interop',
                          'deeplabv3-plugin_r50-d8_4xb4-20k_voc12aug-512x512.py')
BASE_CHANNELS = 8  # shrunk width: block4 outputs 8 * 8 * 4 = 256 channels
SIZE = 33


@contextlib.contextmanager
def cached_scoped_bases():
    """Memoise mmengine's ``package::path`` base lookup (results and its ValueError)."""
    original = mmengine_config._get_external_cfg_path

    @functools.lru_cache(maxsize=None)
    def cached(package_path, cfg_file):
        try:
            return original(package_path, cfg_file), None
        except ValueError as error:  # base configs are not in the metafiles: mmengine falls back
            return None, error

    def lookup(package_path, cfg_file):
        path, error = cached(package_path, cfg_file)
        if error is not None:
            raise error
        return path

    mmengine_config._get_external_cfg_path = lookup
    try:
        yield
    finally:
        mmengine_config._get_external_cfg_path = original


@pytest.fixture(scope='module', autouse=True)
def fast_and_scoped():
    """One thread (the CI machine is shared), mmseg scope, cached `mmseg::` base lookups."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    init_default_scope('mmseg')
    with cached_scoped_bases():
        yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def load(path: str) -> Config:
    return Config.fromfile(path)


def to_bn(obj):
    """SyncBN -> BN everywhere (mmengine does the same for non-distributed runs)."""
    if isinstance(obj, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else to_bn(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_bn(v) for v in obj)
    return obj


def shrunk_model_cfg(model_cfg) -> dict:
    """The model config with no downloads, plain BN and tiny widths; structure untouched."""
    plain = model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else dict(model_cfg)
    cfg = to_bn(copy.deepcopy(plain))
    cfg.pop('pretrained', None)
    cfg['backbone'].update(base_channels=BASE_CHANNELS, stem_channels=BASE_CHANNELS,
                           init_cfg=None, pretrained=None)
    out = BASE_CHANNELS * 8 * (4 if cfg['backbone']['depth'] >= 50 else 1)
    head = cfg['decode_head']
    head.update(in_channels=out, channels=out if head['type'] == 'FCNHead' else 16)
    if cfg.get('auxiliary_head'):
        cfg['auxiliary_head'].update(in_channels=out // 2, channels=16)
    return cfg


def random_samples(num, num_classes):
    samples = []
    for _ in range(num):
        sample = SegDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                                             pad_shape=(SIZE, SIZE), padding_size=[0, 0, 0, 0]))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, SIZE, SIZE)))
        samples.append(sample)
    return samples
