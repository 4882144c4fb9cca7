"""``DeepLabV3Inferencer``: mmseg's ``MMSegInferencer`` on the fast path, TTA configs included."""
from typing import Optional, Union

from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.model import BaseTTAModel
from mmseg.apis import MMSegInferencer
from mmseg.registry import INFERENCERS

from .. import registry  # noqa: F401  (the deeplabv3_plugin config scope, see its docstring)
from ..engine.errors import UserInputError
from .fast_inference import FastInferenceModel
from .inference import inference_pipeline

__all__ = ['DeepLabV3Inferencer']


@INFERENCERS.register_module()
class DeepLabV3Inferencer(MMSegInferencer):
    """``MMSegInferencer`` (same arguments) that also reads ``SegTTAModel`` configs (multi-scale
    + flip) and label steps inside ``TestTimeAug``; ``fast``: channels_last with BN folded (same
    predictions), with ``bf16`` autocast if asked. ``model`` is required: a config built from the
    checkpoint (``model=None``) would mean running the checkpoint's text."""

    def __init__(self, model: Union[str, Config, dict, None], weights: Optional[str] = None,
                 *args, fast: bool = True, bf16: bool = False, **kwargs) -> None:
        if bf16 and not fast:
            raise ValueError('DeepLabV3Inferencer: bf16=True needs fast=True')
        if model is None:  # mmengine would run the config text stored in the checkpoint
            raise UserInputError(
                f'DeepLabV3Inferencer(model=None, weights={weights!r}): building the model from '
                'the config stored in the checkpoint would run that text as Python, so it is '
                'refused. Pass the config file the checkpoint was trained with, e.g. '
                f'DeepLabV3Inferencer(model="configs/....py", weights={weights!r}).')
        import deeplabv3_plugin.runtime  # noqa: F401  (loads mmengine checkpoints, safely)
        super().__init__(model, weights, *args, **kwargs)
        if fast:
            options = dict(bf16=bf16, copy_model=False)
            if isinstance(self.model, BaseTTAModel):
                self.model.module = FastInferenceModel(self.model.module, **options)
            else:
                self.model = FastInferenceModel(self.model, **options)

    def _init_pipeline(self, cfg) -> Compose:
        return Compose(inference_pipeline(cfg.test_dataloader.dataset.pipeline))
