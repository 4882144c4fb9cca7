"""The one exception type the tools turn into a short message instead of a traceback.

A wrong path, a mistyped ``--cfg-options`` key or a checkpoint trained for another model is a
user's mistake, not a bug in the code: ``tools/train.py`` and ``tools/test.py`` catch
:class:`UserInputError` and print its message (one paragraph naming the file or key, the value and
what was expected) with exit status 2, the status argparse uses for bad command lines. Every other
exception keeps its traceback, because then the traceback is what a bug report needs.
"""

__all__ = ['UserInputError']


class UserInputError(ValueError):
    """Bad input from the command line, a config or a file, described for the user.

    Subclasses :class:`ValueError` so code that does not know about the tools still treats it as
    a bad value.
    """
