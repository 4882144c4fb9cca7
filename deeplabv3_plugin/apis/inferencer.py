"""``DeepLabV3Inferencer``: mmseg's ``MMSegInferencer`` for every config of the plugin.

::

    from deeplabv3_plugin.apis import DeepLabV3Inferencer
    inferencer = DeepLabV3Inferencer('configs/deeplabv3/<name>.py', weights='iter_30000.pth')
    inferencer(['a.jpg', 'b.jpg'], out_dir='out')   # out/vis/*.png overlays, out/pred/*.png labels

``MMSegInferencer`` builds its input pipeline from the config's test pipeline by *name*: it needs
a step named ``'LoadImageFromFile'`` and drops only steps named ``'LoadAnnotations'``. Configs that
load with mmseg's transforms (``configs/mmseg_interop/``, host configs built on mmseg's) work with
``MMSegInferencer`` as they are. The paper and demo configs load through the plugin's checked
transforms (``CheckedLoadImageFromFile``, ``CheckedLoadAnnotations``, ``CheckSegSample``), which
``MMSegInferencer`` stops at ("LoadImageFromFile is not found in the test pipeline"). This
subclass overrides only ``_init_pipeline``, the method mmengine's ``BaseInferencer`` leaves to
subclasses: it drops every step that needs a label (by class, subclasses included) and reads
paths or arrays with mmseg's ``InferencerLoader``, also inside a ``TestTimeAug`` pipeline. Every
other behaviour (arguments, outputs, visualiser, palette) is ``MMSegInferencer``'s. By default
the model runs the fast way (:class:`~deeplabv3_plugin.apis.FastInferenceModel`).
"""
import copy
from typing import List, Optional

from mmcv.transforms import Compose, LoadImageFromFile
from mmengine.model import BaseTTAModel
from mmseg.apis import MMSegInferencer
from mmseg.registry import INFERENCERS, TRANSFORMS

from .. import registry  # noqa: F401  (the deeplabv3_plugin config scope, see its docstring)
from .fast_inference import FastInferenceModel
from .inference import LABEL_TRANSFORMS

__all__ = ['DeepLabV3Inferencer']


def _transform_class(step: dict) -> Optional[type]:
    kind = step.get('type')
    return TRANSFORMS.get(kind) if isinstance(kind, str) else kind


def _is(step: dict, classes) -> bool:
    cls = _transform_class(step)
    return isinstance(cls, type) and issubclass(cls, classes)


def inference_pipeline(steps: List[dict]) -> List[dict]:
    """A test (or TTA) pipeline without label steps, loading with ``InferencerLoader``.

    Args:
        steps: The config's test pipeline or ``tta_pipeline``.

    Returns:
        The steps for images without labels; paths and BGR arrays are both accepted.

    Raises:
        ValueError: No step loads the image from a file.
    """
    result = []
    for step in copy.deepcopy(steps):
        if _is(step, LABEL_TRANSFORMS):
            continue
        if _is(step, LoadImageFromFile):
            step['type'] = 'InferencerLoader'
        elif str(step.get('type')).split('.')[-1] == 'TestTimeAug':
            step['transforms'] = [[t for t in group if not _is(t, LABEL_TRANSFORMS)]
                                  for group in step['transforms']]
            step['transforms'] = [group for group in step['transforms'] if group]
        result.append(step)
    if not any(step['type'] == 'InferencerLoader' for step in result):
        raise ValueError(f'DeepLabV3Inferencer: no step of the test pipeline loads the image from '
                         f'a file (a LoadImageFromFile or subclass); got {steps}')
    return result


@INFERENCERS.register_module()
class DeepLabV3Inferencer(MMSegInferencer):
    """``MMSegInferencer`` that accepts the plugin's checked test pipelines; fast by default.

    Args:
        model (str | Config): Config file or object (a ``tools/test.py --tta`` style config,
            whose model is a ``SegTTAModel``, gives multi-scale + flip inference).
        weights (str, optional): Checkpoint. Its ``dataset_meta`` gives classes and palette.
        classes, palette, dataset_name, device, scope: As ``MMSegInferencer``.
        fast (bool): Run channels_last with BN folded (same predictions). Default: True.
        bf16 (bool): bf16 autocast on the fast path. Default: False.
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
            options = dict(channels_last=True, fuse_bn=True, bf16=bf16, copy_model=False)
            if isinstance(self.model, BaseTTAModel):
                self.model.module = FastInferenceModel(self.model.module, **options)
            else:
                self.model = FastInferenceModel(self.model, **options)

    def _init_pipeline(self, cfg) -> Compose:
        return Compose(inference_pipeline(cfg.test_dataloader.dataset.pipeline))
