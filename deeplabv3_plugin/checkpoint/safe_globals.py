"""The inert stand-ins torch's weights-only unpickler builds for what torch does not know.

torch's unpickler builds containers, plain values, tensors, ``torch.Size``/``torch.device`` and
dtypes itself. mmengine's checkpoints also hold ``HistoryBuffer`` objects and numpy dtypes, arrays
and scalars. :func:`torch_safe_globals` maps each of those globals (numpy 1.x and 2.x names) to a
*record* class here: torch calls it or its ``__setstate__`` with the file's arguments and state,
and the record only keeps them. :mod:`.checkpoint` then builds the real objects from that plain,
checked data. No real class ever sees the file's state.
"""
import pickle
import reprlib
from typing import Any, Callable, List, Tuple, Union

from deeplabv3_plugin.errors import UserInputError

__all__ = ['CheckpointError', 'UnsafeCheckpointError', 'NUMERIC_DTYPES', 'Record',
           'torch_safe_globals']


class CheckpointError(pickle.UnpicklingError, UserInputError):
    """A checkpoint file could not be loaded; the tools print it in one paragraph, exit 2."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks for something the safe loader refuses to build."""


_SHORT = reprlib.Repr()  # short reprs of the file's values, for messages
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 2
#: Numeric dtypes an array or scalar may have (no object, void, string or datetime dtypes).
NUMERIC_DTYPES = frozenset('b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8 c8 c16'.split())


def _refuse(what: str) -> None:
    raise UnsafeCheckpointError(what)


def _require(ok: bool, what: Union[str, Callable[[], str]]) -> None:
    """Refuse unless ``ok``; ``what`` may be a function, so a message is only built on failure."""
    if not ok:
        _refuse(what if isinstance(what, str) else what())


# --- records ------------------------------------------------------------------------------------
class Record:
    """What the file said about one object: its arguments and BUILD state, nothing else."""
    __slots__ = ('args', 'state', 'built')
    kind = 'object'

    def __new__(cls, *args: Any) -> 'Record':  # NEWOBJ calls __new__ alone
        record = super().__new__(cls)
        record.args, record.state, record.built = args, None, False
        return record

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # torch's BUILD
        _require(not self.built, lambda: f'a second BUILD on a {self.kind}')
        self.state, self.built = state, True

    def __reduce__(self) -> Any:  # never pickled back out
        _refuse(f'pickling a {self.kind} record')


class DtypeRecord(Record):
    kind = 'numpy.dtype'


class ArrayRecord(Record):
    kind = 'numpy array'


class ScalarRecord(Record):
    kind = 'numpy scalar'


class HistoryBufferRecord(Record):
    kind = 'HistoryBuffer'


class StatisticRecord(Record):
    """``getattr(HistoryBuffer, name)``, kept as a name and never looked up: the rebuilt
    ``HistoryBuffer`` uses the statistics methods of the running mmengine."""
    kind = 'statistic'


class _Marker:
    """The ``numpy.ndarray`` class as an argument: not callable, not buildable."""

    def __repr__(self) -> str:
        return 'numpy.ndarray'


NDARRAY = _Marker()


def _empty_bytes() -> bytes:  # protocol 2 writes b'' as bytes()
    return b''


def torch_safe_globals() -> List[Tuple[Any, str]]:
    """``(stand-in, "module.name")`` entries for ``torch.serialization.safe_globals``."""
    names = [('mmengine.logging.history_buffer.HistoryBuffer', HistoryBufferRecord),
             ('numpy.ndarray', NDARRAY), ('numpy.dtype', DtypeRecord),
             ('builtins.getattr', StatisticRecord), ('builtins.bytes', _empty_bytes)]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        names += [(f'{module}._reconstruct', ArrayRecord), (f'{module}.scalar', ScalarRecord)]
    return [(stand_in, name) for name, stand_in in names]
