"""Fast, repeated ``Config.fromfile`` of the repo's configs in tests (not a test module).

mmengine resolves each ``mmseg::`` base of a config by parsing all ~100 YAML metafiles of the
installed mmseg (about 0.7 s a time on the CI machine). The answer is the same for the whole
process, so :func:`cached_scoped_bases` memoises mmengine's lookup while the tests run; the
configs are still parsed and merged exactly as ``tools/train.py`` does.
"""
import contextlib
import functools

import mmengine.config.config as mmengine_config


@contextlib.contextmanager
def cached_scoped_bases():
    """Memoise mmengine's ``package::path`` base lookup (results and its ValueError)."""
    original = mmengine_config._get_external_cfg_path

    @functools.lru_cache(maxsize=None)
    def cached(package_path, cfg_file):
        try:
            return original(package_path, cfg_file), None
        except ValueError as error:  # base configs are not in the metafiles: mmengine falls back
            return None, error

    def lookup(package_path, cfg_file):
        path, error = cached(package_path, cfg_file)
        if error is not None:
            raise error
        return path

    mmengine_config._get_external_cfg_path = lookup
    try:
        yield
    finally:
        mmengine_config._get_external_cfg_path = original
