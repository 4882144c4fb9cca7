"""Crafted checkpoints against the safe loader, as an attacker would write them.

Every payload tries to run ``touch MARKER`` (or to crash the process, or to change it); each is
written as a zip, legacy and raw-pickle file, bare and nested in ``meta``/``message_hub``, and
loaded in child processes: through mmengine's ``CheckpointLoader`` and through ``tools/test.py``.
A pass means: no marker file, no signal, and the plugin's ``UnsafeCheckpointError``.
"""
import os.path as osp

import pytest
from helpers.pickles import FORMS, Ops, in_checkpoint, load_in_child, write_checkpoint
from helpers.tools import eval_cmd, run

HB = ('mmengine.logging.history_buffer', 'HistoryBuffer')
MA = 'numpy._core.multiarray'
# The fuzz tool's child mode loads files through CheckpointLoader, one JSON line per file.


def _getattr(owner, name):
    return lambda ops: ops.call('__builtin__', 'getattr', owner, name)


def _glob(module, name):
    return lambda ops: ops.glob(module, name)


def _dtype(code, state=(3, '<', None, None, None, -1, -1, 0)):
    return lambda ops: ops.call('numpy', 'dtype', code, False, True).arg(state).build()


def _array(shape, dtype, data, builds=1):
    def write(ops):
        ops.call(MA, '_reconstruct', _glob('numpy', 'ndarray'), (0, ), b'b')
        for _ in range(builds):
            ops.arg((1, shape, dtype, False, data)).build()
    return write


def _history_buffer(state):
    return lambda ops: ops.glob(*HB).empty_tuple().newobj().arg(state).build()


def _amplified(copies=2000, size=20000):
    """One memoized 20 kB string turned into 2000 arrays: 40 MB from a 20 kB file."""
    ops = Ops().empty_list().mark().bytes_(b'\0' * size).put(1)
    for _ in range(copies):
        ops.arg(_array((size, ), _dtype('u1', (3, '|', None, None, None, -1, -1, 0)),
                       lambda o: o.get(1)))
    return ops.raw(b'e')


def _payloads(marker: str) -> dict:
    touch = f'touch {marker}'
    statistic_dict = (lambda ops: ops.empty_dict().mark().text('__init__')
                      .arg(_getattr(_glob(*HB), 'min')).setitems())
    return {
        # The chain of the issue: poison HistoryBuffer's statistics, then getattr towards eval.
        'history_buffer_chain': Ops().arg(_history_buffer(
            lambda ops: ops.empty_dict().mark().text('statistics_methods').arg(statistic_dict)
            .setitems())).pop().call(
                'torch._tensor', '_rebuild_from_type_v2', _getattr(_glob(*HB), '__init__'),
                _glob('torch', 'Tensor'), ('__globals__', ), None),
        'os_system': Ops().call('os', 'system', touch),
        'posix_system': Ops().call('posix', 'system', touch),
        'eval': Ops().call('builtins', 'eval', f"__import__('os').system({touch!r})"),
        'exec_py2_name': Ops().call('__builtin__', 'exec', f'open({marker!r}, "w")'),
        'subprocess': Ops().call('subprocess', 'Popen', ('touch', marker)),
        'io_open': Ops().call('io', 'open', marker, 'w'),
        'numpy_load': Ops().call('numpy', 'load', marker + '.npy', None, True),
        'numpy_runstring': Ops().call('numpy.testing._private.utils', 'runstring',
                                      f'open({marker!r}, "w")', lambda o: o.empty_dict()),
        'copyreg': Ops().call('copyreg', '_reconstructor', _glob('os', 'system'),
                              _glob('builtins', 'object'), touch),
        'stack_global_dotted': Ops().stack_glob('torch', 'nn.Module.__init__.__globals__'),
        'getattr_dunder': Ops().arg(_getattr(_glob(*HB), '__init__')),
        'getattr_globals': Ops().arg(_getattr(_getattr(_glob(*HB), 'mean'), '__globals__')),
        'getattr_method_called': Ops().arg(_getattr(_glob(*HB), 'update')).mark().tuple_()
        .reduce(),
        'getattr_other_class': Ops().arg(_getattr(_glob('collections', 'OrderedDict'),
                                                  '__class__')),
        'object_dtype_array': Ops().arg(_array((1, ), _dtype('O'), b'\0' * 8)),
        'ndarray_buffer_call': Ops().call('numpy', 'ndarray', (1, ), 'O', 0, b'A' * 8),
        'ndarray_buffer_newobj_ex': Ops().glob('numpy', 'ndarray').arg(((1, ), 'O')).empty_dict()
        .mark().text('buffer').bytes_(b'A' * 8).setitems().newobj_ex(),
        'array_short_data': Ops().arg(_array((1000, ), _dtype('f8'), b'\0' * 8)),
        'array_huge_shape': Ops().arg(_array((2**62, ), _dtype('f8'), b'\0' * 8)),
        'array_second_build': Ops().arg(_array((1, ), _dtype('f8'), b'\0' * 8, builds=2)),
        'dtype_structured_state': Ops().arg(
            _dtype('f8', (3, '|', None, ('a', ), lambda o: o.empty_dict(), 8, 1, 16))),
        'scalar_wrong_length': Ops().call(MA, 'scalar', _dtype('f8'), b'\0' * 2),
        'history_buffer_class_swap': Ops().arg(_history_buffer(
            lambda ops: ops.none().empty_dict().mark().text('__class__')
            .glob('collections', 'OrderedDict').setitems().tuple2())),
        'history_buffer_lists': Ops().arg(_history_buffer(
            lambda ops: ops.empty_dict().mark().text('_log_history').empty_list()
            .text('_count_history').empty_list().text('max_length').int_(1).setitems())),
        'build_on_function': Ops().glob('collections', 'OrderedDict').none().empty_dict().mark()
        .text('__defaults__').arg(('x', )).setitems().tuple2().build(),
        'build_on_torch_dtype': Ops().glob('torch', 'float32').empty_dict().build(),
        'ordered_dict_dunder_state': Ops().call('collections', 'OrderedDict').empty_dict().mark()
        .text('__class__').glob(*HB).setitems().build(),
        'append_to_ordered_dict': Ops().call('collections', 'OrderedDict').int_(1).append(),
        'newobj_other_class': Ops().glob('collections', 'OrderedDict').empty_tuple().newobj(),
        'persistent_module': Ops().arg(('module', _glob('os', 'system'), 'a', 'b')).binpersid(),
        'persistent_huge_storage': Ops().arg(('storage', _glob('torch', 'FloatStorage'), '0',
                                              'cpu', 2**40)).binpersid(),
        'memo_amplification': _amplified(),
        'inst_opcode': Ops().mark().text(touch).raw(b'ios\nsystem\n'),
        'ext_opcode': Ops().raw(b'\x82\x01'),
    }


