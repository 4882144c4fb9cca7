"""Checks on the files and ``--cfg-options`` keys the tools are given (mmengine's
``merge_from_dict`` would silently add ``model.backbone.dept=50`` next to ``depth``)."""
import difflib
import os.path as osp
from typing import Any, Mapping, Optional

from mmengine.config import Config

from .errors import UserInputError, listing

__all__ = ['check_cfg_options', 'check_file_exists', 'cfg_option_problem', 'load_config']

#: A new key this similar to a sibling is a typo: dept/depth 0.89, test_output_stride (0.84) passes.
TYPO_RATIO = 0.85


def check_file_exists(path: str, what: str, expected: str) -> None:
    """Refuse ``path`` unless it is a file; ``expected`` (what a valid one is) ends the message."""
    if not osp.isfile(path):
        problem = 'is a directory, not a file' if osp.isdir(path) else 'does not exist'
        raise UserInputError(f'{what} {path!r} {problem} (resolved to {osp.abspath(path)!r}). '
                             f'{expected}')


def load_config(path: str) -> Config:
    """``Config.fromfile`` with a clear error for a missing config file."""
    check_file_exists(path, 'config file', 'Expected the path of an mmseg config (.py), e.g. '
                      'configs/deeplabv3/<name>.py.')
    return Config.fromfile(path)


def cfg_option_problem(cfg: Mapping[str, Any], key: str) -> Optional[str]:
    """Why the dotted ``key`` does not fit ``cfg``, or None for an existing key or a new leaf
    with no look-alike sibling (a new keyword argument, e.g. ``model.test_output_stride``)."""
    node: Any = cfg
    parts = key.split('.')
    for depth, part in enumerate(parts):
        walked = parts[:depth]
        where = repr('.'.join(walked)) if walked else 'the top level of the config'
        if isinstance(node, Mapping):
            if part in node or part == '_delete_':  # mmengine's "replace, not merge" marker
                node = node.get(part)
                continue
            siblings = [str(k) for k in node]
            if depth == len(parts) - 1:
                close = difflib.get_close_matches(part, siblings, n=3, cutoff=TYPO_RATIO)
                if not close:
                    return None  # a new keyword argument
                return (f'{where} has no key {part!r}, and a new key so close to the existing '
                        f'{" / ".join(map(repr, close))} is almost certainly a typo. Did you '
                        f'mean {".".join(walked + [close[0]])!r}?')
            close = difflib.get_close_matches(part, siblings, n=1, cutoff=0.6)
            hint = (f' Did you mean {".".join(walked + [close[0]])!r}?' if close else
                    f' Its keys are: {listing(siblings, 15)}.')
            return (f'{where} has no key {part!r}, so {key!r} has no parent to be set in '
                    f'(mmengine would silently create it).{hint}')
        if not isinstance(node, (list, tuple)):
            return (f'{where} is {node!r} (a {type(node).__name__}), not a dict or list, so it '
                    f'has no key {part!r}. Set {".".join(walked)!r} itself instead.')
        if not (part.isdigit() and int(part) < len(node)):
            return (f'{where} is a list of {len(node)} items, so {part!r} is not a valid index '
                    f'(expected 0..{len(node) - 1}).')
        node = node[int(part)]
    return None


def check_cfg_options(cfg: Config, options: Optional[Mapping[str, Any]],
                      config_path: str = '') -> None:
    """Refuse, naming each, the ``--cfg-options`` keys that do not fit ``cfg`` (before merging)."""
    as_dict = cfg.to_dict() if options else {}
    problems = [f'{key!r}: {problem}' for key in options or ()
                if (problem := cfg_option_problem(as_dict, key)) is not None]
    if problems:
        source = f' of config {config_path!r}' if config_path else ''
        raise UserInputError(
            f'--cfg-options: {len(problems)} key(s) do not fit the keys{source}. '
            + ' '.join(problems) + ' Keys are dotted paths into the config, list items by index '
            '(e.g. train_dataloader.dataset.pipeline.1.scale); a new section needs a config.')
