"""Mutation fuzz of the safe checkpoint loader: ``python tools/fuzz_checkpoint_loader.py``.

Takes a real mmengine checkpoint (``--checkpoint``, or one a tiny ``Runner`` writes), mutates its
pickle at random (byte flips, inserts, deletions, duplicated spans, opcodes swapped, and calls of
``os.system('touch MARKER')`` spliced in at opcode boundaries), writes each mutant as a zip,
legacy or raw-pickle file and loads them in child processes through mmengine's
``CheckpointLoader`` with ``deeplabv3_plugin.runtime`` imported.

Every case must load or raise the plugin's ``CheckpointError``/``UnsafeCheckpointError``: a child
killed by a signal, another exception type or a marker file is a failure (exit status 1). The
summary (counts per outcome, the failing files) is printed and, with ``--out``, written as JSON.
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cases', type=int, default=2000, help='number of mutants (default 2000)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--checkpoint', help='an mmengine checkpoint (zip) to mutate (default: '
                        'one written by a 2-iteration Runner)')
    parser.add_argument('--work-dir', help='where the mutants are written (default: a temp dir, '
                        'removed afterwards unless something failed)')
    parser.add_argument('--batch', type=int, default=250, help='files per child process')
    parser.add_argument('--out', help='write the summary as JSON here')
    parser.add_argument('--child', nargs='*', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(paths) -> None:
    """Load each path; one JSON line before (``start``) and after each load."""
    from mmengine.runner.checkpoint import CheckpointLoader

    import deeplabv3_plugin.runtime  # noqa: F401  (the safe loader)
    for path in paths:
        print(json.dumps(dict(start=path)), flush=True)
        try:
            CheckpointLoader.load_checkpoint(path, map_location='cpu')
            outcome, message = 'loaded', ''
        except Exception as err:  # classified by the parent
            outcome, message = type(err).__name__, str(err)
        print(json.dumps(dict(file=path, outcome=outcome, message=message)), flush=True)


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


def write_mutants(source: str, work_dir: str, cases: int, seed: int, marker: str):
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
        path = osp.join(work_dir, f'case{case:05d}.{form}.pth')
        if form == 'zip':
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


def run_children(paths, batch: int):
    """{path: outcome}; a child that dies is restarted after the file that killed it."""
    from mmengine.utils import ProgressBar
    outcomes, todo, progress = {}, list(paths), ProgressBar(len(paths))
    while todo:
        proc = subprocess.run([sys.executable, __file__, '--child', *todo[:batch]],
                              capture_output=True, text=True)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
        done = {r['file']: r['outcome'] for r in lines if 'file' in r}
        started = [r['start'] for r in lines if 'start' in r]
        if proc.returncode != 0 and started and started[-1] not in done:
            done[started[-1]] = f'died (status {proc.returncode})'
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
    outcomes = run_children(write_mutants(source, work_dir, args.cases, args.seed, marker),
                            args.batch)
    clean = ('loaded', 'CheckpointError', 'UnsafeCheckpointError')
    counts = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    failures = sorted(p for p, o in outcomes.items() if o not in clean)
    summary = dict(cases=len(outcomes), seed=args.seed, counts=counts,
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
