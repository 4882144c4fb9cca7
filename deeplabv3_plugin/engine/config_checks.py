"""Checks on the files and ``--cfg-options`` keys the tools are given, with errors that help.

mmengine's ``Config.merge_from_dict`` adds any key it is given: ``--cfg-options
model.backbone.dept=50`` silently creates a ``dept`` entry next to ``depth`` and the run trains the
wrong model. :func:`check_cfg_options` refuses two kinds of key before anything is merged:

* a dotted key whose parent does not exist (``model.backbon.depth``) or is not a dict or list
  (``train_cfg.max_iters.x``), or a list index out of range;
* a new leaf key one or two typed characters away from an existing sibling (``dept`` next to
  ``depth``, ``max_iter`` next to ``max_iters``), i.e. almost certainly a typo.

New leaf keys with no close sibling (``model.test_output_stride=8``) are allowed: adding a keyword
argument to a component is a legitimate use of ``--cfg-options``.
"""
import difflib
import os.path as osp
from typing import Any, List, Mapping, Optional

from mmengine.config import Config

from .errors import UserInputError

__all__ = [
    'ConfigOptionError', 'check_cfg_options', 'check_file_exists', 'cfg_option_problem',
    'edit_distance', 'load_config'
]

#: A new key at most this many single-character edits away from an existing sibling is taken
#: for a typo: ``dept``/``depth`` and ``max_iter``/``max_iters`` are 1 apart, ``chanels``/
#: ``channels`` 1, while real new keyword arguments such as ``norm_eval`` next to ``norm_cfg`` (4)
#: or ``test_output_stride`` next to ``output_stride`` (5) are allowed. Keys of up to 4
#: characters allow only 1 edit.
TYPO_EDITS = 2
_MAX_LISTED_KEYS = 15
_DELETE_KEY = '_delete_'  # mmengine's "replace instead of merge" marker


class ConfigOptionError(UserInputError):
    """A ``--cfg-options`` key does not fit the config."""


def check_file_exists(path: str, what: str, expected: str) -> None:
    """Raise a :class:`UserInputError` naming ``path`` when it is not an existing file.

    Args:
        path: The path given by the user.
        what: What the path is for, e.g. ``'config file'``, used in the message.
        expected: What a valid value looks like, appended to the message.
    """
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


def _listing(keys: List[str]) -> str:
    shown = ', '.join(keys[:_MAX_LISTED_KEYS])
    return shown + (f', ... ({len(keys)} keys)' if len(keys) > _MAX_LISTED_KEYS else '')


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: single-character insertions, deletions and substitutions."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _typo_of(word: str, candidates: List[str]) -> List[str]:
    """Existing keys ``word`` is probably a misspelling of, closest first."""
    limit = 1 if len(word) <= 4 else TYPO_EDITS
    scored = sorted((edit_distance(word, c), c) for c in candidates)
    return [c for distance, c in scored if distance <= limit][:3]


def _suggest(word: str, candidates: List[str]) -> List[str]:
    return difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)


def cfg_option_problem(cfg: Mapping[str, Any], key: str) -> Optional[str]:
    """Why the dotted ``--cfg-options`` key does not fit ``cfg``, or None when it does.

    Args:
        cfg: The config as a nested dict (``Config.to_dict()``).
        key: A key as given on the command line, e.g. ``'model.backbone.depth'`` or
            ``'train_dataloader.dataset.pipeline.1.scale'`` (list items by index).

    Returns:
        A sentence describing the problem, or None for an existing key or an acceptable new leaf.
    """
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
                close = _typo_of(part, siblings)
                if not close:
                    return None  # a new keyword argument: allowed
                return (f'{where} has no key {part!r}, and a new key so close to the existing '
                        f'{" / ".join(map(repr, close))} is almost certainly a typo. Did you '
                        f'mean {".".join(walked + [close[0]])!r}?')
            close = _suggest(part, siblings)
            hint = (f' Did you mean {".".join(walked + [close[0]])!r}?' if close else
                    f' Its keys are: {_listing(siblings)}.')
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
    """Refuse ``--cfg-options`` keys that do not fit ``cfg`` (see :func:`cfg_option_problem`).

    Args:
        cfg: The loaded config, before the options are merged.
        options: The parsed ``--cfg-options`` (``{dotted_key: value}``); None means none given.
        config_path: The config's path, named in the message.

    Raises:
        ConfigOptionError: Every problematic key, one sentence each, in one message.
    """
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
