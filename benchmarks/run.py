"""Speed and memory of the plugin's DeepLabV3 beside mmseg's DeepLabV3 and the machine's limit.

One process, one run: every number that is compared is measured in the same run, with the
candidates alternated round by round (so load from other processes hits them alike), after a
warm-up, as the median of several repeats. Printed as tables of ratios and written as JSON.

* Inference (batch 1, 513 x 513 by default): mmseg's DeepLabV3 run the way mmseg's tools run
  it (contiguous NCHW, fp32) against the plugin's DeepLabV3 through its default fast path
  (channels_last + BN folded, fp32) and with bf16 autocast, at each depth and output stride;
  their FLOPs, achieved GFLOP/s, and the GFLOP/s of a same-run 2048^2 matmul (the machine's
  reference); peak memory of one forward.
* Accuracy (``--accuracy``): mIoU of a trained model through the plain, fast fp32 and fast
  bf16 paths (``benchmarks/bf16_accuracy.py``), since bf16 changes numerics.
* Training (forward, backward, SGD step through mmengine's ``train_step``): the same two models
  at a stated crop and batch, the plugin also with gradient checkpointing at OS 8; GFLOP/s and
  peak memory, each configuration's memory measured in a fresh process
  (``benchmarks/train_memory.py``) so that peaks do not mix.

Usage::

    python benchmarks/run.py --quick        # R-50 only, small training crop: a few minutes
    python benchmarks/run.py                # R-50 and R-101, OS 16 and 8, training at 321
    python benchmarks/run.py --full         # + the paper's 513 training crop, R-101 training
    python benchmarks/run.py --accuracy CONFIG CHECKPOINT   # + mIoU of fp32 vs bf16 inference
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch
from mmseg.structures import SegDataSample

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.bf16_accuracy import measure_accuracy  # noqa: E402
from benchmarks.measure import (PeakMemory, count_flops, matmul_reference,  # noqa: E402
                                median, time_alternating)
from benchmarks.models import build_model, inference_batch, training_batch  # noqa: E402
from benchmarks.report import format_report  # noqa: E402
from deeplabv3_plugin.apis import FastInferenceModel, cpu_supports_bf16  # noqa: E402

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

VARIANT_HELP = {
    'mmseg': "mmseg's DeepLabV3, fp32 contiguous NCHW (as mmseg's tools run it)",
    'mmseg-fast': "mmseg's DeepLabV3 through this plugin's fast path (channels_last + BN folded)",
    'plugin-plain': 'plugin DeepLabV3, fp32 contiguous NCHW, BN not folded',
    'plugin': 'plugin DeepLabV3, default fast path: fp32 channels_last + BN folded',
    'plugin-bf16': 'plugin DeepLabV3, fast path + bf16 autocast',
    'plugin-compile': 'plugin DeepLabV3, fast path + torch.compile (inductor, frozen weights)',
    'plugin-bf16-compile': 'plugin DeepLabV3, fast path + bf16 autocast + torch.compile',
    'plugin-cp': 'plugin DeepLabV3 training with gradient checkpointing (backbone with_cp=True)',
    'plugin-cl': 'plugin DeepLabV3 training in channels_last',
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
                        choices=('inference', 'training', 'memory', 'bf16'),
                        help='parts to leave out (memory: the training-memory subprocesses)')
    parser.add_argument('--compile', action='store_true',
                        help='also time the plugin fast path with torch.compile (fp32, and bf16 '
                        'unless skipped); the first call, which compiles, is reported apart')
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


def machine_info(args: argparse.Namespace, device: torch.device) -> dict:
    """What the numbers were measured on."""
    import mmcv
    import mmengine
    import mmseg
    cpu, flags = platform.processor(), set()
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                elif line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags]
    info = dict(
        cpu=cpu, cpu_flags=isa, cpu_count=os.cpu_count(), threads=args.threads,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        bf16_native=cpu_supports_bf16(), python=platform.python_version(),
        torch=torch.__version__, mmcv=mmcv.__version__, mmengine=mmengine.__version__,
        mmseg=mmseg.__version__, device=str(device))
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


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
        if args.compile:
            for name, bf16 in (('plugin-compile', False), ('plugin-bf16-compile', True)):
                if bf16 and not use_bf16:
                    continue
                model = FastInferenceModel(plugin_model, bf16=bf16, compile=True)
                calls[name] = (lambda m=model: m.test_step(_fresh_batch(image, args.size)))
                started = time.perf_counter()
                calls[name]()
                compile_s[name] = time.perf_counter() - started
                models[name] = model
    calls['matmul-fp32'] = matmul_reference(device, torch.float32)
    if use_bf16:
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
    return dict(depth=depth, output_stride=output_stride, size=args.size, variants=results)


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
    if args.all_variants:
        builds['plugin-cl'] = dict(impl='plugin')
    batch = training_batch(crop, args.train_batch_size, device)
    calls = {}
    for name, build in builds.items():
        model = build_model(build['impl'], depth, output_stride, device,
                            with_cp=build.get('with_cp', False), crop=crop).train()
        if name == 'plugin-cl':
            model.to(memory_format=torch.channels_last)
        optim_wrapper = build_optim_wrapper(model)
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
    use_bf16 = 'bf16' not in args.skip and (device.type == 'cuda' or cpu_supports_bf16())
    started = time.time()
    results = dict(machine=machine_info(args, device), settings=vars(args),
                   variants=VARIANT_HELP, inference=[], training=[],
                   load_average_before=os.getloadavg()[0])
    if args.accuracy:
        # First: a missing dataset or checkpoint should stop the run before the long timings.
        print('accuracy of the inference paths ...', flush=True)
        results['accuracy'] = measure_accuracy(*args.accuracy, args.accuracy_data_root)
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
    print(format_report(results))
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as out:
            json.dump(results, out, indent=1)
        print(f'results written to {args.json}')
    return results


if __name__ == '__main__':
    main()
