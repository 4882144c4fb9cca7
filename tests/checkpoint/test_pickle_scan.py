"""The scan's bounds (deeplabv3_plugin/checkpoint/pickle_scan.py): crashes, hangs, memory,
differences.

Each payload is a small file that crashed, hung, exhausted or fooled a loader before; each is
written as a zip, legacy and raw-pickle file and loaded in child processes (a crash must fail the
test, not kill the run) through ``CheckpointLoader``, with its time and its peak RSS above the
child's baseline measured there (``tools/fuzz_checkpoint_loader.py --child``).
"""
import os.path as osp
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.pickles import FORMS, Ops, write_checkpoint
from helpers.pickles import FUZZ, load_in_child
from helpers.tools import eval_cmd, run

MIB = 2**20


def _nested_tuple_key(depth=100000):
    """A dict whose key is a tuple nested 100,000 deep: hashing it overflows the C stack."""
    return Ops().empty_dict().none().raw(b'\x85' * depth).none().setitem()


def _nested_in_set(depth=100000):
    return Ops().glob('builtins', 'set').empty_list().none().raw(b'\x85' * depth).append() \
        .tuple1().reduce()


def _dag(levels=60):
    """t0 = (None, None); t(i+1) = (t(i), t(i)): a few hundred bytes that expand to 2**60."""
    ops = Ops().none().none().tuple2().put(0)
    for i in range(levels):
        ops.get(i).tuple2().put(i + 1)  # the top is t(i): (t(i), t(i))
    return ops


def _dag_key(levels=12):
    """The same DAG, small enough to pass the expansion bound, as a dict key."""
    return Ops().empty_dict().arg(lambda o: o.raw(bytes(_dag(levels))[2:-1])).none().setitem()


def _list_dag(levels=60):
    """The DAG out of lists, filled after they were used (a size counted at use is stale)."""
    ops = Ops().empty_list().mark()
    for i in range(levels + 1):
        ops.empty_list().put(i)
    ops.raw(b'e')  # APPENDS: every list is now inside the first one
    for i in range(levels):
        ops.get(i + 1).get(i).append().get(i).append()
    return ops


def _flood(opcode: bytes, count=8 * MIB):
    """8 MiB of one-byte containers inside one list."""
    return Ops().empty_list().mark().raw(opcode * count).raw(b'e')


def _big_key_reused(items=40000, uses=400):
    """One 40,000-item tuple key, set 400 times: each SETITEM hashes it again."""
    ops = Ops().empty_dict().mark().mark()
    for i in range(items):
        ops.int_(i)
    ops.tuple_().put(1).none()
    for _ in range(uses - 1):
        ops.get(1).none()
    return ops.setitems()


def _short_string():
    """A string whose declared length runs past the pickle: short reads must not resync."""
    return Ops().raw(b'X' + struct.pack('<I', 1 << 20) + b'abc')


def _counter_record():
    """A numpy scalar as a Counter's value: an internal stand-in must not escape."""
    dtype = (lambda o: o.glob('numpy', 'dtype').mark().text('f8').bool_(False).bool_(True)
             .tuple_().reduce().mark().int_(3).text('<').none().none().none().int_(-1)
             .int_(-1).int_(0).tuple_().build())
    scalar = (lambda o: o.glob('numpy._core.multiarray', 'scalar').mark().arg(dtype)
              .glob('_codecs', 'encode').mark().text('\0' * 8).text('latin1').tuple_().reduce()
              .tuple_().reduce())
    return Ops().glob('collections', 'Counter').mark().empty_dict().mark().text('a').arg(scalar)\
        .raw(b'u').tuple_().reduce()


def _storage(ops, numel, legacy=True):
    ops.mark().text('storage').glob('torch', 'FloatStorage').text('0').text('cpu').int_(numel)
    return (ops.none() if legacy else ops).tuple_().binpersid()


def _hooks(ops):
    return ops.glob('collections', 'OrderedDict').empty_tuple().reduce()


