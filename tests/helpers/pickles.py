"""A small pickle-opcode writer and the three file forms torch.load reads, for attack tests.

``pickle.dumps`` only writes what real objects reduce to; an attacker writes opcodes by hand.
:class:`Ops` does the same: ``Ops().glob('posix', 'system').text('id').tuple1().reduce()``.
:func:`write_checkpoint` puts a pickle into a zip checkpoint (torch's default format), a legacy
(``_use_new_zipfile_serialization=False``) file or a raw pickle file.
"""
import json
import os.path as osp
import pickle
import struct
import subprocess
import sys

from . import REPO_ROOT
from .tools import load_tool

FORMS = ('zip', 'legacy', 'raw')


class Ops:
    """Protocol-2 pickle opcodes, chained; ``bytes(ops)`` ends the pickle with STOP."""

    def __init__(self) -> None:
        self.data = bytearray(b'\x80\x02')

    def raw(self, data: bytes) -> 'Ops':
        self.data += data
        return self

    def glob(self, module: str, name: str) -> 'Ops':
        return self.raw(b'c' + f'{module}\n{name}\n'.encode())

    def stack_glob(self, module: str, name: str) -> 'Ops':
        return self.text(module).text(name).raw(b'\x93')

    def text(self, value: str) -> 'Ops':
        data = value.encode()
        return self.raw(b'X' + struct.pack('<I', len(data)) + data)

    def bytes_(self, value: bytes) -> 'Ops':
        """As protocol 2 writes bytes: ``_codecs.encode(value.decode('latin1'), 'latin1')``."""
        return self.glob('_codecs', 'encode').mark().text(value.decode('latin1')) \
            .text('latin1').tuple_().reduce()

    def int_(self, value: int) -> 'Ops':
        return self.raw(b'J' + struct.pack('<i', value)) if -2**31 <= value < 2**31 else \
            self.raw(pickle.dumps(value, 2)[2:-1])

    def none(self) -> 'Ops':
        return self.raw(b'N')

    def bool_(self, value: bool) -> 'Ops':
        return self.raw(b'\x88' if value else b'\x89')

    def mark(self) -> 'Ops':
        return self.raw(b'(')

    def tuple_(self) -> 'Ops':  # MARK ... TUPLE
        return self.raw(b't')

    def tuple1(self) -> 'Ops':
        return self.raw(b'\x85')

    def tuple2(self) -> 'Ops':
        return self.raw(b'\x86')

    def empty_tuple(self) -> 'Ops':
        return self.raw(b')')

    def empty_dict(self) -> 'Ops':
        return self.raw(b'}')

    def empty_list(self) -> 'Ops':
        return self.raw(b']')

    def setitem(self) -> 'Ops':
        return self.raw(b's')

    def setitems(self) -> 'Ops':  # MARK k v k v ... SETITEMS
        return self.raw(b'u')

    def append(self) -> 'Ops':
        return self.raw(b'a')

    def reduce(self) -> 'Ops':
        return self.raw(b'R')

    def build(self) -> 'Ops':
        return self.raw(b'b')

    def newobj(self) -> 'Ops':
        return self.raw(b'\x81')

    def newobj_ex(self) -> 'Ops':
        return self.raw(b'\x92')

    def put(self, index: int) -> 'Ops':
        return self.raw(b'q' + bytes([index]))

    def get(self, index: int) -> 'Ops':
        return self.raw(b'h' + bytes([index]))

    def pop(self) -> 'Ops':
        return self.raw(b'0')

    def binpersid(self) -> 'Ops':
        return self.raw(b'Q')

    def call(self, module: str, name: str, *args: 'Arg') -> 'Ops':
        """``module.name(*args)``: GLOBAL, MARK, args, TUPLE, REDUCE."""
        self.glob(module, name).mark()
        for arg in args:
            self.arg(arg)
        return self.tuple_().reduce()

    def arg(self, value: 'Arg') -> 'Ops':
        if callable(value):
            value(self)
        elif value is None:
            self.none()
        elif isinstance(value, bool):
            self.bool_(value)
        elif isinstance(value, int):
            self.int_(value)
        elif isinstance(value, str):
            self.text(value)
        elif isinstance(value, bytes):
            self.bytes_(value)
        elif isinstance(value, tuple):
            self.mark()
            for item in value:
                self.arg(item)
            self.tuple_()
        else:
            raise TypeError(value)
        return self

    def __bytes__(self) -> bytes:
        return bytes(self.data) + b'.'


Arg = object


def in_checkpoint(payload: 'Ops', where: str = 'meta') -> Ops:
    """``{'state_dict': {}, where: payload}``: the payload nested where a checkpoint holds data."""
    ops = Ops().empty_dict().mark().text('state_dict').empty_dict().text(where)
    ops.data += payload.data[2:]  # the payload's opcodes without its PROTO header
    return ops.setitems()


#: The three file forms, written as the fuzz tool writes them (one writer for both).
checkpoint_bytes = load_tool('fuzz_checkpoint_loader').checkpoint_bytes


def write_checkpoint(path: str, pickle_data: bytes, form: str) -> str:
    with open(path, 'wb') as f:
        f.write(checkpoint_bytes(bytes(pickle_data), form))
    return path


FUZZ = osp.join(REPO_ROOT, 'tools', 'fuzz_checkpoint_loader.py')


def load_in_child(paths):
    """Load ``paths`` in a child process; return {path: result}, failing on any signal."""
    proc = subprocess.run([sys.executable, FUZZ, '--child', *paths], capture_output=True,
                          text=True, timeout=300)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
    started = [r['start'] for r in lines if 'start' in r]
    assert proc.returncode == 0, (f'the loader process died (status {proc.returncode}) '
                                  f'loading {started[-1] if started else "?"}: '
                                  f'{proc.stderr[-2000:]}')
    return {r['file']: r for r in lines if 'file' in r}
