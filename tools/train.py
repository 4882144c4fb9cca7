"""Train a segmentor from a config: ``python tools/train.py CONFIG [options]``.

The flags are those of mmseg's ``tools/train.py``; what the plugin adds happens in
:mod:`deeplabv3_plugin.engine`: checked ``--cfg-options`` keys, ``--resume [CKPT]`` that refuses a
checkpoint of another model, the config's total batch kept on any number of processes
(``train_dataloader.batch_size`` / N each, unless ``batch_size_per_process=True``), and
distributed runs on CPUs (``bash tools/dist_train.sh CONFIG N`` with gloo). Errors in the user's
input print one paragraph and exit with status 2.
"""
import argparse
import os

from mmengine.config import DictAction

import deeplabv3_plugin.runtime  # noqa: F401  (components, safe checkpoint loader, CPU DDP)
from deeplabv3_plugin.config_checks import check_cfg_options, load_config
from deeplabv3_plugin.engine import (build_runner, keep_total_batch, launcher_world_size,
                                     setup_distributed)
from deeplabv3_plugin.errors import run_tool
from deeplabv3_plugin.cli import add_custom_hook, enable_amp, set_resume, set_work_dir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor (DeepLabV3 plugin for mmseg).')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: the '
                        "config's work_dir, else ./work_dirs/<config name>)")
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CKPT',
        help='continue an interrupted run: alone, from the latest checkpoint in the work dir; '
        'with CKPT, from that checkpoint. Optimizer, LR schedule and iteration count are restored')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: float16 + loss scaling on a GPU, bf16 autocast on a '
                        'CPU with native bf16 (AVX512-BF16/AMX); refused on other CPUs, where '
                        'bf16 is emulated and slower')
    parser.add_argument('--force-bf16', action='store_true',
                        help='--amp in bf16 even on a CPU that emulates it (slower; for testing)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. model.backbone.depth=101 '
        'train_dataloader.batch_size=8 (lists: key="[a,b]"). Keys must exist, except new leaf '
        'keys that are not near-copies of existing ones. train_dataloader.batch_size is the '
        'total over all processes unless batch_size_per_process=True')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch: torchrun / tools/dist_train.sh)')
    # torch.distributed.launch (used by mim) passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config)
    check_cfg_options(cfg, args.cfg_options, args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    keep_total_batch(cfg, launcher_world_size(args.launcher, os.environ))
    add_custom_hook(cfg, dict(type='TrainingBatchHook'))
    set_work_dir(cfg, args.work_dir, args.config)
    if args.amp or args.force_bf16:
        enable_amp(cfg, force_bf16=args.force_bf16)
    set_resume(cfg, args.resume)
    setup_distributed(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    run_tool(main)