def _tensor(size, stride, numel=1, hooks=_hooks, legacy=True):
    return lambda o: o.glob('torch._utils', '_rebuild_tensor_v2').mark().arg(
        lambda p: _storage(p, numel, legacy)).int_(0).arg(size).arg(stride).bool_(False) \
        .arg(hooks).tuple_().reduce()


def _colliding_int_keys(n=2000):
    """Int keys that all hash to 0 (multiples of 2**61 - 1): torch inserts them in O(n**2)."""
    ops = Ops().empty_dict().mark()
    for i in range(1, n + 1):
        ops.int_(i * (2**61 - 1)).none()
    return ops.setitems()


def _utf8_encode(copies=130, length=250000):
    """``_codecs.encode(text)``: UTF-8 in torch, 4 bytes a character, from one memoized string."""
    ops = Ops().empty_list().mark().glob('_codecs', 'encode').put(0) \
        .text('\U0001F600' * length).put(1).tuple1().reduce()
    return ops.raw(b'h\x00h\x01\x85R' * (copies - 1)).raw(b'e')


def _hooks_with_attributes(ops):
    """Empty backward hooks, with a ``_metadata`` attribute holding a stand-in: torch keeps the
    hooks on the tensor, where nothing would look for a stand-in."""
    return _hooks(ops).empty_dict().mark().text('_metadata').empty_dict().mark().text('x') \
        .glob('mmengine.logging.history_buffer', 'HistoryBuffer').empty_tuple().newobj() \
        .setitems().setitems().build()


def _growing_storage():
    """A tensor of 10**8 floats over a storage of 1 (legacy storages grow to fit the view)."""
    return Ops().arg(_tensor((10**8, ), (1, )))


def _many_tensor_objects(count=20000, dims=64):
    """Tensors of 64 dims over one 1-element storage: each costs torch far more than its bytes."""
    ops = Ops().empty_list().mark()
    for _ in range(count):
        ops.arg(_tensor((1, ) * dims, (0, ) * dims))
    return ops.raw(b'e')


PAYLOADS = {
    'nested_tuple_key': (_nested_tuple_key(), 'nesting deeper than 64 levels'),
    'nested_tuple_in_set': (_nested_in_set(), 'nesting deeper than 64 levels'),
    'dict_opcode': (Ops().mark().none().raw(b'\x85' * 50).none().raw(b'd'), 'opcode DICT'),
    'frozenset_opcode': (Ops().mark().none().raw(b'\x85' * 50).raw(b'\x91'),
                         'opcode FROZENSET'),
    'tuple_dag': (_dag(), 'expands to far more items'),
    'tuple_dag_key': (_dag_key(), 'dict keys other than scalars'),
    'list_dag_filled_late': (_list_dag(), 'after it was used'),
    'empty_set_flood': (_flood(b'\x8f'), 'opcode EMPTY_SET'),
    'empty_list_flood': (_flood(b']'), 'more memory than a file of its size can hold'),
    'mark_flood': (Ops().raw(b'(' * 8 * MIB), 'more memory than a file of its size can hold'),
    'memo_flood': (Ops().none().raw(b''.join(b'r' + struct.pack('<I', i)
                                             for i in range(1 << 20))),
                   'more memory than a file of its size can hold'),
    'big_tuple_key_reused': (_big_key_reused(), 'dict keys other than scalars'),
    'short_string': (_short_string(), 'a malformed pickle'),
    'counter_stand_in': (_counter_record(), 'a Counter of other than integers'),
    'growing_storage': (_growing_storage(), ('a tensor outside its storage',
                                             'persistent id other than a tensor storage')),
    # the attacker's pass on this loader
    'colliding_int_keys': (_colliding_int_keys(), 'dict keys other than scalars'),
    'utf8_encode': (_utf8_encode(), '_codecs.encode called with unexpected arguments'),
    'many_tensor_objects': (_many_tensor_objects(), ('taking more memory than a file',
                                                     'persistent id other than a tensor storage')),
    'broadcast_view': (Ops().arg(_tensor((10**10, ), (0, ))),
                       ('more elements than its storage', 'persistent id other than')),
    'hooks_with_attributes': (Ops().arg(_tensor((1, ), (1, ), hooks=_hooks_with_attributes)),
                              ('_rebuild_tensor_v2 called with unexpected arguments',
                               'persistent id other than')),
}


