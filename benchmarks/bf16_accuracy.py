"""mIoU of a trained model through the plain, the fast fp32 and the fast bf16 inference paths.

bf16 changes numerics (8-bit mantissa in the convolutions), so its effect is measured on real
predictions of a trained model, not assumed: the same ``Runner`` tests the checkpoint three times
(mmengine's test loop and ``IoUMetric``, as ``tools/test.py`` does), once per path, and the
predicted label maps are compared pixel by pixel::

    python benchmarks/bf16_accuracy.py \
        configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py \
        work_dirs/demo/<run>/iter_1000.pth --data-root data/synthetic_shapes/<parameters>

``run.py --accuracy CONFIG CHECKPOINT`` runs the same and adds it to the benchmark's report.
"""
import argparse
import json
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from deeplabv3_plugin.engine.hooks import FastInferenceHook  # noqa: E402

#: The inference paths compared, as FastInferenceHook arguments (None: the plain model).
PATHS = {
    'plain fp32': None,
    'fast fp32': dict(channels_last=True, fuse_bn=True, bf16=False),
    'fast bf16': dict(channels_last=True, fuse_bn=True, bf16=True),
}


class _CollectPredictions(Hook):
    """Keeps every predicted label map of a test run."""

    def __init__(self) -> None:
        self.labels: List[torch.Tensor] = []

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.labels += [sample.pred_sem_seg.data.cpu() for sample in outputs]


def measure_accuracy(config: str, checkpoint: str, data_root: Optional[str] = None,
                     work_dir: Optional[str] = None) -> Dict[str, dict]:
    """Test ``checkpoint`` through every path of :data:`PATHS`.

    Args:
        config (str): The model's config file.
        checkpoint (str): Trained weights.
        data_root (str, optional): Overrides the test dataset's ``data_root``.
        work_dir (str, optional): Runner work directory (default: a temporary one).

    Returns:
        dict[str, dict]: Per path the test metrics (``mIoU``, ``aAcc``, ``mAcc``) and
        ``agreement``, the fraction of pixels whose label equals the plain path's.
    """
    for name, path in (('config', config), ('checkpoint', checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'bf16_accuracy: {name} file {path!r} does not exist')
    cfg = Config.fromfile(config)
    cfg.load_from = checkpoint
    cfg.work_dir = work_dir or tempfile.mkdtemp(prefix='bf16_accuracy_')
    if data_root is not None:
        cfg.test_dataloader.dataset.data_root = data_root
    runner = Runner.from_cfg(cfg)
    collector = _CollectPredictions()
    fast = FastInferenceHook(loops=())  # reconfigured per path below
    runner.register_hook(collector)
    runner.register_hook(fast)
    results, reference = {}, None
    for name, options in PATHS.items():
        fast.loops = () if options is None else ('test', )
        for key, value in (options or {}).items():
            setattr(fast, key, value)
        collector.labels = []
        metrics = runner.test()
        labels = collector.labels
        reference = labels if reference is None else reference
        same = sum(int((a == b).sum()) for a, b in zip(labels, reference))
        total = sum(a.numel() for a in reference)
        results[name] = dict({key: float(value) for key, value in metrics.items()},
                             agreement=same / total)
    return results


def format_accuracy(results: Dict[str, dict]) -> str:
    base = results['fast fp32']['mIoU']
    lines = ['path       | mIoU  | aAcc  | mIoU - fast fp32 | pixels equal to the first row',
             '-----------|-------|-------|------------------|------------------------------']
    for name, r in results.items():
        lines.append(f"{name:<10} | {r['mIoU']:5.2f} | {r['aAcc']:5.2f} | "
                     f"{r['mIoU'] - base:+16.2f} | {100 * r['agreement']:.3f} %")
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--data-root', help="overrides the test dataset's data_root")
    parser.add_argument('--work-dir')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    results = measure_accuracy(args.config, args.checkpoint, args.data_root, args.work_dir)
    print(format_accuracy(results))
    if args.json:
        with open(args.json, 'w') as out:
            json.dump(results, out, indent=1)


if __name__ == '__main__':
    main()
