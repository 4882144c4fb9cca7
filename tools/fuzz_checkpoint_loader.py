"""Fuzz of the safe checkpoint loader: ``python tools/fuzz_checkpoint_loader.py``.

Two kinds of cases, written as zip, legacy and raw-pickle files:

* ``mutate``: a real mmengine checkpoint (``--checkpoint``, or one a tiny ``Runner`` writes) with
  its pickle mutated at random (byte flips, inserts, deletions, duplicated spans, opcodes swapped,
  and calls of ``os.system('touch MARKER')`` spliced in at opcode boundaries);
* ``opcodes``: pickles of random opcodes drawn from *all* of pickle's opcodes (``DICT``,
  ``FROZENSET``, ``MEMOIZE``, ``DUP``, memo reads and writes included) with random arguments.

Each file is loaded in a child process through mmengine's ``CheckpointLoader`` with
``deeplabv3_plugin.runtime`` imported. Every case must load or raise the plugin's
``CheckpointError``/``UnsafeCheckpointError``: a child killed by a signal, another exception
type or a marker file is a failure (exit status 1). A file the plugin loads is loaded again with
torch's weights-only unpickler and the same stand-ins, and every tensor must be bitwise equal
(``differential`` counts). The summary (counts per outcome, the slowest load, the largest peak
RSS above the child's baseline, the failing files) is printed and, with ``--out``, written as JSON.
"""
import argparse
import json
import os
import os.path as osp
import pickle
import pickletools
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile

MUTATIONS = ('flip', 'insert', 'delete', 'duplicate', 'opcode', 'call')
OPCODES = [op.code.encode('latin1') for op in pickletools.opcodes]
GLOBALS = ('collections OrderedDict', 'collections Counter', 'torch FloatStorage',
           'torch._utils _rebuild_tensor_v2', 'builtins set', 'builtins frozenset',
           'numpy dtype', 'numpy._core.multiarray _reconstruct', 'numpy ndarray',
           'mmengine.logging.history_buffer HistoryBuffer', 'builtins getattr', '_codecs encode',
           'os system', 'builtins eval', 'torch Size')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cases', type=int, default=2000, help='number of mutants (default 2000)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--mode', choices=('mutate', 'opcodes', 'both'), default='both',
                        help='mutants of a real checkpoint, random opcodes, or half of each')
    parser.add_argument('--checkpoint', help='an mmengine checkpoint (zip) to mutate (default: '
                        'one written by a 2-iteration Runner)')
    parser.add_argument('--work-dir', help='where the mutants are written (default: a temp dir, '
                        'removed afterwards unless something failed)')
    parser.add_argument('--batch', type=int, default=250, help='files per child process')
    parser.add_argument('--out', help='write the summary as JSON here')
    parser.add_argument('--child', nargs='*', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _tensors(obj, seen=None):
    """The tensors in ``obj``, in a fixed order (dict items, list and tuple items)."""
    import torch
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) \
        else ()
    return [t for item in items for t in _tensors(item, seen)]


def _bitwise_equal(ours, theirs) -> bool:
    import torch

    def raw(t):
        return t.detach().contiguous().reshape(-1).view(torch.uint8)
    a, b = _tensors(ours), _tensors(theirs)
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.stride() == y.stride()
        and torch.equal(raw(x), raw(y)) for x, y in zip(a, b))


def _torch_load(path):
    """torch's weights-only load with the plugin's stand-ins, and no scan (files the plugin
    accepted, so the scan's bounds hold)."""
    import torch

    from deeplabv3_plugin.checkpoint.safe_globals import torch_safe_globals
    with torch.serialization.safe_globals(torch_safe_globals()):
        return torch.load(path, map_location='cpu', weights_only=True)


def child(paths) -> None:
    """Load each path; one JSON line before (``start``) and after each load, with its time and
    its peak RSS above the RSS before it (the peak is reset per file)."""
    import time

    from mmengine.runner.checkpoint import CheckpointLoader

    import deeplabv3_plugin.runtime  # noqa: F401  (the safe loader)
    for path in paths:
        print(json.dumps(dict(start=path)), flush=True)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets the peak RSS (VmHWM) to the current RSS
        base, start = _rss_kib('VmRSS:'), time.perf_counter()
        same = None
        try:
            loaded = CheckpointLoader.load_checkpoint(path, map_location='cpu')
            outcome, message = 'loaded', ''
        except Exception as err:  # classified by the parent
            outcome, message = type(err).__name__, str(err)
        seconds, rss = time.perf_counter() - start, (_rss_kib('VmHWM:') - base) / 1024
        if outcome == 'loaded':
            try:
                same = _bitwise_equal(loaded, _torch_load(path))
            except Exception as err:  # torch refused what the plugin loaded
                same = f'torch refused: {type(err).__name__}'
            loaded = None
        print(json.dumps(dict(file=path, outcome=outcome, message=message, seconds=seconds,
                              rss_mib=rss, size=os.path.getsize(path), same=same)), flush=True)


