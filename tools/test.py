"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

The flags are those of mmseg's ``tools/test.py`` plus ``--output-stride N`` (the paper's "train at
OS 16, evaluate at OS 8", Tables 4 and 6) and the engine: ``--backend {auto,pytorch,onnxruntime,
openvino}`` and ``--precision {auto,fp32,bf16,int8}``. By default (``auto``) the model runs on
the engine measured fastest on this kind of CPU among those computing in float32, so a paper
reproduction is scored with float32 predictions (:mod:`deeplabv3_plugin.deploy.engines`, which the
log quotes); ``--fast`` takes the fastest engine that holds accuracy (int8 where it pays,
calibrated on ``--calib-num`` images of the training split or of ``--calib-dir``). Exported graphs
are cached per checkpoint (:mod:`deeplabv3_plugin.deploy.artifacts`). On PyTorch the model runs
the fast way (:class:`deeplabv3_plugin.apis.FastInferenceHook`: channels_last, BN folded into the
convolutions, same predictions); ``--no-fast`` runs it as trained, ``--bf16`` (``--precision
bf16``) adds bf16 autocast where the CPU computes bf16 natively. Unlike mmseg's script it
refuses a checkpoint that does not fit the config's model (mmengine would only warn and test
random weights), and it never overwrites files of the training run in the work dir: its config
dump and log go to a new ``<work_dir>/<timestamp>/`` directory. Errors in the user's input print
one paragraph and exit
with status 2.
"""
import argparse
import os

from mmengine.config import DictAction

import deeplabv3_plugin.runtime  # noqa: F401  (components, safe checkpoint loader, CPU DDP)
from deeplabv3_plugin.config_checks import check_cfg_options, load_config
from deeplabv3_plugin.engine import build_runner, setup_distributed
from deeplabv3_plugin.errors import UserInputError, run_tool
from deeplabv3_plugin.deploy.engines import BACKEND_CHOICES, PRECISION_CHOICES
from deeplabv3_plugin.deploy.int8 import CALIBRATION_IMAGES
from deeplabv3_plugin.cli import (check_checkpoint_arg, enable_tta, enable_visualization,
                                  set_inference_engine, set_test_output_dir, set_work_dir)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a segmentor (DeepLabV3 plugin for mmseg).')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an .onnx model of '
                        'tools/export_onnx.py (fp32 or --int8), run with ONNX Runtime (or '
                        '--backend openvino)')
    parser.add_argument('--work-dir', help='directory for the metrics json and the log (default: '
                        "the config's work_dir, else ./work_dirs/<config name>); existing files "
                        'there are never overwritten')
    parser.add_argument('--out', help='directory to save the predicted label maps (PNG) in')
    parser.add_argument('--show', action='store_true', help='display each prediction')
    parser.add_argument('--show-dir', help='directory to save image/prediction overlays in '
                        '(written to DIR/vis_data/vis_image/)')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds each --show window '
                        'stays open')
    parser.add_argument(
        '--output-stride', type=int, metavar='N',
        help="evaluate at output stride N (e.g. 8 for a model trained at 16); needs the plugin's "
        "type='DeepLabV3' segmentor")
    parser.add_argument(
        '--no-fast', action='store_true',
        help='run the model as trained (NCHW, BN unfused) instead of the default fast path '
        '(channels_last and BN folded into the convolutions: same predictions, faster)')
    parser.add_argument('--backend', default='auto', help='engine: ' + ', '.join(
        BACKEND_CHOICES) + ' (default: auto, the one measured fastest on this kind of CPU)')
    parser.add_argument('--precision', default='auto', help=', '.join(PRECISION_CHOICES) +
                        ' (default: auto, fp32; with --fast the fastest that holds accuracy)')
    parser.add_argument('--fast', action='store_true',
                        help='auto picks the fastest engine that holds accuracy (int8 within 0.5 '
                        'mIoU of fp32, bf16 within 0.2) instead of float32 predictions')
    parser.add_argument('--calib-dir', metavar='DIR', help='int8: calibration images (default: '
                        "the config's training split)")
    parser.add_argument('--calib-num', type=int, default=CALIBRATION_IMAGES, metavar='N',
                        help='int8: calibration images (default: %(default)s)')
    parser.add_argument('--bf16', action='store_true',
                        help='--precision bf16: bf16 autocast on top of the fast path where the '
                        'CPU has native bf16 (AVX512-BF16/AMX) or on a GPU; elsewhere it is '
                        'emulated and slower, so float32 is kept with a warning')
    parser.add_argument('--force-bf16', action='store_true',
                        help='--bf16 even on a CPU that emulates bf16 (slower; for testing)')
    parser.add_argument('--tta', action='store_true',
                        help="multi-scale + flip test (the config's tta_pipeline)")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. test_dataloader.batch_size=1. Keys must exist, '
        'except new leaf keys that are not near-copies of existing ones')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch: torchrun / tools/dist_test.sh)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    check_checkpoint_arg(args.checkpoint)
    check_cfg_options(cfg, args.cfg_options, args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    if args.bf16 and args.precision not in ('auto', 'bf16'):
        raise UserInputError(f'--bf16 --precision {args.precision}: choose one precision.')
    set_inference_engine(cfg, args.checkpoint, args.backend, 'bf16' if args.bf16 else
                         args.precision, args.fast, args.output_stride, args.calib_dir,
                         args.calib_num, no_fast=args.no_fast, force_bf16=args.force_bf16)
    enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    if args.tta:
        enable_tta(cfg)
    set_test_output_dir(cfg, args.out)
    setup_distributed(cfg)
    runner = build_runner(cfg, keep_work_dir_files=True)
    runner.test()


if __name__ == '__main__':
    run_tool(main)
