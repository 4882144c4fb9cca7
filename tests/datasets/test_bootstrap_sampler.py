"""Tests of bootstrapping on hard images (DeepLabV3, Sec. 4.1): maths, scan + cache, samplers.

The samplers are tested on a generated VOC-format dataset read by mmseg's ``PascalVOCDataset``,
and built the way users reach them: through mmengine's ``Runner.build_dataloader`` and configs.
"""
import gc
import json
import os
import os.path as osp
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.dataset import ConcatDataset
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import deeplabv3_plugin  # noqa: F401  (registers the samplers)
from deeplabv3_plugin.datasets.samplers import (BootstrapSampler, InfiniteBootstrapSampler,
                                                expand_indices, max_epoch_length, repeat_factors)
from deeplabv3_plugin.datasets.samplers import bootstrap_sampler as sampler_module
from deeplabv3_plugin.datasets.samplers import hard_image_index
from deeplabv3_plugin.datasets.samplers.hard_image_index import resolve_class_indices
from mmseg.registry import DATA_SAMPLERS, DATASETS

from helpers.voc import voc_dataset_cfg, write_label, write_voc

HARD = ('bicycle', 'chair', 'diningtable', 'pottedplant', 'sofa')
# Class ids of each generated image (VOC ids: 2 bicycle, 9 chair, 11 diningtable, 16 pottedplant,
# 18 sofa are hard; 15 person, 12 dog, 7 car, 1 aeroplane are not).
LABELS = [[0, 15], [0, 9], [0, 2], [0, 12], [0, 11, 9], [0], [0, 16], [18], [0, 7], [0, 1]]
HARD_IMAGES = [1, 2, 4, 6, 7]


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / 'voc', LABELS)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / 'cache')


def build_voc(root, **kwargs):
    init_default_scope('mmseg')
    return DATASETS.build(voc_dataset_cfg(root, **kwargs))


