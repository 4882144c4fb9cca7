"""Config text stored in a checkpoint, made inert: nothing mmengine does with it runs it.

mmengine executes a checkpoint's config text as Python in two places (0.10.7):

* ``Runner.resume`` runs ``Config.fromstring(meta['config'], '.py')`` (the key mmcv-era
  checkpoints carry) only to compare ``len(gpu_ids)`` with the current world size;
* ``BaseInferencer`` with ``model=None`` runs ``message_hub['runtime_info']['cfg']``, else
  ``meta['cfg']`` (what mmengine's Runner saves), to build the model.

:func:`inert_meta` keeps the one fact resume needs and drops the text: ``meta['config']`` becomes
``gpu_ids = [0, 1, ...]`` written here from integers read without executing anything (so
mmengine's GPU-count check and its error or ``auto_scale_lr`` message are unchanged), and
``meta['cfg']`` and ``runtime_info['cfg']`` are removed (an inferencer then asks for the config
file). The plugin's checkpoint routes apply it to every checkpoint they load.
"""
import ast
import re
import warnings
from typing import Any, List, Optional

__all__ = ['inert_meta']

#: A top-level ``gpu_ids = `` line of a ``Config.pretty_text`` (later lines win, as in Python).
_GPU_IDS_LINE = re.compile(r'^gpu_ids[ \t]*=[ \t]*', re.MULTILINE)
#: Its value as mmcv/mmseg 0.x wrote it: ``range(0, 8)``, a list/tuple of ints or ``None``.
_GPU_IDS_VALUE = re.compile(r'range\([^()]*\)|\[[^\[\]]*\]|\([^()]*\)|None\b')
_MAX_VALUE_CHARS = 4096  # 800 GPUs as a list; range() for any number
_MAX_GPUS = 2**16


def _int(node: ast.expr) -> int:
    if not (isinstance(node, ast.Constant) and type(node.value) is int):
        raise ValueError('not an integer literal')
    return node.value


def _read_gpu_ids(text: str) -> Optional[List[int]]:
    """``gpu_ids`` of a config text, parsed as data; ``None`` if it has none (or ``None``);
    ``ValueError`` if it is written in any other way than ints or a ``range`` of ints."""
    line = None
    for line in _GPU_IDS_LINE.finditer(text):  # linear in the text; only the last one counts
        pass
    if line is None:
        return None
    value = _GPU_IDS_VALUE.match(text, line.end(), line.end() + _MAX_VALUE_CHARS)
    if value is None:
        raise ValueError('not a list, tuple or range()')
    node = ast.parse(value.group(), mode='eval').body  # parsed, never compiled nor run
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, (ast.List, ast.Tuple)):
        ids = [_int(element) for element in node.elts]
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
          and node.func.id == 'range' and not node.keywords and 1 <= len(node.args) <= 3):
        numbers = range(*[_int(arg) for arg in node.args])
        if len(numbers) > _MAX_GPUS:
            raise ValueError(f'{len(numbers)} GPUs')
        ids = list(numbers)
    else:
        raise ValueError('not a list, tuple or range() of integers')
    return ids


def inert_meta(checkpoint: Any) -> Any:
    """Replace the config text in ``checkpoint`` (changed in place, returned) by inert data.

    ``meta['config']``: ``'gpu_ids = [...]\\n'`` if the text sets ``gpu_ids`` to integers,
    else removed (with a warning when ``gpu_ids`` is there in another form: mmengine's GPU-count
    check is then skipped); ``meta['cfg']`` and ``message_hub['runtime_info']['cfg']``: removed.
    Anything that is not a dict is left as it is. Applying it twice changes nothing more.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict):
        meta.pop('cfg', None)
        text = meta.pop('config', None)
        try:
            gpu_ids = _read_gpu_ids(text) if isinstance(text, str) else None
        except (ValueError, SyntaxError, OverflowError) as err:
            gpu_ids = None
            warnings.warn(f"The checkpoint's meta['config'] sets gpu_ids in a form read only by "
                          f'running it ({err}); it is not run, so the check of the GPU count '
                          'against the resumed run is skipped.')
        if gpu_ids is not None:
            meta['config'] = f'gpu_ids = {gpu_ids!r}\n'
    hub = checkpoint.get('message_hub') if isinstance(checkpoint, dict) else None
    runtime_info = hub.get('runtime_info') if isinstance(hub, dict) else None
    if isinstance(runtime_info, dict):
        runtime_info.pop('cfg', None)
    return checkpoint
