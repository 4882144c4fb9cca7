"""mIoU of a trained model in float32 and in int8 (ONNX Runtime), on its test set and a second one.

int8 changes numerics more than bf16 (8-bit activations, calibrated ranges), so its effect is
measured through the same ``Runner``, dataset and ``IoUMetric`` as ``tools/test.py``: the
checkpoint through the fast float32 path, then its ONNX export in float32 and int8
(calibrated as ``tools/test.py --precision int8`` does: images spread over the training split) as
``ExportedSegmentor`` (what ``tools/test.py CONFIG model.onnx`` runs). For a SyntheticShapes
model the benchmark also generates a second set (another seed, never seen in training or
calibration) and scores it there::

    python benchmarks/int8_accuracy.py CONFIG CHECKPOINT [--data-root DIR]

``run.py --accuracy CONFIG CHECKPOINT`` runs it too, beside the bf16 comparison.
"""
import argparse
import copy
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional

from mmengine.config import Config
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.bf16_accuracy import _CollectPredictions, format_accuracy  # noqa: E402
from deeplabv3_plugin.deploy.fast_inference import fuse_conv_bn  # noqa: E402
from deeplabv3_plugin.apis.inference import build_segmentor  # noqa: E402
from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes  # noqa: E402
from deeplabv3_plugin.cli import use_exported_model  # noqa: E402
from deeplabv3_plugin.deploy.export import export_onnx  # noqa: E402
from deeplabv3_plugin.deploy.artifacts import calibration_files  # noqa: E402
from deeplabv3_plugin.deploy.int8 import CALIBRATION_IMAGES, quantize_int8  # noqa: E402

SECOND_SET_IMAGES = 80


def _test(cfg: Config, model: str, name: str, work_dir: str) -> tuple:
    """mIoU (etc.) and label maps of ``model`` (checkpoint or .onnx) on cfg's test set."""
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = osp.join(work_dir, name)
    cfg.experiment_name = name
    cfg.visualizer.name = f'visualizer_{name}'
    if model.endswith('.onnx'):
        use_exported_model(cfg, model)
    else:
        cfg.load_from = model
        cfg.custom_hooks = [dict(type='FastInferenceHook')]
    runner = Runner.from_cfg(cfg)
    collector = _CollectPredictions()
    runner.register_hook(collector)
    metrics = runner.test()
    return {key: float(value) for key, value in metrics.items()}, collector.labels


def measure_int8_accuracy(config: str, checkpoint: str, data_root: Optional[str] = None,
                          work_dir: Optional[str] = None) -> Dict[str, Dict[str, dict]]:
    """Per test set, the metrics of ``fast fp32``, ``onnx fp32`` and ``onnx int8``, and the
    fraction of their pixels equal to ``fast fp32``'s (``agreement``)."""
    cfg = Config.fromfile(config)
    if data_root is not None:
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.data_root = data_root
    work_dir = work_dir or tempfile.mkdtemp(prefix='int8_accuracy_')
    files = {name: osp.join(work_dir, f'{name}.onnx') for name in ('fp32', 'int8')}
    model = build_segmentor(cfg, checkpoint)
    fuse_conv_bn(model)
    export_onnx(model, files['fp32'])
    # calibrated as the tools calibrate (--precision int8): images spread over the training split
    quantize_int8(files['fp32'], files['int8'], calibration_files(cfg, CALIBRATION_IMAGES))
    test_sets = {f'test set ({cfg.test_dataloader.dataset.data_root})': None}
    if cfg.test_dataloader.dataset.type == 'SyntheticShapesDataset':
        second = osp.join(work_dir, 'second_set')
        generate_synthetic_shapes(second, num_train=1, num_val=SECOND_SET_IMAGES,
                                  image_size=tuple(cfg.crop_size), seed=1, progress=False)
        test_sets[f'generated set (seed 1, {SECOND_SET_IMAGES} images)'] = second
    results = {}
    for index, (where, root) in enumerate(test_sets.items()):
        set_cfg = copy.deepcopy(cfg)
        if root is not None:
            set_cfg.test_dataloader.dataset.data_root = root
        scores, reference = {}, None
        for name, model_file in (('fast fp32', checkpoint), ('onnx fp32', files['fp32']),
                                 ('onnx int8', files['int8'])):
            metrics, labels = _test(set_cfg, model_file, f'{index}_{name.replace(" ", "_")}',
                                    work_dir)
            reference = labels if reference is None else reference
            same = sum(int((a == b).sum()) for a, b in zip(labels, reference))
            scores[name] = dict(metrics, agreement=same / sum(a.numel() for a in reference))
        results[where] = scores
    return results


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--data-root', help="overrides the dataset's data_root")
    args = parser.parse_args(argv)
    for where, scores in measure_int8_accuracy(args.config, args.checkpoint,
                                               args.data_root).items():
        print(f'{where}:\n{format_accuracy(scores)}\n')


if __name__ == '__main__':
    main()
