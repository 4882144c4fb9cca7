"""Child process of the checkpoint attack tests: load each file given, one JSON line per file.

Run as ``python _load_checkpoints_child.py FILE...``. Each load goes through mmengine's
``CheckpointLoader`` (the path ``load_from``, ``resume`` and ``tools/test.py`` take) with the
plugin's opt-in runtime imported. A ``start`` line is flushed before each load, so a parent that
sees the process die by a signal knows which file killed it.
"""
import json
import sys

from mmengine.runner.checkpoint import CheckpointLoader

import deeplabv3_plugin.runtime  # noqa: F401  (the safe loader)


def main() -> None:
    for path in sys.argv[1:]:
        print(json.dumps(dict(start=path)), flush=True)
        try:
            loaded = CheckpointLoader.load_checkpoint(path, map_location='cpu')
            result = dict(status='loaded', type=type(loaded).__name__)
        except Exception as err:  # the test asserts which errors are acceptable
            result = dict(status='error', error=type(err).__name__, message=str(err))
        print(json.dumps(dict(file=path, **result)), flush=True)


if __name__ == '__main__':
    main()
