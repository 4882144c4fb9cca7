"""What each command-line option of ``tools/train.py`` and ``tools/test.py`` does to the config.

The tools stay thin (parse arguments, call these, hand the config to the ``Runner``), and every
option is one function here that a test can call on a config: the flags mean the same as in
mmseg's own tools, plus the checks that turn user mistakes into clear errors
(:class:`~deeplabv3_plugin.engine.errors.UserInputError`).
"""
import copy
import inspect
import logging
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner import find_latest_checkpoint
from mmseg.registry import MODELS

from ..utils.cpu_features import bf16_slowdown, cpu_features, resolve_bf16
from . import bf16_optim_wrapper  # noqa: F401  (registers BF16AutocastOptimWrapper)
from .config_checks import check_file_exists
from .errors import UserInputError

__all__ = [
    'add_custom_hook', 'check_checkpoint_arg', 'enable_amp', 'enable_fast_inference', 'enable_tta',
    'enable_visualization', 'set_resume', 'set_test_output_dir', 'set_test_output_stride',
    'set_work_dir', 'use_onnx_model'
]

_COMPATIBILITY_HOOK = dict(type='CheckpointCompatibilityHook')


def set_work_dir(cfg: Config, work_dir: Optional[str], config_path: str) -> None:
    """``--work-dir``; else the config's ``work_dir``; else ``./work_dirs/<config name>``.

    The same rule as mmseg's tools, so mim, mmseg's scripts and these tools agree on where a
    config's run lives (``--resume`` looks for checkpoints there).
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def enable_amp(cfg: Config, force_bf16: bool = False) -> None:
    """``--amp``: mixed precision, float16 + loss scaling on a GPU, bf16 on a CPU.

    On an accelerator: mmengine's ``AmpOptimWrapper``, unchanged. On a CPU:
    :class:`~deeplabv3_plugin.engine.bf16_optim_wrapper.BF16AutocastOptimWrapper` (bf16 autocast,
    no loss scaler, float32 master weights, the same checkpoints), where the CPU has native bf16
    (AVX512-BF16/AMX). Without it bf16 is emulated and slower than float32, so ``--amp`` is
    refused with the slowdown measured now, unless ``force_bf16`` (``--force-bf16``).

    Raises:
        UserInputError: A CPU without native bf16 and no ``force_bf16``, or an optimizer wrapper
            that is neither ``OptimWrapper`` nor an AMP one.
    """
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in ('AmpOptimWrapper', 'BF16AutocastOptimWrapper'):
        print_log(f'--amp: the config already trains with {wrapper_type}.', logger='current',
                  level=logging.WARNING)
        return
    if wrapper_type != 'OptimWrapper':
        raise UserInputError(
            f'--amp: optim_wrapper.type is {wrapper_type!r}; --amp can only turn the plain '
            "'OptimWrapper' into a mixed-precision one. Configure AMP in the config instead.")
    if get_device() != 'cpu':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
        return
    features = cpu_features()
    if not features.native_bf16:
        cost = (f'{features.name} has no native bf16 (no AVX512-BF16/AMX), so bf16 is emulated: '
                f'a convolution\'s training step measured just now took '
                f'{bf16_slowdown(training=True):.1f}x its float32 time')
        if not force_bf16:
            raise UserInputError(
                f'--amp: on a CPU mixed precision means bf16 autocast, and {cost}. Drop --amp to '
                'train in float32 (faster here), or add --force-bf16 to train in bf16 anyway.')
        print_log(f'--amp --force-bf16: {cost}; training in bf16 anyway.', logger='current',
                  level=logging.WARNING)
    cfg.optim_wrapper.type = 'BF16AutocastOptimWrapper'


def add_custom_hook(cfg: Config, hook: dict) -> None:
    """Append ``hook`` to ``cfg.custom_hooks`` unless a hook of its type is already there."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == hook['type'] for h in hooks):
        hooks.append(dict(hook))
    cfg.custom_hooks = hooks


