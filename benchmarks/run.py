"""Speed and memory of the plugin's DeepLabV3 beside mmseg's DeepLabV3 and the machine's limit.

One process, one run: every number that is compared is measured in the same run, with the
candidates alternated round by round (so load from other processes hits them alike), after a
warm-up, as the median of several repeats. Printed as tables of ratios and written as JSON.

The output starts with the CPU, its bf16/VNNI flags and the load average.

* Inference (batch 1, 513 x 513 by default): mmseg's DeepLabV3 as mmseg's tools run it against
  the plugin's fast path in fp32 and bf16 (emulated on CPUs without native bf16) and its ONNX
  export in fp32 and int8 (``benchmarks/int8.py``, with a per-operator profile), at each depth
  and output stride; FLOPs, GFLOP/s, a same-run 2048^2 matmul's GFLOP/s, peak memory.
* Accuracy (``--accuracy``): mIoU of a trained model through the plain, fast fp32 and bf16
  paths and in int8 (``bf16_accuracy.py``, ``int8_accuracy.py``).
* Training (forward, backward, SGD step through mmengine's ``train_step``): the same two models
  at a stated crop and batch, the plugin also with gradient checkpointing at OS 8; GFLOP/s and
  peak memory, each configuration's memory measured in a fresh process
  (``benchmarks/train_memory.py``) so that peaks do not mix.

Usage::

    python benchmarks/run.py --quick        # R-50 only, small training crop: a few minutes
    python benchmarks/run.py                # R-50 and R-101, OS 16 and 8, training at 321
    python benchmarks/run.py --full         # + the paper's 513 training crop, R-101 training
    python benchmarks/run.py --accuracy CONFIG CHECKPOINT   # + mIoU of fp32, bf16, int8
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch
from mmseg.structures import SegDataSample

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.bf16_accuracy import measure_accuracy  # noqa: E402
from benchmarks.int8 import onnx_variants, profile_by_op  # noqa: E402
from benchmarks.int8_accuracy import measure_int8_accuracy  # noqa: E402
from benchmarks.measure import (PeakMemory, count_flops, matmul_reference,  # noqa: E402
                                median, time_alternating)
from benchmarks.models import build_model, inference_batch, training_batch  # noqa: E402
from benchmarks.report import VARIANT_HELP, format_report, machine_info  # noqa: E402
from deeplabv3_plugin.deploy.fast_inference import FastInferenceModel  # noqa: E402
from deeplabv3_plugin.cpu_features import cpu_features  # noqa: E402

HERE = osp.dirname(osp.abspath(__file__))

#: Option presets; explicit command-line values override them.
PRESETS = {
    'quick': dict(depths=[50], output_strides=[16, 8], train_depths=[50],
                  train_output_strides=[16, 8], train_crop=193, repeats=3, train_repeats=2),
    'default': dict(depths=[50, 101], output_strides=[16, 8], train_depths=[50],
                    train_output_strides=[16, 8], train_crop=321, repeats=3, train_repeats=3),
    'full': dict(depths=[50, 101], output_strides=[16, 8], train_depths=[50, 101],
                 train_output_strides=[16, 8], train_crop=513, repeats=5, train_repeats=3),
}



def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument('--quick', action='store_true', help='R-50 only, training crop 193')
    preset.add_argument('--full', action='store_true',
                        help='training at the paper crop 513 and with R-101 too, 5 repeats')
    parser.add_argument('--depths', type=int, nargs='+', choices=(50, 101))
    parser.add_argument('--output-strides', type=int, nargs='+', choices=(8, 16))
    parser.add_argument('--size', type=int, default=513, help='inference image size')
    parser.add_argument('--train-depths', type=int, nargs='+', choices=(50, 101))
    parser.add_argument('--train-output-strides', type=int, nargs='+', choices=(8, 16))
    parser.add_argument('--train-crop', type=int, help='training crop size')
    parser.add_argument('--train-batch-size', type=int, default=2,
                        help='images per training step (>= 2: BN needs 2 values per channel)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds')
    parser.add_argument('--repeats', type=int, help='timed inference rounds')
    parser.add_argument('--train-repeats', type=int, help='timed training rounds')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='torch threads (default: %(default)s, torch\'s own choice)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--skip', nargs='+', default=[],
                        choices=('inference', 'training', 'memory', 'bf16', 'int8', 'compile'),
                        help='parts to leave out (memory: the training-memory subprocesses; '
                        'int8: the ONNX Runtime and OpenVINO rows, whose export takes a minute '
                        'per model; compile: the torch.compile rows, whose first call compiles '
                        'for about a minute)')
    parser.add_argument('--all-variants', action='store_true',
                        help='also time plugin-plain, mmseg-fast and plugin-cl (channels_last '
                        'training)')
    parser.add_argument('--accuracy', nargs=2, metavar=('CONFIG', 'CHECKPOINT'),
                        help='also test a trained model through the plain, fast fp32 and fast '
                        'bf16 paths (mIoU effect of bf16; e.g. the demo config and checkpoint)')
    parser.add_argument('--accuracy-data-root', help="overrides the --accuracy test dataset's "
                        'data_root')
    parser.add_argument('--json', default=osp.join('work_dirs', 'benchmark', 'results.json'),
                        help='where to write the results (default: %(default)s)')
    args = parser.parse_args(argv)
    values = PRESETS['quick' if args.quick else 'full' if args.full else 'default']
    for key, value in values.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.train_batch_size < 2:
        parser.error(f'--train-batch-size {args.train_batch_size}: use >= 2, mmseg\'s ASPP '
                     'image-pooling BN cannot train on one value per channel')
    if args.warmup < 1 or args.repeats < 1 or args.train_repeats < 1:
        parser.error('--warmup, --repeats and --train-repeats must be >= 1')
    return args


def _fresh_batch(image: List[torch.Tensor], size: int) -> dict:
    """A packed test batch around ``image``; test_step writes its results into the samples."""
    shape = (size, size)
    return dict(inputs=image,
                data_samples=[SegDataSample(
                    metainfo=dict(ori_shape=shape, img_shape=shape, pad_shape=shape))])


def bench_inference(depth: int, output_stride: int, args: argparse.Namespace,
                    device: torch.device, use_bf16: bool) -> dict:
    """Time, count and measure every inference variant of one (depth, OS)."""
    mmseg_model = build_model('mmseg', depth, output_stride, device, test_size=args.size)
    plugin_model = build_model('plugin', depth, output_stride, device, test_size=args.size)
    models: Dict[str, torch.nn.Module] = {
        'mmseg': mmseg_model,
        'plugin': FastInferenceModel(plugin_model),
    }
    if use_bf16:
        models['plugin-bf16'] = FastInferenceModel(plugin_model, bf16=True)
    if args.all_variants:
        models['plugin-plain'] = plugin_model
        models['mmseg-fast'] = FastInferenceModel(mmseg_model)
    image = inference_batch(args.size, device)['inputs']
    calls = {name: (lambda m=model: m.test_step(_fresh_batch(image, args.size)))
             for name, model in models.items()}
    with torch.no_grad():
        # FLOPs depend on the architecture, not on the path: count each model once, eagerly.
        flops = {name: count_flops(calls[name]) for name in ('mmseg', 'plugin')}
        compile_s = {}
        if 'compile' not in args.skip:
            for name, bf16 in (('plugin-compile', False), ('plugin-bf16-compile', True)):
                if bf16 and not (use_bf16 and cpu_features().native_bf16):
                    continue  # emulated bf16: the eager row already shows its cost
                model = FastInferenceModel(plugin_model, bf16=bf16, compile=True)
                calls[name] = (lambda m=model: m.test_step(_fresh_batch(image, args.size)))
                started = time.perf_counter()
                calls[name]()
                compile_s[name] = time.perf_counter() - started
                models[name] = model
    int8 = None
    if 'int8' not in args.skip and device.type == 'cpu':
        onnx_calls, int8 = onnx_variants(plugin_model, image[0], args.threads, args.work_dir,
                                         lambda: _fresh_batch(image, args.size))
        calls.update(onnx_calls)
        models.update({name: None for name in onnx_calls})
    calls['matmul-fp32'] = matmul_reference(device, torch.float32)
    if use_bf16 and (device.type != 'cpu' or cpu_features().native_bf16):
        calls['matmul-bf16'] = matmul_reference(device, torch.bfloat16)
    with torch.no_grad():
        times = time_alternating(calls, device, args.warmup, args.repeats)
        for name in models:
            flops.setdefault(name, flops['mmseg' if name.startswith('mmseg') else 'plugin'])
        flops['matmul-fp32'] = flops['matmul-bf16'] = 2 * 2048**3
        memory = {}
        for name in models:
            with PeakMemory(device) as peak:
                calls[name]()
            memory[name] = peak.delta_mb
    results = {}
    for name, seconds in times.items():
        med = median(seconds)
        results[name] = dict(
            median_s=med, times_s=seconds, images_per_s=1.0 / med, gflop=flops[name] / 1e9,
            gflops=flops[name] / 1e9 / med, peak_delta_mb=memory.get(name))
        if name in compile_s:
            results[name]['first_call_s'] = compile_s[name]
    group = dict(depth=depth, output_stride=output_stride, size=args.size, variants=results)
    if int8 is not None:
        group['int8_ops'] = int8['int8_ops']
        group['int8_profile'] = profile_by_op(int8['files']['onnx-int8'], int8['raw'],
                                              args.threads)
    return group


def bench_training_memory(name: str, depth: int, output_stride: int,
                          args: argparse.Namespace) -> dict:
    """Run ``train_memory.py`` for one configuration in a fresh process."""
    command = [
        sys.executable, osp.join(HERE, 'train_memory.py'), '--impl',
        'mmseg' if name == 'mmseg' else 'plugin', '--depth', str(depth), '--output-stride',
        str(output_stride), '--crop', str(args.train_crop), '--batch-size',
        str(args.train_batch_size), '--threads', str(args.threads), '--device', args.device
    ]
    if name == 'plugin-cp':
        command.append('--with-cp')
    if name == 'plugin-cl':
        command.append('--channels-last')
    if name == 'plugin-amp':
        command.append('--amp')
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return dict(error=done.stderr.strip().splitlines()[-1] if done.stderr else 'failed')
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_training(depth: int, output_stride: int, args: argparse.Namespace,
                   device: torch.device) -> dict:
    """Time and count one training step of each variant; memory in subprocesses."""
    from benchmarks.train_memory import build_optim_wrapper
    crop = args.train_crop
    builds = {
        'mmseg': dict(impl='mmseg'),
        'plugin': dict(impl='plugin'),
    }
    if output_stride <= 8:
        builds['plugin-cp'] = dict(impl='plugin', with_cp=True)
    if 'bf16' not in args.skip and device.type == 'cpu':
        builds['plugin-amp'] = dict(impl='plugin', amp=True)
    if args.all_variants:
        builds['plugin-cl'] = dict(impl='plugin')
    batch = training_batch(crop, args.train_batch_size, device)
    calls = {}
    for name, build in builds.items():
        model = build_model(build['impl'], depth, output_stride, device,
                            with_cp=build.get('with_cp', False), crop=crop).train()
        if name == 'plugin-cl':
            model.to(memory_format=torch.channels_last)
        optim_wrapper = build_optim_wrapper(model, amp=build.get('amp', False))
        calls[name] = (lambda m=model, o=optim_wrapper: m.train_step(batch, o))
    times = time_alternating(calls, device, args.warmup, args.train_repeats)
    flops = {name: count_flops(call) for name, call in calls.items()}
    del calls
    results = {}
    for name, seconds in times.items():
        med = median(seconds)
        results[name] = dict(median_s=med, times_s=seconds, gflop=flops[name] / 1e9,
                             gflops=flops[name] / 1e9 / med)
        if 'memory' not in args.skip:
            results[name].update(bench_training_memory(name, depth, output_stride, args))
    return dict(depth=depth, output_stride=output_stride, crop=crop,
                batch_size=args.train_batch_size, variants=results)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # bf16 is measured on every CPU: where it is emulated, its row shows what --bf16 would cost.
    use_bf16 = 'bf16' not in args.skip
    started = time.time()
    args.work_dir = tempfile.mkdtemp(prefix='deeplabv3_benchmark_')
    results = dict(machine=machine_info(args, device), settings=vars(args),
                   variants=VARIANT_HELP, inference=[], training=[],
                   load_average_before=os.getloadavg()[0])
    print(f"CPU: {results['machine']['cpu_summary']}; {args.threads} threads; 1-minute load "
          f"average {results['load_average_before']:.2f}", flush=True)
    if args.accuracy:
        # First: a missing dataset or checkpoint should stop the run before the long timings.
        print('accuracy of the inference paths ...', flush=True)
        results['accuracy'] = measure_accuracy(*args.accuracy, args.accuracy_data_root)
        if 'int8' not in args.skip:
            results['int8_accuracy'] = measure_int8_accuracy(*args.accuracy,
                                                             args.accuracy_data_root)
    if 'inference' not in args.skip:
        for depth in args.depths:
            for output_stride in args.output_strides:
                print(f'inference R-{depth} OS {output_stride} ...', flush=True)
                results['inference'].append(
                    bench_inference(depth, output_stride, args, device, use_bf16))
    if 'training' not in args.skip:
        for depth in args.train_depths:
            for output_stride in args.train_output_strides:
                print(f'training R-{depth} OS {output_stride} ...', flush=True)
                results['training'].append(bench_training(depth, output_stride, args, device))
    results['seconds'] = time.time() - started
    results['load_average_after'] = os.getloadavg()[0]
    print(format_report(results))
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as out:
            json.dump(results, out, indent=1)
        print(f'results written to {args.json}')
    return results


if __name__ == '__main__':
    main()
