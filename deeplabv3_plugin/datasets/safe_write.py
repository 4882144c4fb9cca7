"""Write a file below an output root without following a symbolic link on the way.

A downloaded dataset is untrusted input, like a checkpoint: it can ship
``ImageSets/Segmentation/trainaug.txt`` as a link to ``~/.bashrc``, or ``SegmentationClassAug`` as a
link to another directory, and a plain ``open(path, 'w')`` writes through either. So
:func:`open_within` walks from the root one directory at a time with ``O_NOFOLLOW`` descriptors
(a linked directory anywhere below the root is refused; ``..`` and absolute parts too), creates a
temporary file with ``O_EXCL | O_NOFOLLOW`` beside the target and renames it over the name. The
rename replaces whatever entry had that name, a link included, so nothing is written to a link's
target or to another name of a hard-linked file, and a reader never sees half a file. The root
itself may be a link: the user named it.
"""
import errno
import os
import secrets
import stat
from contextlib import contextmanager
from typing import IO, Iterator, List, Optional

from ..errors import UserInputError

__all__ = ['UnsafeWriteError', 'open_within']

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, 'O_CLOEXEC', 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, 'O_CLOEXEC', 0)


class UnsafeWriteError(UserInputError):
    """A write would go through a symbolic link, a non-directory or out of its output root."""


def _parts(root: str, relpath: str) -> List[str]:
    """The components of ``relpath``; refuses an absolute path, ``.``/``..`` and empty parts."""
    parts = relpath.replace(os.sep, '/').split('/')
    if os.path.isabs(relpath) or any(p in ('', '.', '..') for p in parts):
        raise UnsafeWriteError(
            f'Refusing to write {relpath!r} below {root!r}: expected a path relative to that '
            "output root without '..', '.' or empty parts (a name from a dataset file could "
            'otherwise point out of the dataset).')
    return parts


def _open_subdir(parent: int, name: str, shown: str, root: str, target: str) -> int:
    """Open (creating it if missing) the real directory ``name`` of ``parent``, never a link."""
    for _ in range(2):  # a second try when another process created it between the two calls
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                pass
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise UnsafeWriteError(f'Cannot write {target!r}: {shown!r} is not a '
                                       'directory.') from None
            raise UnsafeWriteError(
                f'Refusing to write {target!r}: {shown!r} is a symbolic link. Tools write only '
                f'through real directories below their output root {root!r} (a dataset can ship '
                'a link that points anywhere); replace the link by the directory it points to, '
                'or pass that directory itself as the root.') from None
    raise UnsafeWriteError(f'Refusing to write {target!r}: {shown!r} keeps changing.')


@contextmanager
def open_within(root: str, relpath: str, mode: str = 'wb',
                encoding: Optional[str] = None) -> Iterator[IO]:
    """Open ``root/relpath`` for writing; on a clean exit it atomically replaces that name.

    Missing directories below ``root`` are created. If the ``with`` body raises, nothing is
    replaced and the temporary file is removed.

    Args:
        root: The output root the tool was given (may itself be a link; must exist).
        relpath: Path below ``root``; no part of it may be a link, ``..`` or absolute.
        mode: ``'wb'`` (default) or ``'w'``.
        encoding: Text encoding for ``mode='w'``.

    Raises:
        UnsafeWriteError: a directory on the way is a link or not a directory, or ``relpath``
            leaves the root; the message names the path and why.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"open_within: mode must be 'w' or 'wb', not {mode!r}")
    parts = _parts(root, relpath)
    target = os.path.join(root, *parts)
    try:
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise UnsafeWriteError(f'Cannot write {target!r}: its output root {root!r} is not an '
                               f'existing directory ({error.strerror}).') from None
    try:
        for depth, name in enumerate(parts[:-1], 1):
            parent = directory
            directory = _open_subdir(parent, name, os.path.join(root, *parts[:depth]), root,
                                     target)
            os.close(parent)
        temp = f'.{parts[-1]}.{secrets.token_hex(4)}.tmp'
        fd = os.open(temp, _NEW_FILE_FLAGS, 0o666, dir_fd=directory)
        try:
            with os.fdopen(fd, mode, encoding=encoding) as file:
                yield file
            os.replace(temp, parts[-1], src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            os.unlink(temp, dir_fd=directory)
            raise
    finally:
        os.close(directory)
