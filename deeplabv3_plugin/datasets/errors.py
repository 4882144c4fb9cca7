"""The exceptions raised for bad data: a user's mistake, reported as one paragraph by the tools.

Both derive from :class:`~deeplabv3_plugin.engine.errors.UserInputError`, so ``tools/train.py``
and ``tools/test.py`` print the message (which names the file or config key, the value and what
was expected) and exit with status 2 instead of a traceback. They also keep the built-in types
callers already catch: :class:`DataError` is a ``ValueError`` and :class:`MissingDataError` a
``FileNotFoundError``.
"""
from ..engine.errors import UserInputError

__all__ = ['DataError', 'MissingDataError']


class DataError(UserInputError):
    """A dataset file or layout that cannot be used as it is (corrupt, wrong size or values)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data root, directory, split file or listed image/label that does not exist."""
