""":class:`UserInputError`: a user's mistake, which the tools print as one paragraph (exit 2)."""
import os
import sys
from typing import Callable, Iterable, NoReturn, Optional

__all__ = ['UserInputError', 'listing', 'run_tool']


class UserInputError(ValueError):
    """Bad input from the command line, a config or a file; the message names it and what was
    expected. Any other exception keeps its traceback for bug reports."""


def listing(items: Iterable, limit: int = 5, sep: str = ', ') -> str:
    """``'a, b, c and 4 more'``: the first ``limit`` items of a list an error message names."""
    items = [str(item) for item in items]
    more = len(items) - limit
    return sep.join(items[:limit]) + (f' and {more} more' if more > 0 else '')


def run_tool(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main``; a :class:`UserInputError` prints ``<tool>: error: ...``, exits 2."""
    try:
        status = main()
    except UserInputError as error:
        sys.stderr.write(f'{os.path.basename(sys.argv[0])}: error: {error}\n')
        sys.exit(2)
    sys.exit(status or 0)
