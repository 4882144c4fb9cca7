"""The one exception type the tools turn into a short message instead of a traceback.

A wrong path, a mistyped ``--cfg-options`` key or a checkpoint trained for another model is a
user's mistake, not a bug in the code: ``tools/train.py`` and ``tools/test.py`` catch
:class:`UserInputError` and print its message (one paragraph naming the file or key, the value and
what was expected) with exit status 2, the status argparse uses for bad command lines. Every other
exception keeps its traceback, because then the traceback is what a bug report needs.
"""

import os
import sys
from typing import Callable, NoReturn, Optional

__all__ = ['UserInputError', 'run_tool']


class UserInputError(ValueError):
    """Bad input from the command line, a config or a file, described for the user.

    Subclasses :class:`ValueError` so code that does not know about the tools still treats it as
    a bad value.
    """


def run_tool(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main`` and exit with its status; a :class:`UserInputError` exits 2.

    The error is printed as ``<tool>: error: <message>``, argparse's form, without a traceback.
    """
    try:
        status = main()
    except UserInputError as error:
        sys.stderr.write(f'{os.path.basename(sys.argv[0])}: error: {error}\n')
        sys.exit(2)
    sys.exit(status or 0)
