"""Which classes each training image contains, read once from its label map and cached.

Bootstrapping (DeepLabV3, Sec. 4.1) needs, per training image, whether it holds a hard class; the
only faithful source is the label map itself. The *raw* set of pixel values of each file is cached
as JSON (keyed by path, size and mtime; the file name hashes the ordered path list), and the
dataset's ``reduce_zero_label``/``label_map`` are applied afterwards with mmseg's semantics
(value-wise maps, so mapping the set equals the set of mapped pixels). One cache thus serves every
config over the same files.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmengine.fileio import get as read_bytes
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ..transforms.loading import map_labels

#: mmseg's ignore index: ``reduce_zero_label`` and ``label_map`` send dropped labels here.
IGNORE_INDEX = 255
#: Bumped whenever the meaning of the cache content changes.
CACHE_FORMAT = 1


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/deeplabv3_plugin``, else ``~/.cache/deeplabv3_plugin``."""
    root = os.environ.get('XDG_CACHE_HOME') or osp.join(osp.expanduser('~'), '.cache')
    return osp.join(root, 'deeplabv3_plugin')


def read_label_values(path: str) -> FrozenSet[int]:
    """The distinct raw pixel values of one label map, decoded like mmseg's ``LoadAnnotations``
    (palette PNGs give their indices); OSError naming ``path`` when it cannot be decoded."""
    try:
        content = read_bytes(path)
        label = mmcv.imfrombytes(content, flag='unchanged', backend='pillow')
    except Exception as error:  # noqa: BLE001  (decoders raise many types; re-raise with the path)
        raise OSError(f'cannot read label map {path!r} needed by the bootstrapping sampler: '
                      f'{type(error).__name__}: {error}') from error
    if label is None or label.ndim not in (2, 3) or (label.ndim == 3 and label.shape[2] != 1):
        shape = None if label is None else label.shape
        raise OSError(f'label map {path!r} is not a single-channel image of class ids '
                      f'(decoded shape {shape}); expected a PNG of class indices as in VOC')
    return frozenset(int(v) for v in np.unique(label.astype(np.uint8)))


def apply_label_transform(values: FrozenSet[int], reduce_zero_label: bool,
                          label_map: Optional[Mapping[int, int]]) -> FrozenSet[int]:
    """Class ids training sees for an image whose label map holds ``values`` (ignore removed)."""
    values = map_labels(np.array(sorted(values), np.uint8), reduce_zero_label, label_map)
    values = frozenset(int(v) for v in values)
    return values - {IGNORE_INDEX}


