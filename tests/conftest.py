"""Shared by every test: exported graphs go to one cache per test session, never the user's."""
import pytest

from deeplabv3_plugin.deploy.artifacts import CACHE_ENV


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
    from tools_testutils import make_voc_dataset, tool_env
    return tool_env(make_voc_dataset(str(tmp_path_factory.mktemp('voc'))))


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, data_env):
    """``(work_dir, checkpoint, output)`` of the session's one finished 4-iteration
    ``tools/train.py`` run of ``tests/configs/tools_tiny.py``, shared by every test that needs a
    trained checkpoint; tests may add files to ``work_dir``, never change the run's."""
    import os.path as osp

    from tools_testutils import check_ok, run, train_cmd
    work_dir = str(tmp_path_factory.mktemp('train'))
    proc = check_ok(run(train_cmd(work_dir), data_env))
    return work_dir, osp.join(work_dir, 'iter_4.pth'), proc.stdout + proc.stderr