def epoch_counts(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return Counter(sampler)


def _epoch_list(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


# ---------------------------------------------------------------------------- pure maths


def test_repeat_factors_marks_images_with_any_hard_class():
    class_sets = [{0, 15}, {0, 9}, {11}, set(), {9, 18}]
    assert repeat_factors(class_sets, (9, 11, 18), 2.0) == [1.0, 2.0, 2.0, 1.0, 2.0]
    assert repeat_factors(class_sets, (9, ), 1.0) == [1.0] * 5


@pytest.mark.parametrize('bad', [0.5, 0, -2, float('nan'), float('inf')])
def test_repeat_factor_below_one_is_refused(bad):
    with pytest.raises(ValueError, match=r'repeat_factor must be a finite number >= 1.*'
                       + repr(bad)[:3]):
        repeat_factors([{1}], (1, ), bad)


def test_expand_indices_integer_factors_are_exact():
    factors = [1.0, 3.0, 1.0, 2.0]
    for seed in range(3):
        indices = expand_indices(factors, torch.Generator().manual_seed(seed))
        assert indices == [0, 1, 1, 1, 2, 3, 3]
    assert max_epoch_length(factors) == 7


def test_expand_indices_fractional_frequency_and_bounded_length():
    # 7 hard images at 1.3: each gets its extra copy with probability 0.3; the epoch holds
    # 10 + 7 + floor/ceil(2.1) indices, never more than max_epoch_length.
    factors = [1.0] * 10 + [1.3] * 7
    assert max_epoch_length(factors) == 17 + 3
    generator = torch.Generator().manual_seed(0)
    totals, lengths, epochs = Counter(), Counter(), 4000
    for _ in range(epochs):
        indices = expand_indices(factors, generator)
        totals.update(indices)
        lengths[len(indices)] += 1
    assert set(lengths) <= {19, 20}
    for i in range(10):
        assert totals[i] == epochs
    for i in range(10, 17):
        assert totals[i] / epochs == pytest.approx(1.3, abs=0.03)


def test_expand_indices_same_seed_same_list():
    factors = [1.5, 1.0, 2.25, 1.75, 1.5]
    first = expand_indices(factors, torch.Generator().manual_seed(7))
    second = expand_indices(factors, torch.Generator().manual_seed(7))
    assert first == second


# ------------------------------------------------------------------ label maps and classes


def test_resolve_class_indices_by_name_index_and_mix():
    classes = ('background', 'bicycle', 'chair', 'sofa')
    assert resolve_class_indices(('sofa', 'chair'), classes) == (2, 3)
    assert resolve_class_indices((3, 'bicycle', 3), classes) == (1, 3)
    assert resolve_class_indices('chair', classes) == (2, )


def test_resolve_class_indices_bad_input():
    classes = ('background', 'chair')
    with pytest.raises(ValueError, match=r"\['sofaa'\] not a class.*'background', 'chair'"):
        resolve_class_indices(('sofaa', ), classes)
    with pytest.raises(ValueError, match=r'\[5\] not a class .*indices \[0, 2\)'):
        resolve_class_indices((5, ), classes)
    with pytest.raises(ValueError, match='none given'):
        resolve_class_indices((), classes)


# ------------------------------------------------------------------------- the samplers


def test_integer_factor_exact_counts(voc_root, cache_dir):
    dataset = build_voc(voc_root)
    sampler = BootstrapSampler(dataset, HARD, repeat_factor=3, seed=0, cache_dir=cache_dir)
    assert sampler.hard_classes == (2, 9, 11, 16, 18)
    assert sampler.hard_image_indices == HARD_IMAGES
    assert len(sampler) == sampler.epoch_length == 10 + 2 * 5
    for epoch in range(3):
        counts = epoch_counts(sampler, epoch)
        assert counts == Counter({i: 3 if i in HARD_IMAGES else 1 for i in range(10)})


def test_fractional_factor_expected_frequency(voc_root, cache_dir):
    dataset = build_voc(voc_root)
    sampler = BootstrapSampler(dataset, HARD, repeat_factor=1.5, seed=3, cache_dir=cache_dir)
    assert len(sampler) == max_epoch_length([1.5] * 5 + [1.0] * 5) == 13
    totals, epochs = Counter(), 600
    for epoch in range(epochs):
        indices = _epoch_list(sampler, epoch)
        assert len(indices) == len(sampler)  # fixed length, padded when the draw is short
        totals.update(indices)
    for i in range(10):
        expected = 1.5 if i in HARD_IMAGES else 1.0
        # one pad index every other epoch is spread over 13 positions: a bias of 0.5/13
        assert totals[i] / epochs == pytest.approx(expected, abs=0.12)


def test_same_seed_same_order_and_set_epoch_reshuffles(voc_root, cache_dir):
    dataset = build_voc(voc_root)
    a = BootstrapSampler(dataset, HARD, repeat_factor=2.5, seed=11, cache_dir=cache_dir)
    b = BootstrapSampler(dataset, HARD, repeat_factor=2.5, seed=11, cache_dir=cache_dir)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    unshuffled = BootstrapSampler(dataset, HARD, repeat_factor=2, shuffle=False, seed=0,
                                  cache_dir=cache_dir)
    assert list(unshuffled) == sorted(list(unshuffled))


def test_two_rank_shards_are_disjoint_and_cover_the_epoch(voc_root, cache_dir, monkeypatch):
    dataset = build_voc(voc_root)
    full = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=5, cache_dir=cache_dir)
    full.set_epoch(2)
    epoch = list(full)  # 15 indices: odd, so a world size of 2 pads one
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda rank=rank: (rank, 2))
        sampler = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=5, cache_dir=cache_dir)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(sampler) == 8 and sampler.total_size == 16
    assert [len(s) for s in shards] == [8, 8]
    # rank r holds positions r, r + 2, ... of the shared padded permutation
    padded = epoch + epoch[:1]
    assert shards[0] == padded[0::2] and shards[1] == padded[1::2]
    assert Counter(shards[0]) + Counter(shards[1]) == Counter(padded)


