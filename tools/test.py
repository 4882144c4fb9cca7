"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

The flags are those of mmseg's ``tools/test.py`` plus ``--output-stride N`` (the paper's "train at
OS 16, evaluate at OS 8", Tables 4 and 6). The model runs the fast way by default
(:class:`deeplabv3_plugin.apis.FastInferenceHook`: channels_last, BN folded into the convolutions,
same predictions); ``--no-fast`` runs it as trained, ``--bf16`` adds bf16 autocast where the CPU
computes bf16 natively. Unlike mmseg's script it refuses a checkpoint that does not fit the
config's model (mmengine would only warn and test random weights), and it never overwrites files
of the training run in the work dir: its config dump and log go to a new ``<work_dir>/<timestamp>/``
directory. Errors in the user's input print one paragraph and exit
with status 2.
"""
import argparse
import os

from mmengine.config import DictAction

import deeplabv3_plugin.runtime  # noqa: F401  (components, safe checkpoint loader, CPU DDP)
from deeplabv3_plugin.engine import (build_runner, check_cfg_options, load_config, run_tool,
                                     setup_distributed)
from deeplabv3_plugin.engine.tool_options import (add_custom_hook, check_checkpoint_arg,
                                                  enable_fast_inference, enable_tta,
                                                  enable_visualization,
                                                  set_test_output_dir, set_test_output_stride,
                                                  set_work_dir)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a segmentor (DeepLabV3 plugin for mmseg).')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an .onnx model of '
                        'tools/export_onnx.py (fp32 or --int8), run with ONNX Runtime')
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
    parser.add_argument('--bf16', action='store_true',
                        help='bf16 autocast on top of the fast path where the CPU has native bf16 '
                        '(AVX512-BF16/AMX) or on a GPU; elsewhere it is emulated and slower, so '
                        'float32 is kept with a warning (changes numerics slightly; see the '
                        'README for its mIoU effect)')
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
    if args.checkpoint.endswith('.onnx'):
        from deeplabv3_plugin.engine.tool_options import use_onnx_model
        flags = dict(zip(('--output-stride', '--no-fast', '--bf16', '--force-bf16'), (
            args.output_stride is not None, args.no_fast, args.bf16, args.force_bf16)))
        use_onnx_model(cfg, args.checkpoint, [f for f, on in flags.items() if on])
    else:
        cfg.load_from = args.checkpoint
        add_custom_hook(cfg, dict(type='CheckpointCompatibilityHook'))
        enable_fast_inference(cfg, enabled=not args.no_fast, bf16=args.bf16,
                              force_bf16=args.force_bf16)
        set_test_output_stride(cfg, args.output_stride)
    enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    if args.tta:
        enable_tta(cfg)
    set_test_output_dir(cfg, args.out)
    setup_distributed(cfg)
    runner = build_runner(cfg, keep_work_dir_files=True)
    runner.test()


if __name__ == '__main__':
    run_tool(main)