def _words(name):
    words = PAYLOADS[name][1]
    return words if isinstance(words, tuple) else (words, )


@pytest.fixture(scope='module')
def payload_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('bounds')
    return {(name, form): write_checkpoint(str(root / f'{name}.{form}.pth'), bytes(ops), form)
            for name, (ops, _) in PAYLOADS.items() for form in FORMS}


@pytest.mark.slow
def test_every_payload_is_refused_quickly_and_within_memory(payload_files):
    results, wrong = load_in_child(list(payload_files.values())), {}
    for (name, form), path in payload_files.items():
        result, words = results[path], _words(name)
        if form == 'raw' and name == 'counter_stand_in':
            words = ('not a PyTorch checkpoint', )  # refused before the Counter is built
        size_mib = result['size'] / MIB
        if not (result['outcome'] == 'UnsafeCheckpointError'
                and any(w in result['message'] for w in words)
                and result['rss_mib'] < 4 * size_mib + 64
                and result['seconds'] < 5 + 2 * size_mib):  # linear, not worse
            wrong[(name, form)] = {k: result[k] for k in ('outcome', 'seconds', 'rss_mib')}
            message = result['message']
            wrong[(name, form)]['message'] = message[message.find('asks'):][:200]
    assert not wrong, wrong


def test_real_checkpoints_load_within_memory(tmp_path):
    """Peak RSS of a load stays under 4 x size + 64 MiB above the baseline, for real files."""
    model = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3) for _ in range(20)])
    meta = dict(arrays=[np.arange(1000, dtype=np.float64)] * 50, note='x' * 10000)
    files = []
    for form in ('zip', 'legacy'):
        path = str(tmp_path / f'model.{form}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta=meta), path,
                   _use_new_zipfile_serialization=form == 'zip')
        files.append(path)
    results = load_in_child(files)
    for path in files:
        result = results[path]
        assert result['outcome'] == 'loaded' and result['same'] is True, result
        assert 2 * MIB < result['size'] < 10 * MIB
        assert result['rss_mib'] < 4 * result['size'] / MIB + 64, result


@pytest.mark.parametrize('name,form', [('nested_tuple_key', 'zip'), ('tuple_dag', 'legacy'),
                                       ('empty_list_flood', 'zip'), ('growing_storage', 'legacy')])
@pytest.mark.slow
def test_tools_refuse_them(payload_files, data_env, tmp_path, name, form):
    """``tools/test.py CONFIG CKPT`` and ``tools/train.py --resume CKPT``: one paragraph, exit 2."""
    path = payload_files[(name, form)]
    test_cmd = eval_cmd(path, str(tmp_path / 'test'))
    config = test_cmd[test_cmd.index(path) - 1]
    train_cmd = [sys.executable, 'tools/train.py', config, '--work-dir', str(tmp_path / 'train'),
                 '--resume', path]
    for cmd in (test_cmd, train_cmd):
        proc = run(cmd, data_env)
        assert proc.returncode == 2, (cmd, proc.returncode, proc.stderr[-3000:])
        assert 'Refused to load checkpoint' in proc.stderr and path in proc.stderr
        assert any(w in proc.stderr for w in _words(name)) and 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_opcode_fuzz_and_differential(tmp_path):
    """Random pickles over all opcodes and mutants of a real checkpoint: each loads or is refused
    cleanly, and what loads is bitwise what torch's own unpickler reads."""
    out = tmp_path / 'summary.json'
    proc = subprocess.run([sys.executable, FUZZ, '--cases', '300', '--seed', '3', '--work-dir',
                           str(tmp_path / 'cases'), '--out', str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json
    summary = json.loads(out.read_text())
    assert not summary['failures'] and not summary['marker_written'], summary
    counts = summary['counts']
    assert counts.get('opcodes/UnsafeCheckpointError') and counts.get('mutate/loaded'), counts
    assert summary['differential'].get('bitwise equal') and \
        set(summary['differential']) == {'bitwise equal'}, summary
    assert osp.exists(str(tmp_path / 'cases'))