@pytest.fixture(scope='module')
def attack_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('attacks')
    marker = str(root / 'MARKER')
    files = {}
    for name, payload in _payloads(marker).items():
        for form in FORMS:
            files[(name, form, 'bare')] = write_checkpoint(
                str(root / f'{name}.{form}.pth'), bytes(payload), form)
        for where, form in (('meta', 'zip'), ('message_hub', 'legacy')):
            files[(name, form, where)] = write_checkpoint(
                str(root / f'{name}.{form}.{where}.pth'), bytes(in_checkpoint(payload, where)),
                form)
    return marker, files


def test_every_payload_is_refused_in_every_form(attack_files):
    marker, files = attack_files
    results = load_in_child(list(files.values()))
    assert not osp.exists(marker), 'a payload ran'
    wrong = {key: results[path] for key, path in files.items()
             if results[path]['outcome'] != 'UnsafeCheckpointError'
             or path not in results[path]['message']}
    assert not wrong, wrong


def test_refusals_name_what_was_refused(attack_files):
    _, files = attack_files
    keys = [('os_system', form, 'bare') for form in FORMS] + [
        ('object_dtype_array', 'zip', 'meta'), ('getattr_dunder', 'legacy', 'bare'),
        ('persistent_huge_storage', 'zip', 'bare'), ('build_on_function', 'raw', 'bare')]
    results = load_in_child([files[k] for k in keys])
    expected = ["the global 'os.system'"] * 3 + [
        "numpy dtype 'O'", "getattr(mmengine.logging.history_buffer.HistoryBuffer (a global), "
        "'__init__')", 'more memory than a file of its size can hold',
        'BUILD on collections.OrderedDict (a global)']
    for key, words in zip(keys, expected):
        assert words in results[files[key]]['message'], (key, results[files[key]])


@pytest.mark.parametrize('name,form', [
    ('history_buffer_chain', 'zip'), ('history_buffer_chain', 'legacy'),
    ('history_buffer_chain', 'raw'), ('os_system', 'zip'), ('ndarray_buffer_call', 'legacy'),
    ('object_dtype_array', 'raw'), ('history_buffer_class_swap', 'zip'),
    ('persistent_huge_storage', 'legacy')])
def test_tools_test_refuses_crafted_checkpoints(attack_files, data_env, tmp_path, name, form):
    """``tools/test.py CONFIG CKPT``: one paragraph naming the file, exit 2, nothing ran."""
    marker, files = attack_files
    path = files[(name, form, 'bare')]
    proc = run(eval_cmd(path, str(tmp_path / 'work')), data_env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert 'Refused to load checkpoint' in proc.stderr and path in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not osp.exists(marker)