def test_infinite_sampler_streams_epochs_and_shards(voc_root, cache_dir, monkeypatch):
    dataset = build_voc(voc_root)
    finite = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=9, cache_dir=cache_dir)
    stream = []
    for epoch in range(3):
        stream += _epoch_list(finite, epoch)
    single = InfiniteBootstrapSampler(dataset, HARD, repeat_factor=2, seed=9, cache_dir=cache_dir)
    assert len(single) == 15
    iterator = iter(single)
    assert [next(iterator) for _ in range(45)] == stream
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda rank=rank: (rank, 2))
        sampler = InfiniteBootstrapSampler(dataset, HARD, repeat_factor=2, seed=9,
                                           cache_dir=cache_dir)
        iterator = iter(sampler)
        shards.append([next(iterator) for _ in range(22)])
    assert shards[0] == stream[0:44:2] and shards[1] == stream[1:44:2]


def test_infinite_sampler_new_iterator_continues_after_a_discarded_one(voc_root, cache_dir):
    """A DataLoader re-creates its sampler iterator (e.g. after validation without persistent
    workers): the first iterator, dropped and garbage-collected mid-stream, must not end the
    stream, and the next iterator continues where the first one stopped."""
    dataset = build_voc(voc_root)
    reference = iter(InfiniteBootstrapSampler(dataset, HARD, repeat_factor=2, seed=9,
                                              cache_dir=cache_dir))
    expected = [next(reference) for _ in range(20)]
    sampler = InfiniteBootstrapSampler(dataset, HARD, repeat_factor=2, seed=9, cache_dir=cache_dir)
    first = iter(sampler)
    head = [next(first) for _ in range(7)]
    del first
    gc.collect()
    second = iter(sampler)
    assert head + [next(second) for _ in range(13)] == expected


def _two_process_worker(rank, store, root, cache_dir, out_dir, reads):
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    try:
        dataset = build_voc(root)
        sampler = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=None, cache_dir=cache_dir)
        sampler.set_epoch(1)
        with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(dict(seed=sampler.seed, indices=list(sampler), reads=len(reads),
                           hard=sampler.hard_image_indices), f)
    finally:
        dist.destroy_process_group()


def test_real_two_process_gloo_run(voc_root, cache_dir, tmp_path, monkeypatch):
    """Two real ranks: seed synced from rank 0, class sets broadcast, shards complementary."""
    out_dir = str(tmp_path)
    reads = []  # each forked rank appends to its own copy
    real_read = hard_image_index.read_class_set
    monkeypatch.setattr(hard_image_index, 'read_class_set',
                        lambda path, *args: reads.append(path) or real_read(path, *args))
    mp.start_processes(_two_process_worker, args=(str(tmp_path / 'store'), voc_root, cache_dir,
                                                  out_dir, reads), nprocs=2, start_method='fork')
    results = [json.load(open(osp.join(out_dir, f'rank{r}.json'))) for r in (0, 1)]
    assert results[0]['seed'] == results[1]['seed']
    assert results[0]['hard'] == results[1]['hard'] == HARD_IMAGES
    assert [r['reads'] for r in results] == [10, 0]  # rank 0 scans, rank 1 receives
    assert len(results[0]['indices']) == len(results[1]['indices']) == 8
    reference = BootstrapSampler(build_voc(voc_root), HARD, repeat_factor=2,
                                 seed=results[0]['seed'], cache_dir=cache_dir)
    epoch = _epoch_list(reference, 1)
    padded = epoch + epoch[:1]
    assert results[0]['indices'] == padded[0::2] and results[1]['indices'] == padded[1::2]


# ----------------------------------------------------------------------------- the cache


