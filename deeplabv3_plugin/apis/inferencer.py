"""``DeepLabV3Inferencer``: mmseg's ``MMSegInferencer`` on the fast path, TTA configs included."""
from typing import Optional, Union

from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.model import BaseTTAModel
from mmseg.apis import MMSegInferencer
from mmengine.logging import print_log
from mmseg.registry import INFERENCERS, MODELS

from .. import registry  # noqa: F401  (the deeplabv3_plugin config scope, see its docstring)
from ..checkpoint.routes import register_routes
from ..deploy.artifacts import choose_calibrated_engine, exported_model
from ..deploy.engines import Engine
from ..deploy.fast_inference import FastInferenceModel
from ..deploy.int8 import CALIBRATION_IMAGES
from ..errors import UserInputError
from .inference import inference_pipeline

__all__ = ['DeepLabV3Inferencer']


@INFERENCERS.register_module()
class DeepLabV3Inferencer(MMSegInferencer):
    """``MMSegInferencer`` (same arguments) that also reads ``SegTTAModel`` configs (multi-scale
    + flip) and label steps inside ``TestTimeAug``. ``backend`` (``'auto'``: the fastest engine
    measured on this kind of CPU that holds accuracy, the log says which and why; ``'pytorch'``,
    ``'onnxruntime'``, ``'openvino'``) and ``precision`` (``'auto'``, ``'fp32'``, ``'bf16'``,
    ``'int8'``, calibrated on ``calib_num`` images of the training split or ``calib_dir``) pick
    the engine; on PyTorch ``fast`` means channels_last with BN folded (same predictions), with
    ``bf16`` autocast if asked. ``model`` is required: a config built from the checkpoint
    (``model=None``) would mean running the checkpoint's text."""

    def __init__(self, model: Union[str, Config, dict, None], weights: Optional[str] = None,
                 *args, fast: bool = True, bf16: bool = False, backend: str = 'auto',
                 precision: str = 'auto', calib_dir: Optional[str] = None,
                 calib_num: int = CALIBRATION_IMAGES, **kwargs) -> None:
        if bf16 and not fast:
            raise ValueError('DeepLabV3Inferencer: bf16=True needs fast=True')
        if not fast and backend == 'auto':
            backend = 'pytorch'
        if model is None:  # mmengine would run the config text stored in the checkpoint
            raise UserInputError(
                f'DeepLabV3Inferencer(model=None, weights={weights!r}): building the model from '
                'the config stored in the checkpoint would run that text as Python, so it is '
                'refused. Pass the config file the checkpoint was trained with, e.g. '
                f'DeepLabV3Inferencer(model="configs/....py", weights={weights!r}).')
        register_routes()  # mmengine's loader reaches the weights through the safe routes
        super().__init__(model, weights, *args, **kwargs)
        device = kwargs.get('device') or (args[3] if len(args) > 3 else None) or 'cpu'
        engine, reason, calibration = choose_calibrated_engine(
            self.cfg, backend, 'bf16' if bf16 else precision, 'fast', str(device),
            calib_dir=calib_dir, calib_num=calib_num)
        if engine.exported and weights is None:
            raise UserInputError(f'DeepLabV3Inferencer(backend={backend!r}): {engine} runs the '
                                 "checkpoint's exported graph: pass weights=....")
        print_log(f'DeepLabV3Inferencer: {reason}', logger='current')
        tta = isinstance(self.model, BaseTTAModel)
        segmentor = self.model.module if tta else self.model
        exported = None
        if engine.exported:  # the graph of the segmentor, which a SegTTAModel wraps
            config = self.cfg.copy()
            config.model = self.cfg.model.get('module', self.cfg.model)
            exported = exported_model(config, weights, engine, calibration,
                                      fallback=backend == 'auto')
        self.engine = engine if exported or not engine.exported else Engine('pytorch')
        if exported:
            replacement = MODELS.build(exported)
            replacement.dataset_meta = self.model.dataset_meta
        elif fast:
            replacement = FastInferenceModel(segmentor, compile=engine.compile,
                                             bf16=engine.precision == 'bf16',
                                             copy_model=False)
        else:
            return
        if tta:
            self.model.module = replacement
        else:
            self.model = replacement

    def _init_pipeline(self, cfg) -> Compose:
        return Compose(inference_pipeline(cfg.test_dataloader.dataset.pipeline))
