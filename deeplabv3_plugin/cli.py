"""What each option of ``tools/train.py`` and ``tools/test.py`` does to the config (as mmseg's)."""
import copy
import logging
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner import find_latest_checkpoint
from mmseg.registry import MODELS

from .checkpoint.safetensors_format import check_resumable
from .config_checks import check_file_exists
from .cpu_features import bf16_slowdown, cpu_features, resolve_bf16
from .deploy.int8 import CALIBRATION_IMAGES
from .errors import UserInputError
from .models.output_stride import OutputStrideSwitchable, check_output_stride

__all__ = [
    'add_custom_hook', 'check_checkpoint_arg', 'enable_amp', 'enable_fast_inference', 'enable_tta',
    'enable_visualization', 'set_resume', 'set_test_output_dir', 'set_test_output_stride',
    'set_inference_engine', 'set_work_dir', 'use_exported_model'
]


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def set_work_dir(cfg: Config, work_dir: Optional[str], config_path: str) -> None:
    """``--work-dir``, else the config's, else ``./work_dirs/<config name>`` (mmseg's rule)."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def enable_amp(cfg: Config, force_bf16: bool = False) -> None:
    """``--amp``: ``AmpOptimWrapper`` on an accelerator, bf16 autocast in channels_last on a CPU;
    refused where the CPU emulates bf16 (slower than float32) unless ``force_bf16``."""
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in ('AmpOptimWrapper', 'BF16AutocastOptimWrapper'):
        _warn(f'--amp: the config already trains with {wrapper_type}.')
        return
    if wrapper_type != 'OptimWrapper':
        raise UserInputError(f"--amp: optim_wrapper.type is {wrapper_type!r}, not 'OptimWrapper'"
                             '; configure mixed precision in the config instead.')
    if get_device() != 'cpu':
        cfg.optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic')
        return
    features = cpu_features()
    if not features.native_bf16:
        cost = (f'{features.name} emulates bf16 (no AVX512-BF16/AMX): a convolution\'s training '
                f'step measured just now took {bf16_slowdown(training=True):.1f}x its float32 time')
        if not force_bf16:
            raise UserInputError(f'--amp: on a CPU mixed precision means bf16 autocast, and '
                                 f'{cost}. Drop --amp, or add --force-bf16 to use bf16 anyway.')
        _warn(f'--amp --force-bf16: {cost}; training in bf16 anyway.')
    cfg.optim_wrapper.update(type='BF16AutocastOptimWrapper', channels_last=True)


def add_custom_hook(cfg: Config, hook: dict) -> None:
    """Append ``hook`` to ``cfg.custom_hooks`` unless a hook of its type is already there."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == hook['type'] for h in hooks):
        hooks.append(dict(hook))
    cfg.custom_hooks = hooks