def test_cache_is_reused_without_reading_label_files(voc_root, cache_dir, monkeypatch):
    dataset = build_voc(voc_root)
    reads = []
    real_read = hard_image_index.read_class_set
    monkeypatch.setattr(hard_image_index, 'read_class_set',
                        lambda path, *args: reads.append(path) or real_read(path, *args))
    first = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert len(reads) == 10
    assert len(os.listdir(cache_dir)) == 1
    # Second run, same files: no label map is decoded. Overwrite one map with garbage of the same
    # size and restore its mtime: it would fail to decode if it were read again.
    reads.clear()
    victim = dataset.get_data_info(1)['seg_map_path']
    stat = os.stat(victim)
    with open(victim, 'wb') as f:
        f.write(b'\0' * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert reads == []
    assert second.hard_image_indices == first.hard_image_indices == HARD_IMAGES


def test_cache_invalidation_by_changed_file_and_file_list(voc_root, cache_dir, monkeypatch):
    dataset = build_voc(voc_root)
    BootstrapSampler(dataset, HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    reads = []
    real_read = hard_image_index.read_class_set
    monkeypatch.setattr(hard_image_index, 'read_class_set',
                        lambda path, *args: reads.append(path) or real_read(path, *args))
    # image 0 gets a sofa: only its file is re-read, and it becomes hard
    changed = dataset.get_data_info(0)['seg_map_path']
    write_label(changed, [0, 18])
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    sampler = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert reads == [changed]
    assert sampler.hard_image_indices == [0] + HARD_IMAGES
    # a different file list (another split) is a different cache file: every file is read
    reads.clear()
    with open(osp.join(voc_root, 'ImageSets/Segmentation/val.txt'), 'w') as f:
        f.write('000001\n000003\n')
    val = build_voc(voc_root, split='val')
    sampler = BootstrapSampler(val, HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert len(reads) == 2 and sampler.hard_image_indices == [0]
    assert len(os.listdir(cache_dir)) == 2


# ---------------------------------------------------- label mapping through real datasets


def test_concat_dataset_reads_every_part(tmp_path, cache_dir):
    """VOC + SBD style: two VOC-layout parts concatenated; indices continue into the second."""
    first = build_voc(write_voc(tmp_path / 'a', LABELS))
    second = build_voc(write_voc(tmp_path / 'b', [[0, 15], [0, 9], [0, 18, 15]]))
    sampler = BootstrapSampler(ConcatDataset([first, second]), HARD, repeat_factor=2, seed=0,
                               cache_dir=cache_dir)
    assert sampler.hard_image_indices == HARD_IMAGES + [11, 12]
    assert len(sampler) == 13 + 7


def test_class_subset_label_map_is_respected(tmp_path, cache_dir):
    # A class subset makes mmseg set a label_map (old id -> new id); chair becomes 1 and sofa is
    # dropped (255), so an image holding only a sofa is not hard for this dataset.
    dataset = build_voc(write_voc(tmp_path / 'b', [[0, 9], [0, 15], [0, 18], [1]]),
                        metainfo=dict(classes=('background', 'chair', 'person', 'aeroplane')))
    assert dataset.label_map[9] == 1 and dataset.label_map[18] == 255
    sampler = BootstrapSampler(dataset, ('chair', ), repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert sampler.hard_classes == (1, ) and sampler.hard_image_indices == [0]
    # by index, after mapping: aeroplane is 3 in the subset (raw id 1)
    sampler = BootstrapSampler(dataset, (3, ), repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert sampler.hard_image_indices == [3]


def test_reduce_zero_label_is_respected(tmp_path, cache_dir):
    # reduce_zero_label: raw 0 is ignored and raw v becomes v - 1, so raw 10 (cow) is id 9 and
    # raw 9 (chair) is id 8.
    reduced = build_voc(write_voc(tmp_path / 'c', [[0, 10], [0, 9], [0]]), reduce_zero_label=True)
    sampler = BootstrapSampler(reduced, (9, ), repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert sampler.hard_image_indices == [0]
    with pytest.warns(UserWarning, match='no training image contains'):
        sampler = BootstrapSampler(reduced, (0, ), repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert sampler.hard_image_indices == []  # raw 0 became the ignore index, raw 1 is absent


# -------------------------------------------------------------------------- as users do


def test_built_by_runner_build_dataloader(voc_root, cache_dir):
    init_default_scope('mmseg')
    loader = Runner.build_dataloader(
        dict(batch_size=3, num_workers=0, dataset=voc_dataset_cfg(voc_root),
             sampler=dict(type='BootstrapSampler', hard_classes=HARD, repeat_factor=2.0,
                          shuffle=True, cache_dir=cache_dir)),
        seed=123)
    assert isinstance(loader.sampler, BootstrapSampler)
    assert loader.sampler.seed == 123
    assert len(loader) == 5  # 15 indices, batch 3
    counts = Counter(i for batch in loader.batch_sampler for i in batch)
    assert counts == Counter({i: 2 if i in HARD_IMAGES else 1 for i in range(10)})
    assert DATA_SAMPLERS.get('InfiniteBootstrapSampler') is InfiniteBootstrapSampler


def test_child_config_override_merges_base_sampler_keys(voc_root, cache_dir, tmp_path):
    base = tmp_path / 'base.py'
    base.write_text(f'train_dataloader = dict(batch_size=2, num_workers=0, '
                    f'dataset={voc_dataset_cfg(voc_root)!r}, '
                    f"sampler=dict(type='InfiniteSampler', shuffle=False))\n")
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './base.py'\n"
                     "custom_imports = dict(imports=['deeplabv3_plugin'], "
                     'allow_failed_imports=False)\n'
                     "train_dataloader = dict(sampler=dict(type='InfiniteBootstrapSampler', "
                     f'hard_classes={HARD!r}, repeat_factor=3, cache_dir={cache_dir!r}))\n')
    cfg = Config.fromfile(str(child))
    assert cfg.train_dataloader.sampler.shuffle is False  # merged in from the base
    init_default_scope('mmseg')
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    assert isinstance(loader.sampler, InfiniteBootstrapSampler)
    assert len(loader.sampler) == 20
    iterator = iter(loader.sampler)
    first_epoch = [next(iterator) for _ in range(20)]
    assert first_epoch == sorted(first_epoch)  # shuffle=False reached the sampler


def test_logs_a_summary_once(voc_root, cache_dir, tmp_path):
    log_file = str(tmp_path / 'run.log')
    MMLogger.get_instance('test_bootstrap_summary', log_file=log_file)
    BootstrapSampler(build_voc(voc_root), HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    text = open(log_file).read()
    summary = [line for line in text.splitlines() if 'contain a hard class' in line]
    assert len(summary) == 1
    assert ('5 of 10 images contain a hard class (bicycle: 1, chair: 2, diningtable: 1, '
            'pottedplant: 1, sofa: 1); repeat_factor=2; epoch length 10 -> 15' in summary[0])


# ------------------------------------------------------------------------------ bad input


def test_unknown_class_name_lists_known_classes(voc_root, cache_dir):
    with pytest.raises(ValueError, match=r"\['sofas'\] not a class of the dataset.*'sofa'"):
        BootstrapSampler(build_voc(voc_root), ('chair', 'sofas'), seed=0, cache_dir=cache_dir)


def test_factor_below_one_names_the_argument(voc_root, cache_dir):
    with pytest.raises(ValueError, match=r'repeat_factor must be .*>= 1.*got 0\.5'):
        BootstrapSampler(build_voc(voc_root), HARD, repeat_factor=0.5, seed=0,
                         cache_dir=cache_dir)


def test_unreadable_label_file_is_named(voc_root, cache_dir):
    dataset = build_voc(voc_root)
    corrupt = dataset.get_data_info(3)['seg_map_path']
    with open(corrupt, 'wb') as f:
        f.write(b'not a png')
    with pytest.raises(OSError, match=r'cannot read label map .*000003\.png'):
        BootstrapSampler(dataset, HARD, seed=0, cache_dir=cache_dir)
    os.remove(corrupt)
    with pytest.raises(OSError, match=r'cannot read label map .*000003\.png'):
        BootstrapSampler(dataset, HARD, seed=0, cache_dir=cache_dir)


def test_no_hard_image_is_a_warning_not_an_error(tmp_path, cache_dir):
    dataset = build_voc(write_voc(tmp_path / 'easy', [[0, 15], [0, 12], [0]]))
    with pytest.warns(UserWarning, match=r"no training image contains any of the hard classes"):
        sampler = BootstrapSampler(dataset, HARD, repeat_factor=2, seed=0, cache_dir=cache_dir)
    assert sampler.hard_image_indices == [] and sorted(sampler) == [0, 1, 2]
