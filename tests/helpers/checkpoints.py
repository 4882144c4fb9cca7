"""A checkpoint of a freshly built model, for the inference tests (not a test module)."""
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS


def save_checkpoint(cfg: Config, path: str, classes, palette) -> str:
    """Weights of ``cfg.model`` built and initialised, with the dataset_meta training saves."""
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(classes), palette=palette))), path)
    return path
