"""Which classes each training image holds, read once from its label map and cached.

Bootstrapping (DeepLabV3, Sec. 4.1) needs, per image, whether it holds a hard class; only the
label map says so. Labels are read by mmseg's ``LoadAnnotations``, so ``reduce_zero_label`` and a
class subset's ``label_map`` act exactly as in training; the class sets are cached as JSON, each
entry checked against the file's size and mtime.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.logging import print_log
from mmengine.utils import track_progress
from mmseg.datasets.transforms import LoadAnnotations

#: mmseg's ignore index: ``reduce_zero_label`` and ``label_map`` send dropped labels here.
IGNORE_INDEX = 255
#: Bumped whenever the meaning of the cache content changes.
CACHE_FORMAT = 2


def read_class_set(path: str, reduce_zero_label: bool = False,
                   label_map: Optional[dict] = None) -> FrozenSet[int]:
    """Class ids training sees in one label map (mmseg's ``LoadAnnotations``, ignore removed)."""
    try:
        label = LoadAnnotations()(dict(seg_map_path=path, reduce_zero_label=reduce_zero_label,
                                       label_map=label_map, seg_fields=[]))['gt_seg_map']
    except Exception as error:  # noqa: BLE001  (decoders raise many types; re-raise with the path)
        raise OSError(f'cannot read label map {path!r} needed by the bootstrapping sampler: '
                      f'{type(error).__name__}: {error}') from error
    if label.ndim != 2:
        raise OSError(f'label map {path!r} is not a single-channel image of class ids (decoded '
                      f'shape {label.shape}); expected a PNG of class indices as in VOC')
    return frozenset(np.unique(label).tolist()) - {IGNORE_INDEX}


def _load_cache(path: str) -> Dict[str, dict]:
    """Entries of a cache file; ``{}`` when absent, unreadable or of another format."""
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
        return content['files'] if content.get('format') == CACHE_FORMAT else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def _write_cache(path: str, files: Dict[str, dict]) -> None:
    """Atomically (temp file + rename): a concurrent reader never sees half a file."""
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.tmp')
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(dict(format=CACHE_FORMAT, files=files), f)
        os.replace(tmp, path)
    except OSError as error:  # a read-only cache dir must not stop training
        print_log(f'Could not write the hard-image cache {path}: {error}', logger='current',
                  level='WARNING')


def dataset_class_sets(dataset, cache_dir: Optional[str] = None) -> List[FrozenSet[int]]:
    """For every index of ``dataset``, the class ids of its label map after label mapping.

    Reads ``get_data_info(i)`` (``seg_map_path``, ``reduce_zero_label``, ``label_map``), which
    mmseg datasets, ``ConcatDataset`` and ``RepeatDataset`` all provide.
    """
    files: Dict[str, dict] = {}
    keys = []  # one per index: the label map and its label mapping
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        if not info.get('seg_map_path'):
            raise KeyError(f'dataset sample {i} ({info.get("img_path")!r}) has no seg_map_path; '
                           'the bootstrapping sampler needs the label map of every training image')
        path = osp.abspath(str(info['seg_map_path']))  # independent of the working directory
        args = [path, bool(info.get('reduce_zero_label')),
                sorted((info.get('label_map') or {}).items())]
        keys.append(json.dumps(args))
        try:
            stat = os.stat(path)
        except OSError as error:
            raise OSError(f'cannot read label map {path!r} needed by the bootstrapping sampler: '
                          f'{error.strerror}') from error
        files[keys[-1]] = dict(args=args, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    digest = hashlib.sha1('\n'.join(keys).encode('utf-8')).hexdigest()[:20]
    cache_dir = cache_dir or osp.join(os.environ.get('XDG_CACHE_HOME') or
                                      osp.expanduser('~/.cache'), 'deeplabv3_plugin')
    cache_file = osp.join(cache_dir, f'hard_image_index_{digest}.json')
    cached = _load_cache(cache_file)
    for key, entry in files.items():
        old = cached.get(key, {})
        if (old.get('size'), old.get('mtime_ns')) == (entry['size'], entry['mtime_ns']):
            entry['classes'] = old['classes']
    stale = [key for key, entry in files.items() if 'classes' not in entry]
    if stale:
        print_log(f'Bootstrapping: reading {len(stale)} of {len(files)} label maps to find hard '
                  f'images (cache: {cache_file})', logger='current')
        found = track_progress(_read_entry, [files[key]['args'] for key in stale])
        for key, classes in zip(stale, found):
            files[key]['classes'] = sorted(classes)
        _write_cache(cache_file, files)
    return [frozenset(files[key]['classes']) for key in keys]


def _read_entry(args: list) -> FrozenSet[int]:
    return read_class_set(args[0], args[1], dict(args[2]) or None)


def resolve_class_indices(hard_classes: Union[str, int, Sequence[Union[str, int]]],
                          class_names: Optional[Sequence[str]]) -> Tuple[int, ...]:
    """Sorted class indices of ``hard_classes``, given by name (in the dataset's
    ``metainfo['classes']``) or by index; a single one is accepted too."""
    names = list(class_names or ())
    hard = (hard_classes, ) if isinstance(hard_classes, (str, int)) else tuple(hard_classes)
    num = len(names) or float('inf')  # no class names: any index >= 0
    unknown = [c for c in hard if not (c in names or (isinstance(c, int) and 0 <= c < num))]
    if unknown or not hard:
        raise ValueError(f'hard_classes={hard_classes!r}: {unknown or "none given"} not a class '
                         f'of the dataset; expected names or indices [0, {len(names)}) of its '
                         f"classes {names}, e.g. ('bicycle', 'chair', 'diningtable', "
                         "'pottedplant', 'sofa') on VOC")
    return tuple(sorted({names.index(c) if isinstance(c, str) else int(c) for c in hard}))
