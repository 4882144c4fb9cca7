"""The exception the tools print as one paragraph (exit status 2) instead of a traceback.

A wrong path, a mistyped ``--cfg-options`` key or a checkpoint of another model is a user's
mistake: its message names the file or key, the value and what was expected. Any other exception
keeps its traceback, which is what a bug report needs.
"""
import os
import sys
from typing import Callable, Iterable, NoReturn, Optional

__all__ = ['UserInputError', 'listing', 'run_tool']


class UserInputError(ValueError):
    """Bad input from the command line, a config or a file, described for the user."""


def listing(items: Iterable, limit: int = 5, sep: str = ', ') -> str:
    """``'a, b, c and 4 more'``: the first ``limit`` items of a list an error message names."""
    items = [str(item) for item in items]
    more = len(items) - limit
    return sep.join(items[:limit]) + (f' and {more} more' if more > 0 else '')


def run_tool(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main`` and exit with its status; a :class:`UserInputError` exits 2.

    The error is printed as ``<tool>: error: <message>``, argparse's form.
    """
    try:
        status = main()
    except UserInputError as error:
        sys.stderr.write(f'{os.path.basename(sys.argv[0])}: error: {error}\n')
        sys.exit(2)
    sys.exit(status or 0)
