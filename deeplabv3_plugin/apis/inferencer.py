"""``DeepLabV3Inferencer``: mmseg's ``MMSegInferencer`` on the fast path, TTA configs included.

``MMSegInferencer`` drops only top-level ``LoadAnnotations`` steps; ``_init_pipeline`` (the hook
mmengine leaves to subclasses) also drops those inside ``TestTimeAug`` and ``CheckSegSample``.
"""
from typing import Optional

from mmcv.transforms import Compose
from mmengine.model import BaseTTAModel
from mmseg.apis import MMSegInferencer
from mmseg.registry import INFERENCERS

from .. import registry  # noqa: F401  (the deeplabv3_plugin config scope, see its docstring)
from .fast_inference import FastInferenceModel
from .inference import inference_pipeline

__all__ = ['DeepLabV3Inferencer']


@INFERENCERS.register_module()
class DeepLabV3Inferencer(MMSegInferencer):
    """``MMSegInferencer`` that also reads TTA configs; fast by default.

    Args:
        model (str | Config): Config file or object (a ``SegTTAModel`` config gives
            multi-scale + flip inference).
        weights (str, optional): Checkpoint; its ``dataset_meta`` gives classes and palette.
        fast (bool): Channels_last with BN folded (same predictions). Default: True.
        bf16 (bool): bf16 autocast on the fast path. Default: False.
        Others: as ``MMSegInferencer``.
    """

    def __init__(self, model, weights: Optional[str] = None, classes=None, palette=None,
                 dataset_name: Optional[str] = None, device: Optional[str] = None,
                 scope: Optional[str] = 'mmseg', fast: bool = True, bf16: bool = False) -> None:
        if bf16 and not fast:
            raise ValueError('DeepLabV3Inferencer: bf16=True is part of the fast path; it needs '
                             'fast=True')
        import deeplabv3_plugin.runtime  # noqa: F401  (loads mmengine checkpoints, safely)
        super().__init__(model, weights=weights, classes=classes, palette=palette,
                         dataset_name=dataset_name, device=device, scope=scope)
        if fast:
            options = dict(bf16=bf16, copy_model=False)
            if isinstance(self.model, BaseTTAModel):
                self.model.module = FastInferenceModel(self.model.module, **options)
            else:
                self.model = FastInferenceModel(self.model, **options)

    def _init_pipeline(self, cfg) -> Compose:
        return Compose(inference_pipeline(cfg.test_dataloader.dataset.pipeline))
