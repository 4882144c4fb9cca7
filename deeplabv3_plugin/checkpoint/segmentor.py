"""The package's one model builder: a config's segmentor with a checkpoint's weights, refused
unless they fit, loaded through the safe routes."""
import copy
from pathlib import Path
from typing import Optional, Union

from mmengine import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint
from mmseg.registry import MODELS
from torch import nn

from ..config_checks import check_cfg_options, check_file_exists, load_config
from ..errors import UserInputError
from ..models.output_stride import OutputStrideSwitchable
from .compatibility import check_state_dict_fits, checkpoint_state_dict
from .routes import register_routes

__all__ = ['build_segmentor']


def build_segmentor(config: Union[str, Path, Config], checkpoint: Optional[str] = None,
                    cfg_options: Optional[dict] = None, output_stride: Optional[int] = None,
                    device: str = 'cpu') -> nn.Module:
    """``config``'s segmentor in eval mode, with ``dataset_meta`` and ``cfg``: no pretrained
    download, SyncBN as BN, a checkpoint that must fit but for the auxiliary head (mmengine
    would leave misfits random); ``output_stride`` sets the ``test_output_stride``."""
    cfg = copy.deepcopy(config) if isinstance(config, Config) else load_config(str(config))
    name = cfg.filename or '<config>'
    check_cfg_options(cfg, cfg_options, name)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('pretrained', None)
    model_cfg.get('backbone', {}).pop('init_cfg', None)
    model, meta = revert_sync_batchnorm(MODELS.build(model_cfg)), {}
    if checkpoint is not None:
        if '://' not in checkpoint:  # URLs (open-mmlab://, https://) go to mmengine's loaders
            check_file_exists(checkpoint, 'checkpoint', 'Expected a .pth file written by '
                              'tools/train.py or tools/convert_torchvision.py, or a '
                              '.safetensors file of tools/publish_model.py.')
        register_routes()  # mmengine's loader reaches the file through the safe routes
        loaded = _load_checkpoint(checkpoint, map_location='cpu')
        # the auxiliary head only adds a training loss; inference may lack it
        check_state_dict_fits(model, loaded, repr(checkpoint), optional=('auxiliary_head.', ))
        model.load_state_dict(checkpoint_state_dict(loaded), strict=False)
        meta = loaded.get('meta') or {}
    if output_stride is not None:
        if not isinstance(model, OutputStrideSwitchable):
            raise UserInputError(f'output stride {output_stride}: the model of {name!r} is a '
                                 f"{type(model).__name__}, not the plugin's type='DeepLabV3'.")
        model.switch_output_stride(output_stride)
    model.dataset_meta = meta.get('dataset_meta') or dict(
        classes=cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo', {}).get(
            'classes') or tuple(str(i) for i in range(model.decode_head.num_classes)))
    model.cfg = cfg
    return model.to(device).eval()
