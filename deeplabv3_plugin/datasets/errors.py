"""Exceptions for bad data: a user's mistake, printed by the tools as one paragraph (exit 2).

They keep the built-in types callers catch: ``DataError`` is a ``ValueError``,
``MissingDataError`` also a ``FileNotFoundError``.
"""
from ..engine.errors import UserInputError

__all__ = ['DataError', 'MissingDataError']


class DataError(UserInputError):
    """A dataset file or layout that cannot be used as it is (corrupt, wrong size or values)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data root, directory, split file or listed image/label that does not exist."""