def enable_fast_inference(cfg: Config, enabled: bool = True, bf16: bool = False,
                          force_bf16: bool = False) -> None:
    """Run val/test through ``FastInferenceHook`` (channels_last + BN folding; bf16 optional).

    The hook works on an eval-only copy of the model, so checkpoints and the output-stride switch
    are unaffected; a ``FastInferenceHook`` the config already has is kept as it is. ``bf16``
    (``--bf16``) applies where it pays: a GPU or a CPU with native bf16; elsewhere float32 is kept
    with one warning giving the measured cost, unless ``force_bf16`` (``--force-bf16``).
    """
    if (bf16 or force_bf16) and not enabled:
        raise UserInputError('--bf16 runs on the fast inference path; drop --no-fast to use it.')
    bf16 = resolve_bf16(bf16, force_bf16, get_device(), what='--bf16')
    if enabled:
        add_custom_hook(cfg, dict(type='FastInferenceHook', channels_last=True, fuse_bn=True,
                                  bf16=bf16))


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` (``'auto'``: the latest checkpoint of the work dir) or ``--resume CKPT``.

    ``'auto'`` resumes the checkpoint named by ``<work_dir>/last_checkpoint`` (written by
    mmengine's ``CheckpointHook`` after each complete save, so a run killed mid-save resumes the
    previous, complete file). With no checkpoint yet the run starts from the beginning, as
    mmengine does, with a warning; the config's ``load_from`` (e.g. initial weights) is then used
    as usual. Unlike plain mmengine, a config's ``load_from`` never replaces the work dir's
    latest checkpoint as the point to resume from. Resumed checkpoints must fit the model fully
    (:class:`~deeplabv3_plugin.engine.checkpoint_checks.CheckpointCompatibilityHook`).

    Args:
        cfg: The config, with ``work_dir`` already set.
        resume: None (no resuming), ``'auto'``, or a checkpoint path.
    """
    cfg.resume = False
    if resume is None:
        _warn_if_restarting_over(cfg.work_dir)
        return
    if resume == 'auto':
        checkpoint = find_latest_checkpoint(cfg.work_dir)
        if checkpoint is None:
            print_log(f'--resume: no checkpoint in work dir {cfg.work_dir!r} (no last_checkpoint '
                      'file); training starts from the beginning.', logger='current',
                      level=logging.WARNING)
            return
        check_file_exists(checkpoint, 'checkpoint', f'{osp.join(cfg.work_dir, "last_checkpoint")}'
                          ' names it as the latest checkpoint; pass --resume CKPT to pick one.')
    else:
        checkpoint = resume
        check_file_exists(checkpoint, '--resume checkpoint',
                          'Expected a checkpoint saved by a training run (e.g. '
                          '<work_dir>/iter_1000.pth), or --resume alone for the latest one.')
    cfg.load_from = checkpoint
    cfg.resume = True
    add_custom_hook(cfg, _COMPATIBILITY_HOOK)


def _warn_if_restarting_over(work_dir: str) -> None:
    """Warn when a fresh run starts in a work dir whose checkpoints it will overwrite.

    mmseg's behaviour (start from iteration 0) is kept so scripts relying on it still work, but
    a forgotten ``--resume`` after a crash should not go unnoticed.
    """
    latest = find_latest_checkpoint(work_dir)
    if latest is not None:
        print_log(f'Work dir {work_dir!r} already holds checkpoints of a run (latest: '
                  f'{latest!r}). This run starts at iteration 0 and overwrites checkpoints of the '
                  'same names as it goes: pass --resume to continue that run instead, or '
                  '--work-dir for a separate one.', logger='current', level=logging.WARNING)


def check_checkpoint_arg(checkpoint: str) -> None:
    """Refuse a local checkpoint path that is not a file (URLs and ``scheme://`` pass through)."""
    if '://' in checkpoint:
        return
    check_file_exists(checkpoint, 'checkpoint', 'Expected a .pth file written by '
                      'tools/train.py (e.g. work_dirs/<config name>/iter_<N>.pth).')


def set_test_output_stride(cfg: Config, output_stride: Optional[int]) -> None:
    """``--output-stride N``: evaluate at another output stride (paper Sec. 4.3, Table 4, 6).

    Training at OS 16 and evaluating at OS 8 is the paper's best single-scale inference: the same
    weights, denser features (block3/block4 rates and the ASPP rates double). It is the plugin
    segmentor's ``test_output_stride`` argument (``type='DeepLabV3'``); other segmentors have no
    way to change their stride after building, so they are refused rather than silently ignored.

    Raises:
        UserInputError: ``N`` is not a power of two, or the model type has no
            ``test_output_stride``.
    """
    if output_stride is None:
        return
    if output_stride <= 0 or output_stride & (output_stride - 1):
        raise UserInputError(f'--output-stride must be a power of two such as 8, 16 or 32 (the '
                             f'ratio of input to feature resolution), got {output_stride}.')
    model_type = cfg.model.get('type')
    scope = cfg.get('default_scope') or 'mmseg'
    with DefaultScope.overwrite_default_scope(scope):
        model_cls = MODELS.get(model_type) if isinstance(model_type, str) else model_type
    if model_cls is None:
        raise UserInputError(f'--output-stride: model type {model_type!r} is not registered in '
                             "mmseg's MODELS (is custom_imports missing from the config?).")
    if not _accepts_argument(model_cls, 'test_output_stride'):
        raise UserInputError(
            f'--output-stride {output_stride}: model type {model_type!r} '
            f'({model_cls.__module__}.{model_cls.__qualname__}) has no test_output_stride '
            "argument, so it cannot be evaluated at another output stride. Use the plugin's "
            "segmentor, model = dict(type='DeepLabV3', ...) (deeplabv3_plugin.models), or drop "
            '--output-stride.')
    cfg.model.test_output_stride = output_stride


def _accepts_argument(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes keyword ``name``, following ``**kwargs`` up the MRO."""
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False


def enable_tta(cfg: Config) -> None:
    """``--tta``: multi-scale + flip inference (paper Table 4/6 "MS+Flip"), as mmseg's test.py.

    The test pipeline becomes ``cfg.tta_pipeline`` and the model is wrapped in
    ``cfg.tta_model`` (``SegTTAModel``: softmax probabilities averaged over the views).

    Raises:
        UserInputError: The config has no ``tta_pipeline`` or ``tta_model``.
    """
    missing = [key for key in ('tta_pipeline', 'tta_model') if cfg.get(key) is None]
    if missing:
        raise UserInputError(
            f'--tta: the config has no {" and no ".join(missing)}. Expected '
            "tta_model = dict(type='SegTTAModel') and a tta_pipeline with TestTimeAug (as in "
            "mmseg's configs/_base_/datasets/*.py); inherit them or drop --tta.")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    # mmengine's Runner gives a model without its own data_preprocessor the config's top-level
    # one, and BaseTTAModel passes its data_preprocessor on to the segmentor it wraps, replacing
    # the segmentor's own: a child config that set only model.data_preprocessor (another canvas
    # than the base's 512/513 px) would be evaluated on the base's canvas under --tta.
    if cfg.model.get('data_preprocessor') is not None and \
            cfg.tta_model.get('data_preprocessor') is None:
        cfg.tta_model.data_preprocessor = copy.deepcopy(cfg.model.data_preprocessor)
    cfg.model = cfg.tta_model


def enable_visualization(cfg: Config, show_dir: Optional[str], show: bool = False,
                         wait_time: float = 2.0) -> None:
    """``--show-dir DIR`` / ``--show``: draw every test image with its prediction overlaid.

    Turns on mmseg's ``SegVisualizationHook`` (``draw=True``) for every image (``interval=1``;
    mmseg's default of 50 would skip 49 of 50 images) and points the visualizer at ``DIR``:
    mmengine's ``LocalVisBackend`` writes ``DIR/vis_data/vis_image/test_<image file>_0.png``:
    the image blended with the ground truth's class colours on the left (when the test set has
    labels) and with the prediction's on the right.

    Raises:
        UserInputError: The config has no ``default_hooks.visualization``.
    """
    if not (show or show_dir):
        return
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise UserInputError(
            '--show-dir/--show: the config has no default_hooks.visualization; expected '
            "default_hooks = dict(visualization=dict(type='SegVisualizationHook')) (mmseg's "
            'default_runtime.py has it).')
    hook.draw = True
    hook.interval = 1
    if show:
        hook.show = True
        hook.wait_time = wait_time
    if show_dir:
        cfg.visualizer.save_dir = show_dir
        print_log(f'--show-dir: overlays go to {osp.join(show_dir, "vis_data", "vis_image")}',
                  logger='current')


def use_onnx_model(cfg: Config, onnx_file: str, conflicts: Sequence[str] = ()) -> None:
    """``tools/test.py CONFIG model.onnx``: test an exported model (fp32 or int8) instead.

    The model becomes an ``ONNXRuntimeSegmentor`` with the config's data preprocessor: the same
    dataset, pipeline, canvas and metric apply. ``conflicts``: given PyTorch-only options.
    """
    from ..apis import onnx_model  # noqa: F401  (registers ONNXRuntimeSegmentor)
    check_file_exists(onnx_file, 'ONNX model', 'Expected an .onnx file written by '
                      'tools/export_onnx.py.')
    if conflicts:
        raise UserInputError(f'{", ".join(conflicts)}: not for an ONNX model ({onnx_file!r}); its '
                             'output stride and precision were fixed when it was exported.')
    cfg.model = dict(type='ONNXRuntimeSegmentor', onnx_file=onnx_file,
                     data_preprocessor=cfg.model.data_preprocessor,
                     align_corners=cfg.model.decode_head.get('align_corners', False))


def set_test_output_dir(cfg: Config, out: Optional[str]) -> None:
    """``--out DIR``: keep the predicted label maps as PNGs in ``DIR`` (``IoUMetric``)."""
    if out is None:
        return
    cfg.test_evaluator['output_dir'] = out
    cfg.test_evaluator['keep_results'] = True
