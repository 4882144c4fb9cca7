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