def real_checkpoint(work_dir: str) -> str:
    """A checkpoint written by a real mmengine Runner (message hub, optimizer, meta)."""
    import torch
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Linear(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x, y, mode='tensor'):
            out = self.fc(torch.stack(x)).squeeze(-1)
            return dict(loss=((out - torch.as_tensor(y)) ** 2).mean()) if mode == 'loss' else out

    data = [dict(x=torch.full((2, ), float(i)), y=float(i)) for i in range(4)]
    runner = Runner(model=Linear(), work_dir=work_dir, train_dataloader=dict(
        dataset=data, batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)))
    runner.train()
    return osp.join(work_dir, 'iter_2.pth')


def split_legacy(data: bytes):
    """(header, main pickle, trailer) of a legacy-format file: the 4th pickle is the data."""
    ends, pos = [], 0
    for _ in range(4):
        for op, _, offset in pickletools.genops(data[pos:]):
            if op.name == 'STOP':
                pos += offset + 1
                break
        ends.append(pos)
    return data[:ends[2]], data[ends[2]:ends[3]], data[ends[3]:]


def boundaries(data: bytes):
    try:
        return [pos for _, _, pos in pickletools.genops(data)]
    except Exception:  # an already broken pickle: any offset will do
        return list(range(len(data)))


def mutate(data: bytes, rng: random.Random, marker: str) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind, at = rng.choice(MUTATIONS), rng.randrange(len(data))
        if kind == 'flip':
            data[at] = rng.randrange(256)
        elif kind == 'insert':
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 'delete':
            del data[at:at + rng.randint(1, 16)]
        elif kind == 'duplicate':
            data[at:at] = data[at:at + rng.randint(1, 64)]
        else:
            at = rng.choice(boundaries(bytes(data)))
            if kind == 'opcode':
                data[at:at + 1] = rng.choice(OPCODES)
            else:
                call = pickle.dumps(marker, 2)[2:-1]  # the argument, without PROTO and STOP
                data[at:at] = b'cos\nsystem\n(' + call + b'tR'
        if not data:
            data = bytearray(b'.')
    return bytes(data)


def _random_arg(op, rng: random.Random, marker: str) -> bytes:
    """An argument for ``op``, in its encoding: mostly small and valid, sometimes not."""
    import struct
    name = op.arg.name if op.arg else ''
    n = rng.choice((0, 1, 2, 3, 7, 255, 1000))
    text = rng.choice(('storage', '_metadata', 'cpu', '0', marker, 'x' * n))
    if name == 'stringnl_noescape_pair':
        return (rng.choice(GLOBALS).replace(' ', '\n') + '\n').encode()
    if name in ('uint1', 'bytes1', 'string1', 'unicodestring1', 'long1'):
        data = text.encode()[:255] if name != 'uint1' else b''
        return bytes([rng.randrange(8) if name == 'uint1' else len(data)]) + data
    if name == 'uint2':
        return struct.pack('<H', rng.randrange(2**16))
    if name in ('int4', 'uint4', 'string4', 'bytes4', 'unicodestring4', 'long4'):
        if name in ('int4', 'uint4'):
            return struct.pack('<I', rng.choice((0, 1, 2, 5, 2**31 - 1)))
        data = text.encode()
        return struct.pack('<I', len(data) + rng.choice((0, 0, 0, 5))) + data
    if name in ('uint8', 'bytes8', 'unicodestring8', 'bytearray8'):
        data = b'' if name == 'uint8' else text.encode()
        return struct.pack('<Q', len(data) if data else rng.randrange(8)) + data
    if name == 'float8':
        return struct.pack('>d', rng.random())
    if name:  # the text forms: a line
        return rng.choice((b'1', b'0.5', b"'s'", b'S', b'1L')) + b'\n'
    return b''


def random_pickle(rng: random.Random, marker: str) -> bytes:
    """PROTO 2, then random opcodes of every kind with random arguments, then STOP."""
    ops = [op for op in pickletools.opcodes if op.name not in ('STOP', 'PROTO')]
    data = bytearray(b'\x80\x02')
    for _ in range(rng.randint(1, 40)):
        op = rng.choice(ops)
        data += op.code.encode('latin1') + _random_arg(op, rng, marker)
    return bytes(data + b'.')