def enable_fast_inference(cfg: Config, enabled: bool = True, bf16: bool = False,
                          force_bf16: bool = False, compile: bool = False) -> None:
    """Test through ``FastInferenceHook`` (channels_last, BN folded, ``--bf16`` where it pays)."""
    if (bf16 or force_bf16) and not enabled:
        raise UserInputError('--bf16 runs on the fast inference path; drop --no-fast to use it.')
    bf16 = resolve_bf16(bf16, force_bf16, get_device(), what='--bf16')
    if enabled:
        add_custom_hook(cfg, dict(type='FastInferenceHook', channels_last=True, fuse_bn=True,
                                  bf16=bf16, compile=compile))


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` (``'auto'``: the work dir's ``last_checkpoint``, never the config's
    ``load_from``) or ``--resume CKPT``; a fresh run over existing checkpoints warns, and a
    ``.safetensors`` file (weights only) is refused."""
    cfg.resume = False
    checkpoint = find_latest_checkpoint(cfg.work_dir) if resume in (None, 'auto') else resume
    if resume is None:
        if checkpoint is not None:
            _warn(f'Work dir {cfg.work_dir!r} holds checkpoints (latest: {checkpoint!r}) that '
                  'this run overwrites: pass --resume to continue that run, or another --work-dir.')
        return
    if checkpoint is None:
        _warn(f'--resume: no checkpoint in work dir {cfg.work_dir!r} (no last_checkpoint file); '
              'training starts from the beginning.')
        return
    if resume == 'auto':
        check_file_exists(checkpoint, 'checkpoint', f'{osp.join(cfg.work_dir, "last_checkpoint")}'
                          ' names it as the latest checkpoint; pass --resume CKPT to pick one.')
    else:
        check_file_exists(checkpoint, '--resume checkpoint', 'Expected a checkpoint saved by a '
                          'training run (e.g. <work_dir>/iter_1000.pth), or --resume alone.')
    check_resumable(checkpoint)
    cfg.load_from = checkpoint
    cfg.resume = True
    add_custom_hook(cfg, dict(type='CheckpointCompatibilityHook'))


def check_checkpoint_arg(checkpoint: str) -> None:
    """Refuse a local checkpoint path that is not a file (URLs and ``scheme://`` pass)."""
    if '://' not in checkpoint:
        check_file_exists(checkpoint, 'checkpoint', 'Expected a .pth file written by '
                          'tools/train.py (e.g. work_dirs/<config name>/iter_<N>.pth) or a '
                          '.safetensors file of tools/publish_model.py.')


def set_test_output_stride(cfg: Config, output_stride: Optional[int]) -> None:
    """``--output-stride N``: evaluate at another output stride, e.g. 8 for a model trained at
    16 (paper Sec. 4.3, Tables 4, 6)."""
    if output_stride is None:
        return
    try:
        check_output_stride(output_stride, cfg.model.get('backbone', {}).get(
            'num_cascade_blocks', 0))
    except ValueError as error:
        raise UserInputError(f'--output-stride {output_stride}: {error}') from None
    model_type = cfg.model.get('type')
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmseg'):
        model_cls = MODELS.get(model_type) if isinstance(model_type, str) else model_type
    if model_cls is not None and not (isinstance(model_cls, type)
                                      and issubclass(model_cls, OutputStrideSwitchable)):
        raise UserInputError(
            f'--output-stride {output_stride}: model type {model_type!r} does not switch its '
            "output stride; use the plugin's type='DeepLabV3' or drop the flag.")
    cfg.model.test_output_stride = output_stride


def enable_tta(cfg: Config) -> None:
    """``--tta``: multi-scale + flip inference (paper Tables 4, 6), as mmseg's tool does."""
    missing = [key for key in ('tta_pipeline', 'tta_model') if cfg.get(key) is None]
    if missing:
        raise UserInputError(f'--tta: the config has no {" and no ".join(missing)} (mmseg\'s '
                             'dataset bases have them); inherit them or drop --tta.')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    # The wrapper hands its data_preprocessor (else the Runner's top-level one) to the model.
    if cfg.model.get('data_preprocessor') is not None and \
            cfg.tta_model.get('data_preprocessor') is None:
        cfg.tta_model.data_preprocessor = copy.deepcopy(cfg.model.data_preprocessor)
    cfg.model = cfg.tta_model


def enable_visualization(cfg: Config, show_dir: Optional[str], show: bool = False,
                         wait_time: float = 2.0) -> None:
    """``--show-dir DIR`` / ``--show``: mmseg's ``SegVisualizationHook`` on every image."""
    if not (show or show_dir):
        return
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise UserInputError('--show-dir/--show: the config has no default_hooks.visualization '
                             "(mmseg's default_runtime.py has a SegVisualizationHook).")
    hook.update(draw=True, interval=1)
    if show:
        hook.update(show=True, wait_time=wait_time)
    if show_dir:
        cfg.visualizer.save_dir = show_dir
        print_log(f'--show-dir: overlays go to {osp.join(show_dir, "vis_data", "vis_image")}',
                  logger='current')


def use_exported_model(cfg: Config, onnx_file: str, backend: str = 'onnxruntime',
                       precision: str = 'fp32') -> None:
    """Run ``cfg``'s test through the exported graph ``onnx_file`` with ``backend``
    (:class:`~deeplabv3_plugin.deploy.segmentor.ExportedSegmentor`)."""
    from .deploy.segmentor import exported_model_cfg
    cfg.model = exported_model_cfg(cfg.model, onnx_file, backend, precision)
    cfg.load_from = None


def set_inference_engine(cfg: Config, checkpoint: str, backend: str = 'auto',
                         precision: str = 'auto', fast: bool = False,
                         output_stride: Optional[int] = None, calib_dir: Optional[str] = None,
                         calib_num: int = CALIBRATION_IMAGES, no_fast: bool = False,
                         force_bf16: bool = False):
    """``--backend``/``--precision`` (``auto``: the measured choice for this CPU, float32
    predictions unless ``fast``) for ``checkpoint``: an exported graph from the cache, or the
    PyTorch fast path (``no_fast``: as trained). Logs the engine and why; returns it (None for
    an ``.onnx`` file, whose precision was fixed at export)."""
    pytorch_only = [flag for flag, given in (('--no-fast', no_fast), ('--force-bf16', force_bf16))
                    if given]
    if checkpoint.endswith('.onnx'):
        check_file_exists(checkpoint, 'ONNX model', 'Expected an .onnx file written by '
                          'tools/export_onnx.py.')
        given = pytorch_only + [f'--output-stride {output_stride}'] * (output_stride is not None) \
            + [f'--precision {precision}'] * (precision != 'auto') \
            + ['--backend pytorch'] * (backend == 'pytorch')
        if given:
            raise UserInputError(f'{", ".join(given)}: not for an ONNX model ({checkpoint!r}); '
                                 'its output stride and precision were fixed when it was '
                                 'exported. Pass the .pth checkpoint to choose them here.')
        use_exported_model(cfg, checkpoint, 'onnxruntime' if backend == 'auto' else backend)
        return None
    if pytorch_only and backend == 'auto':
        backend = 'pytorch'
    from .deploy.artifacts import choose_calibrated_engine, exported_model
    from .deploy.engines import Engine
    engine, reason, calibration = choose_calibrated_engine(
        cfg, backend, precision, 'fast' if fast else 'exact', get_device(),
        cfg.get('launcher', 'none') != 'none', calib_dir, calib_num)
    if engine.exported and pytorch_only:
        raise UserInputError(f'{", ".join(pytorch_only)}: options of the PyTorch path, but the '
                             f'engine is {reason} Add --backend pytorch, or drop them.')
    print_log(f'Inference engine: {reason}', logger='current')
    set_test_output_stride(cfg, output_stride)
    exported = engine.exported and exported_model(cfg, checkpoint, engine, calibration,
                                                  output_stride, fallback=backend == 'auto')
    if exported:
        cfg.model, cfg.load_from = exported, None
        return engine
    cfg.load_from = checkpoint
    add_custom_hook(cfg, dict(type='CheckpointCompatibilityHook'))
    enable_fast_inference(cfg, enabled=not no_fast, bf16=engine.precision == 'bf16',
                          force_bf16=force_bf16, compile=engine.compile)
    return engine if not engine.exported else Engine('pytorch')


def set_test_output_dir(cfg: Config, out: Optional[str]) -> None:
    """``--out DIR``: keep the predicted label maps as PNGs in ``DIR``."""
    if out is not None:
        cfg.test_evaluator.update(output_dir=out, keep_results=True)
