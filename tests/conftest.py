"""Shared by every test: one engine cache, one tool environment and one tiny training run per
test session; the order and threads of a run spread over ``pytest -n`` workers."""
import collections
import os

import pytest
import torch

from deeplabv3_plugin.deploy.artifacts import CACHE_ENV


if os.environ.get('PYTEST_XDIST_WORKER'):
    # `make test` runs one worker per core: each worker, and every tool it starts, on one thread
    # (OpenMP threads of two processes that outnumber the cores spin against each other).
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The files with the most seconds of slow end-to-end tests first (``slow(seconds=...)``,
    else 10 each), so that the workers start on the long tool runs and finish on the quick unit
    tests: ``pytest -n`` hands out whole files."""
    weight = collections.Counter()
    for item in items:
        marker = item.get_closest_marker('slow')
        if marker is not None:
            weight[item.path] += marker.kwargs.get('seconds', 10)
    items.sort(key=lambda item: -weight[item.path])


@pytest.fixture(scope='module')
def one_thread():
    """Tiny tensors: OpenMP threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session', autouse=True)
def engine_cache(tmp_path_factory):
    """``$DEEPLABV3_PLUGIN_CACHE`` for this session (tool subprocesses inherit it)."""
    root = tmp_path_factory.mktemp('engine_cache')
    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(root))
    yield root
    patch.undo()


@pytest.fixture(scope='session')
def data_env(tmp_path_factory):
    """The environment of tool subprocesses, with a generated 40x40 VOC-layout dataset."""
    from helpers.tools import make_voc_dataset, tool_env
    return tool_env(make_voc_dataset(str(tmp_path_factory.mktemp('voc'))))


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, data_env):
    """``(work_dir, checkpoint, output)`` of the session's one finished 4-iteration
    ``tools/train.py`` run of ``tests/configs/tools_tiny.py``, shared by every test that needs a
    trained checkpoint; tests may add files to ``work_dir``, never change the run's."""
    import os.path as osp

    from helpers.tools import check_ok, run, train_cmd
    work_dir = str(tmp_path_factory.mktemp('train'))
    proc = check_ok(run(train_cmd(work_dir), data_env))
    return work_dir, osp.join(work_dir, 'iter_4.pth'), proc.stdout + proc.stderr
