"""A warm process that runs the repo's tools for the tests, each in a fork of itself.

Every ``python tools/<tool>.py`` a test starts would spend about 4 s of CPU importing torch,
mmengine and mmseg before the tool does anything. This server imports them once; for each request
it forks, and the child runs the script as ``python`` would (``runpy`` as ``__main__``, the
request's argv, environment, working directory and thread count, output to files) and exits with
the script's status. A child is a separate process: a crash or a hostile checkpoint cannot reach
the server or the test run. ``helpers.tools.run`` sends it the commands it can run this way.

Protocol: one pickled request per line-length-prefixed frame on stdin; the reply, on the file
descriptor given as the first argument, is the child's pid, then its wait status.
"""
import os
import pickle
import runpy
import struct
import sys
import traceback
import warnings


def _read_frame(stream):
    header = stream.read(4)
    if len(header) < 4:
        return None
    return pickle.loads(stream.read(struct.unpack('>I', header)[0]))


def _child(request) -> int:
    os.setsid()  # the test kills the whole group on a timeout
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for name, path in (('stdout', request['stdout']), ('stderr', request['stderr'])):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1 if name == 'stdout' else 2)
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    import torch
    torch.set_num_threads(int(request['env'].get('OMP_NUM_THREADS') or os.cpu_count()))
    if request['env'].get('PYTHONWARNINGS') == 'ignore':
        warnings.simplefilter('ignore')
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python script.py` does
    for path in reversed(request['env'].get('PYTHONPATH', '').split(os.pathsep)):
        if path and path not in sys.path:
            sys.path.insert(1, path)
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            sys.stderr.write(f'{exit_.code}\n')
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve(reply_fd: int) -> None:
    import mmseg.apis  # noqa: F401  (what every tool imports, once)
    import deeplabv3_plugin.runtime  # noqa: F401
    from mmengine.runner import Runner  # noqa: F401
    requests, replies = sys.stdin.buffer, os.fdopen(reply_fd, 'wb', buffering=0)
    while True:
        request = _read_frame(requests)
        if request is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                os._exit(code)
        replies.write(struct.pack('>ii', 0, pid))
        _, status = os.waitpid(pid, 0)
        replies.write(struct.pack('>ii', 1, status))


if __name__ == '__main__':
    serve(int(sys.argv[1]))
