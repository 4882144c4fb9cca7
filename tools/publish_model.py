"""Publish a checkpoint for sharing: ``python tools/publish_model.py CKPT OUT``.

Writes ``OUT-<hash8>.safetensors`` (the weights and a JSON ``meta``: classes, palette, iteration,
versions; no optimizer or other training state, and no pickle, so loading it runs no code) and
``OUT-<hash8>.json`` (the same metadata with the file's full SHA-256). ``<hash8>`` is the first 8
hex digits of the file's SHA-256, torch.hub's convention, so a download can be checked against its
name. A ``.safetensors`` suffix on OUT is dropped. The file loads wherever a checkpoint path is
accepted: ``tools/test.py CONFIG OUT-<hash8>.safetensors``, ``load_from``, ``init_cfg``'s
``Pretrained``, ``init_model`` and ``DeepLabV3Inferencer``
(:mod:`deeplabv3_plugin.checkpoint.publish`). Errors in the input print one paragraph and exit
with status 2.
"""
import argparse

import deeplabv3_plugin.runtime  # noqa: F401  (components, safe checkpoint loader)
from deeplabv3_plugin.errors import run_tool
from deeplabv3_plugin.cli import check_checkpoint_arg
from deeplabv3_plugin.checkpoint.publish import publish_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Strip a checkpoint to its weights and metadata and write it as '
        'OUT-<sha256[:8]>.safetensors plus an OUT-<sha256[:8]>.json sidecar.')
    parser.add_argument('checkpoint', help='checkpoint to publish (e.g. work_dirs/<config '
                        'name>/iter_30000.pth)')
    parser.add_argument('out', help='output path prefix, e.g. checkpoints/deeplabv3_r101_voc '
                        '(must not contain "-<hex digits>.", which torch.hub would read as the '
                        'hash)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_checkpoint_arg(args.checkpoint)
    published = publish_model(args.checkpoint, args.out)
    print(f'{published.weights}\n{published.sidecar}')


if __name__ == '__main__':
    run_tool(main)