def _signature(path: str) -> Tuple[int, int]:
    """(size, mtime_ns) of a label map; raises naming the file when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise OSError(f'cannot read label map {path!r} needed by the bootstrapping sampler: '
                      f'{error.strerror}') from error
    return stat.st_size, stat.st_mtime_ns


def cache_path(paths: Sequence[str], cache_dir: str) -> str:
    """The cache file of an ordered list of label-map paths (a hash of the list names it)."""
    digest = hashlib.sha1('\n'.join(paths).encode('utf-8')).hexdigest()[:20]
    return osp.join(cache_dir, f'hard_image_index_{digest}.json')


def _load_cache(path: str) -> Dict[str, dict]:
    """Entries of a cache file, or ``{}`` when absent, unreadable or of another format."""
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        print_log(f'Ignoring unreadable hard-image cache {path}: {error}', logger='current',
                  level='WARNING')
        return {}
    if not isinstance(content, dict) or content.get('format') != CACHE_FORMAT:
        return {}
    return content.get('files', {})


def _write_cache(path: str, files: Dict[str, dict]) -> None:
    """Write atomically (temp file + rename) so a concurrent reader never sees half a file."""
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.tmp')
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(dict(format=CACHE_FORMAT, files=files), f)
        os.replace(tmp, path)
    except OSError as error:  # a read-only cache dir must not stop training
        print_log(f'Could not write the hard-image cache {path}: {error}; the label maps will '
                  'be scanned again next run', logger='current', level='WARNING')


def scan_label_values(paths: Sequence[str], cache_dir: Optional[str] = None,
                      show_progress: bool = True) -> Dict[str, FrozenSet[int]]:
    """Path -> raw label values of every file in ``paths``, from the cache where still valid.

    ``cache_dir`` defaults to :func:`default_cache_dir`; OSError names an unreadable label map.
    """
    cache_file = cache_path(paths, cache_dir or default_cache_dir())
    cached = _load_cache(cache_file)
    files: Dict[str, dict] = {}
    stale: List[str] = []
    for path in dict.fromkeys(paths):  # unique, in order
        size, mtime_ns = _signature(path)
        entry = cached.get(path)
        if entry and entry.get('size') == size and entry.get('mtime_ns') == mtime_ns:
            files[path] = entry
        else:
            files[path] = dict(size=size, mtime_ns=mtime_ns)
            stale.append(path)
    if stale:
        print_log(f'Bootstrapping: reading {len(stale)} of {len(files)} label maps to find hard '
                  f'images (cache: {cache_file})', logger='current')
        bar = ProgressBar(len(stale)) if show_progress else None
        for path in stale:
            files[path]['values'] = sorted(read_label_values(path))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.file.write('\n')
        _write_cache(cache_file, files)
    else:
        print_log(f'Bootstrapping: hard-image index of {len(files)} label maps loaded from '
                  f'{cache_file}', logger='current')
    return {path: frozenset(entry['values']) for path, entry in files.items()}


def dataset_class_sets(dataset, cache_dir: Optional[str] = None,
                       show_progress: bool = True) -> List[FrozenSet[int]]:
    """For every index of ``dataset``, the class ids its label map holds after label mapping.

    Any mmengine dataset with ``get_data_info(i)['seg_map_path']`` works, ``ConcatDataset`` and
    ``RepeatDataset`` included (each sample keeps its own ``reduce_zero_label``/``label_map``).
    """
    get_data_info = getattr(dataset, 'get_data_info', None)
    if get_data_info is None:
        raise TypeError('the bootstrapping sampler reads label maps through '
                        f'dataset.get_data_info(i)[\'seg_map_path\'], but {type(dataset).__name__} '
                        'has no get_data_info; use an mmseg/mmengine dataset')
    infos = []
    for i in range(len(dataset)):
        info = get_data_info(i)
        if not info.get('seg_map_path'):
            raise KeyError(f'dataset sample {i} ({info.get("img_path")!r}) has no seg_map_path; '
                           'the bootstrapping sampler needs the label map of every training image')
        # absolute, so that the cache key does not depend on the working directory
        infos.append((osp.abspath(str(info['seg_map_path'])),
                      bool(info.get('reduce_zero_label', False)), info.get('label_map')))
    values = scan_label_values([path for path, _, _ in infos], cache_dir, show_progress)
    return [apply_label_transform(values[path], reduce, label_map)
            for path, reduce, label_map in infos]


def resolve_class_indices(hard_classes: Union[str, int, Sequence[Union[str, int]]],
                          class_names: Optional[Sequence[str]]) -> Tuple[int, ...]:
    """Sorted class indices of ``hard_classes``, given by name (from ``class_names``, the
    dataset's ``metainfo['classes']``), by index, or mixed; a single one is accepted too."""
    if isinstance(hard_classes, (str, int)):
        hard_classes = (hard_classes, )
    hard_classes = tuple(hard_classes)
    if not hard_classes:
        raise ValueError('hard_classes is empty: name at least one class whose images are '
                         "repeated, e.g. ('bicycle', 'chair', 'diningtable', 'pottedplant', "
                         "'sofa') on VOC, or use DefaultSampler")
    names = list(class_names) if class_names is not None else None
    indices = set()
    for entry in hard_classes:
        if isinstance(entry, str):
            if names is None:
                raise ValueError(f'hard class {entry!r} is given by name but the dataset has no '
                                 "metainfo['classes']; give class indices instead")
            if entry not in names:
                raise ValueError(f'hard class {entry!r} is not a class of the dataset; known '
                                 f'classes: {names}')
            indices.add(names.index(entry))
        elif isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            if entry < 0 or (names is not None and entry >= len(names)):
                limit = f'[0, {len(names)})' if names is not None else '>= 0'
                raise ValueError(f'hard class index {entry} is out of range; expected {limit}')
            indices.add(int(entry))
        else:
            raise TypeError(f'hard class {entry!r} must be a class name (str) or index (int), '
                            f'got {type(entry).__name__}')
    return tuple(sorted(indices))