def write_mutants(source: str, work_dir: str, cases: int, seed: int, marker: str,
                  mode: str = 'both'):
    import torch
    with zipfile.ZipFile(source) as archive:
        infos = [(info, archive.read(info)) for info in archive.infolist()]
    pkl_name = next(info.filename for info, _ in infos if info.filename.endswith('/data.pkl'))
    zip_pickle = next(data for info, data in infos if info.filename == pkl_name)
    legacy_path = osp.join(work_dir, 'legacy_source.pth')
    # Plain pickle on purpose: the source is this tool's own Runner checkpoint or the one its
    # user names to be fuzzed, re-saved in legacy form, so it must round-trip exactly.
    torch.save(torch.load(source, weights_only=False), legacy_path,
               _use_new_zipfile_serialization=False)
    with open(legacy_path, 'rb') as f:
        header, legacy_pickle, trailer = split_legacy(f.read())
    rng, paths = random.Random(seed), []
    for case in range(cases):
        form = ('zip', 'legacy', 'raw')[case % 3]
        kind = mode if mode != 'both' else ('mutate', 'opcodes')[case % 2]
        path = osp.join(work_dir, f'case{case:05d}.{kind}.{form}.pth')
        if kind == 'opcodes':
            with open(path, 'wb') as f:
                f.write(checkpoint_bytes(random_pickle(rng, marker), form))
        elif form == 'zip':
            with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as out:
                for info, data in infos:
                    out.writestr(info.filename, mutate(data, rng, marker)
                                 if info.filename == pkl_name else data)
        else:
            data = mutate(legacy_pickle if form == 'legacy' else zip_pickle, rng, marker)
            with open(path, 'wb') as f:
                f.write(header + data + trailer if form == 'legacy' else data)
        paths.append(path)
    return paths


def checkpoint_bytes(pickle_data: bytes, form: str) -> bytes:
    """``pickle_data`` as the data of a zip checkpoint (torch.save's layout), a legacy file or a
    raw pickle (the three forms torch.load reads; the attack tests write theirs with it too)."""
    import io

    import torch
    if form == 'raw':
        return pickle_data
    if form == 'legacy':
        header = b''.join(pickle.dumps(x, 2) for x in (
            torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION,
            dict(protocol_version=1001, little_endian=True,
                 type_sizes=dict(short=2, int=4, long=4))))
        return header + pickle_data + pickle.dumps([], 2)
    buffer = io.BytesIO()
    torch.save({}, buffer)
    source, out = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info.filename, pickle_data if info.filename.endswith('/data.pkl')
                            else source.read(info))
    return out.getvalue()


def run_children(paths, batch: int):
    """{path: outcome}; a child that dies is restarted after the file that killed it."""
    from mmengine.utils import ProgressBar
    outcomes, todo, progress = {}, list(paths), ProgressBar(len(paths))
    while todo:
        proc = subprocess.run([sys.executable, __file__, '--child', *todo[:batch]],
                              capture_output=True, text=True)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
        done = {r['file']: r for r in lines if 'file' in r}
        started = [r['start'] for r in lines if 'start' in r]
        if proc.returncode != 0 and started and started[-1] not in done:
            done[started[-1]] = dict(outcome=f'died (status {proc.returncode})')
        elif proc.returncode != 0:
            raise RuntimeError(f'the loader child failed before any load: {proc.stderr[-2000:]}')
        outcomes.update(done)
        for _ in done:
            progress.update()
        todo = [p for p in todo if p not in outcomes]
    sys.stdout.write('\n')
    return outcomes


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child(args.child)
        return 0
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='fuzz_checkpoint_')
    os.makedirs(work_dir, exist_ok=True)
    marker = osp.join(work_dir, 'MARKER')
    source = args.checkpoint or real_checkpoint(osp.join(work_dir, 'runner'))
    results = run_children(
        write_mutants(source, work_dir, args.cases, args.seed, marker, args.mode), args.batch)
    clean = ('loaded', 'CheckpointError', 'UnsafeCheckpointError')
    counts, differential = {}, {}
    for path, result in results.items():
        key = f"{path.split('.')[-3]}/{result['outcome']}"
        counts[key] = counts.get(key, 0) + 1
        if result.get('same') is not None:
            same = 'bitwise equal' if result['same'] is True else str(result['same'])
            differential[same] = differential.get(same, 0) + 1
    failures = sorted(p for p, r in results.items() if r['outcome'] not in clean
                      or r.get('same') not in (None, True))
    timed = [r for r in results.values() if 'seconds' in r]
    summary = dict(cases=len(results), seed=args.seed, counts=counts, differential=differential,
                   slowest_s=max((r['seconds'] for r in timed), default=0),
                   max_rss_mib=max((r['rss_mib'] for r in timed), default=0),
                   marker_written=osp.exists(marker), failures=failures[:50],
                   work_dir=work_dir)
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(summary, f, indent=1)
    failed = bool(failures or summary['marker_written'])
    if not failed and not args.work_dir:
        shutil.rmtree(work_dir)
    return int(failed)


if __name__ == '__main__':
    sys.exit(main())
