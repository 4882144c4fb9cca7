"""Checks on the files and ``--cfg-options`` keys the tools are given, with errors that help.

mmengine's ``Config.merge_from_dict`` adds any key it is given: ``model.backbone.dept=50``
silently creates ``dept`` next to ``depth``. :func:`check_cfg_options` refuses a key whose parent
does not exist or is not a dict/list, a list index out of range, and a new leaf key that is a
near-spelling of an existing sibling. New leaves with no look-alike (``model.test_output_stride``)
are allowed: adding a keyword argument is a legitimate use of ``--cfg-options``.
"""
import difflib
import os.path as osp
from typing import Any, List, Mapping, Optional

from mmengine.config import Config

from .errors import UserInputError, listing

__all__ = [
    'ConfigOptionError', 'check_cfg_options', 'check_file_exists', 'cfg_option_problem',
    'load_config'
]

#: A new key this similar (difflib ratio) to an existing sibling is taken for a typo:
#: ``dept``/``depth`` 0.89, ``max_iter``/``max_iters`` 0.94, while real new keyword arguments
#: such as ``test_output_stride`` next to ``output_stride`` (0.84) pass.
TYPO_RATIO = 0.85
_DELETE_KEY = '_delete_'  # mmengine's "replace instead of merge" marker


class ConfigOptionError(UserInputError):
    """A ``--cfg-options`` key does not fit the config."""


def check_file_exists(path: str, what: str, expected: str) -> None:
    """Raise a :class:`UserInputError` naming ``path`` (for ``what``) unless it is a file;
    ``expected`` (what a valid value looks like) ends the message."""
    if osp.isfile(path):
        return
    if osp.isdir(path):
        problem = 'is a directory, not a file'
    else:
        problem = 'does not exist'
    raise UserInputError(f'{what} {path!r} {problem} (resolved to {osp.abspath(path)!r}). '
                         f'{expected}')


def load_config(path: str) -> Config:
    """``Config.fromfile`` with a clear error for a missing or misnamed config file."""
    check_file_exists(path, 'config file',
                      'Expected the path of an mmseg config (.py), e.g. '
                      'configs/deeplabv3/<name>.py.')
    return Config.fromfile(path)


def _close(word: str, candidates: List[str], cutoff: float) -> List[str]:
    return difflib.get_close_matches(word, candidates, n=3, cutoff=cutoff)


def cfg_option_problem(cfg: Mapping[str, Any], key: str) -> Optional[str]:
    """Why the dotted ``--cfg-options`` ``key`` (list items by index) does not fit ``cfg`` (a
    nested dict), or None for an existing key or an acceptable new leaf."""
    node: Any = cfg
    walked: List[str] = []
    parts = key.split('.')
    for depth, part in enumerate(parts):
        where = repr('.'.join(walked)) if walked else 'the top level of the config'
        is_leaf = depth == len(parts) - 1
        if isinstance(node, Mapping):
            if part in node or part == _DELETE_KEY:
                node = node.get(part)
                walked.append(part)
                continue
            siblings = [str(k) for k in node]
            if is_leaf:
                close = _close(part, siblings, TYPO_RATIO)
                if not close:
                    return None  # a new keyword argument: allowed
                return (f'{where} has no key {part!r}, and a new key so close to the existing '
                        f'{" / ".join(map(repr, close))} is almost certainly a typo. Did you '
                        f'mean {".".join(walked + [close[0]])!r}?')
            close = _close(part, siblings, 0.6)
            hint = (f' Did you mean {".".join(walked + [close[0]])!r}?' if close else
                    f' Its keys are: {listing(siblings, 15)}.')
            return (f'{where} has no key {part!r}, so {key!r} has no parent to be set in '
                    f'(mmengine would silently create it).{hint}')
        if isinstance(node, (list, tuple)):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                walked.append(part)
                continue
            return (f'{where} is a list of {len(node)} items, so {part!r} is not a valid index '
                    f'(expected 0..{len(node) - 1}).')
        return (f'{where} is {node!r} (a {type(node).__name__}), not a dict or list, so it has '
                f'no key {part!r}. Set {".".join(walked)!r} itself instead.')
    return None


def check_cfg_options(cfg: Config, options: Optional[Mapping[str, Any]],
                      config_path: str = '') -> None:
    """Raise :class:`ConfigOptionError` naming every ``--cfg-options`` key that does not fit
    ``cfg`` (loaded, before merging; see :func:`cfg_option_problem`)."""
    if not options:
        return
    as_dict = cfg.to_dict()
    problems = [f'{key!r}: {problem}' for key in options
                if (problem := cfg_option_problem(as_dict, key)) is not None]
    if problems:
        source = f' of config {config_path!r}' if config_path else ''
        raise ConfigOptionError(
            f'--cfg-options: {len(problems)} key(s) do not fit the keys{source}. '
            + ' '.join(problems) + ' Keys are dotted paths into the config (list items by '
            "index, e.g. train_dataloader.dataset.pipeline.1.scale); to add a whole new section, "
            'write a config that inherits this one with _base_ = [...].')
