"""Every route into a checkpoint, as users reach it: URL schemes, downloads, resume, inferencers.

Where running code is the attack, the load happens in a child process and the payload writes a
marker file (``posix.system('touch MARKER')``); a pass means no marker, no crash and the plugin's
error naming the file. No network: mmengine resolves a scheme to a URL, and a file already in
``$TORCH_HOME/hub/checkpoints/<the URL's file name>`` is what gets loaded; ``http://`` downloads
come from a server on 127.0.0.1.
"""
import hashlib
import http.server
import importlib.util
import json
import os
import os.path as osp
import socket
import subprocess
import threading
import warnings
from functools import partial

import mmengine
import pytest
import torch
from helpers.pickles import Ops, write_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader
from helpers.tools import (PYTHON, REPO_ROOT, check_ok, make_voc_dataset, run, tool_env,
                             train_cmd)

import deeplabv3_plugin.runtime  # noqa: F401  (the routes under test)
from deeplabv3_plugin.checkpoint import routes as checkpoint_routes
from deeplabv3_plugin.checkpoint.loader import load_local_checkpoint
from deeplabv3_plugin.checkpoint.meta import inert_meta

HUB_TABLES = osp.join(osp.dirname(mmengine.__file__), 'hub')
# Loads each argument through CheckpointLoader (the runtime imported, as tools and configs do).
LOAD_CHILD = '''
import json, sys
from mmengine.runner.checkpoint import CheckpointLoader
import deeplabv3_plugin.runtime
for name in sys.argv[1:]:
    try:
        loaded = CheckpointLoader.load_checkpoint(name, map_location='cpu')
        result = dict(outcome='loaded', keys=sorted(loaded.get('state_dict', loaded)))
    except Exception as err:
        result = dict(outcome=type(err).__name__, message=str(err))
    print(json.dumps(dict(name=name, **result)), flush=True)
'''


def _sha256(path) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _evil(path, marker) -> str:
    """A zip checkpoint whose pickle calls ``posix.system('touch MARKER')``."""
    return write_checkpoint(str(path), bytes(Ops().call('posix', 'system', f'touch {marker}')),
                            'zip')


def _good(path) -> str:
    torch.save(dict(state_dict=dict(weight=torch.arange(4.))), str(path))
    return str(path)


def _load_in_child(names, env):
    proc = subprocess.run([PYTHON, '-c', LOAD_CHILD, *names], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
    return {r['name']: r for r in results}  # (mmengine logs to stdout too)


def _hub_env(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'),
               MMENGINE_HOME=str(tmp_path / 'mmengine'), PYTHONWARNINGS='ignore')
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    return env, cache


def _scheme_urls():
    """Scheme name -> the URL mmengine resolves it to, read here from mmengine's own tables."""
    openmmlab, torchvision = (mmengine.load(osp.join(HUB_TABLES, name))
                              for name in ('openmmlab.json', 'torchvision_0.12.json'))
    deprecated = mmengine.load(osp.join(HUB_TABLES, 'deprecated.json'))
    mmcls = mmengine.load(osp.join(HUB_TABLES, 'mmcls.json'))
    return {
        'open-mmlab://resnet101_v1c': openmmlab['resnet101_v1c'],  # the configs' own
        'openmmlab://resnet50_v1c': openmmlab['resnet50_v1c'],
        'open-mmlab://resnet50_caffe': openmmlab[deprecated['resnet50_caffe']],
        'open-mmlab://mmedit/vgg16': openmmlab['mmedit/vgg16'],  # no hash in its file name
        'torchvision://resnet50': torchvision['resnet50'],
        'modelzoo://resnet101': torchvision['resnet101'],
        'mmcls://resnet50': mmcls['resnet50'],
        'https://example.invalid/weights/evil.pth': 'https://example.invalid/weights/evil.pth',
    }


def test_every_scheme_mmengine_registers_is_a_plugin_route():
    routes = {p: loader for prefixes, loader in checkpoint_routes.CHECKPOINT_ROUTES
              for p in prefixes}
    assert dict(CheckpointLoader._schemes) == routes


# torchvision:// with torchvision installed too, where it is (the pinned stack has none)
@pytest.mark.parametrize('torchvision', ['hidden'] + ['installed'] * bool(
    importlib.util.find_spec('torchvision')))
def test_planted_cache_file_never_runs_through_any_scheme(tmp_path, torchvision):
    """Each scheme's file in the hub cache is a payload: refused by the hash in its name where
    it has one, else by the safe loader; ``torchvision://`` resolves with or without
    torchvision."""
    env, cache = _hub_env(tmp_path)
    if torchvision == 'hidden':  # an import of torchvision fails, as when it is not installed
        (tmp_path / 'hide' / 'torchvision').mkdir(parents=True)
        (tmp_path / 'hide' / 'torchvision' / '__init__.py').write_text('raise ImportError\n')
        env['PYTHONPATH'] = os.pathsep.join([str(tmp_path / 'hide'), REPO_ROOT])
    marker = tmp_path / 'MARKER'
    urls = _scheme_urls()
    for url in urls.values():
        _evil(cache / url.rsplit('/', 1)[1], marker)
    results = _load_in_child(list(urls), env)
    assert not marker.exists(), 'a planted payload ran'
    for name, url in urls.items():
        result, path = results[name], str(cache / url.rsplit('/', 1)[1])
        assert path in result['message'], (name, result)
        if torch.hub.HASH_REGEX.search(url.rsplit('/', 1)[1]):
            assert result['outcome'] == 'CheckpointError', (name, result)
            assert 'SHA-256' in result['message'] and 'Delete it' in result['message']
        else:
            assert result['outcome'] == 'UnsafeCheckpointError', (name, result)


def test_published_files_load_from_the_cache_and_mmengine_home(tmp_path):
    """Good files load: a name without a hash, a hash that matches (the configs' own
    ``open-mmlab://resnet101_v1c``, pointed at it by ``$MMENGINE_HOME/open_mmlab.json`` as
    mmengine allows), and a table entry that is a file under ``$MMENGINE_HOME``."""
    env, cache = _hub_env(tmp_path)
    good = _good(cache / 'vgg_state_dict.pth')  # open-mmlab://mmedit/vgg16
    published = f'resnet101_v1c-{_sha256(good)[:8]}.pth'
    os.link(good, cache / published)
    (tmp_path / 'mmengine' / 'local').mkdir(parents=True)
    _good(tmp_path / 'mmengine' / 'local' / 'weights.pth')
    _evil(tmp_path / 'mmengine' / 'local' / 'evil.pth', tmp_path / 'MARKER')
    (tmp_path / 'mmengine' / 'open_mmlab.json').write_text(json.dumps({
        'resnet101_v1c': f'https://download.openmmlab.com/pretrain/third_party/{published}',
        'local_weights': 'local/weights.pth', 'local_evil': 'local/evil.pth'}))
    results = _load_in_child(['open-mmlab://mmedit/vgg16', 'open-mmlab://resnet101_v1c',
                              'openmmlab://local_weights', 'open-mmlab://local_evil'], env)
    for name in ('open-mmlab://mmedit/vgg16', 'open-mmlab://resnet101_v1c',
                 'openmmlab://local_weights'):
        assert results[name] == dict(name=name, outcome='loaded', keys=['weight']), results[name]
    assert results['open-mmlab://local_evil']['outcome'] == 'UnsafeCheckpointError'
    assert not (tmp_path / 'MARKER').exists()


def test_unknown_names_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet5O'.*resnet101"):
        CheckpointLoader.load_checkpoint('torchvision://resnet5O')
    with pytest.raises(ValueError, match=r"lists no weights for 'shufflenetv2_x1.5'"):
        checkpoint_routes.load_from_torchvision('torchvision://shufflenetv2_x1.5')
    with pytest.raises(ValueError, match='names no file'):
        checkpoint_routes.cached_download('https://example.invalid/')


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server of ``tmp_path/served``; yields (directory, base URL, paths served)."""
    served, requests = tmp_path / 'served', []
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f'http://127.0.0.1:{server.server_address[1]}', requests
    finally:
        server.shutdown()
        thread.join()


def test_downloads_are_hash_checked_then_loaded_safely(tmp_path, http_server):
    served, base, _ = http_server
    env, cache = _hub_env(tmp_path)
    marker = tmp_path / 'MARKER'
    source = _good(served / 'good.pth')
    good = f'good-{_sha256(source)[:8]}.pth'
    os.rename(source, served / good)
    os.link(served / good, served / 'tampered-00000000.pth')
    evil = _evil(served / 'evil.pth', marker)
    os.link(evil, served / f'evil-{_sha256(evil)[:8]}.pth')  # the right hash proves no safety
    names = {name: f'{base}/{name}' for name in (good, 'tampered-00000000.pth', 'evil.pth',
                                                   f'evil-{_sha256(evil)[:8]}.pth')}
    results = _load_in_child(list(names.values()), env)
    assert not marker.exists()
    assert results[names[good]]['outcome'] == 'loaded'
    assert (cache / good).is_file()
    tampered = results[names['tampered-00000000.pth']]
    assert tampered['outcome'] == 'CheckpointError' and 'invalid hash value' in tampered['message']
    assert not (cache / 'tampered-00000000.pth').exists(), 'a refused download stays out'
    for name in list(names)[2:]:
        assert results[names[name]]['outcome'] == 'UnsafeCheckpointError', results[names[name]]


DDP_CHILD = '''
import sys
import torch.distributed as dist
import torch.multiprocessing as mp


def load(rank, port, url, out_dir):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    from mmengine.runner.checkpoint import CheckpointLoader
    import deeplabv3_plugin.runtime
    keys = sorted(CheckpointLoader.load_checkpoint(url)['state_dict'])
    with open(f'{out_dir}/rank{rank}.txt', 'w') as f:
        f.write(' '.join(keys))
    dist.destroy_process_group()


if __name__ == '__main__':
    mp.spawn(load, args=(int(sys.argv[1]), *sys.argv[2:]), nprocs=2)
'''


@pytest.mark.slow
def test_distributed_ranks_download_once(tmp_path, http_server):
    """Rank 0 downloads while the other rank waits, then it loads rank 0's file (mmengine's
    order), through the safe loader on both."""
    served, base, requests = http_server
    env, cache = _hub_env(tmp_path)
    source = _good(served / 'good.pth')
    name = f'good-{_sha256(source)[:8]}.pth'
    os.rename(source, served / name)
    script = tmp_path / 'ddp_load.py'
    script.write_text(DDP_CHILD)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    check_ok(run([PYTHON, str(script), str(port), f'{base}/{name}', str(tmp_path)], env))
    assert [(tmp_path / f'rank{r}.txt').read_text() for r in (0, 1)] == ['weight', 'weight']
    assert requests == [f'/{name}']
    assert os.listdir(cache) == [name]


# --- config text in a checkpoint ----------------------------------------------------------------
@pytest.mark.parametrize('text, config, warns', [
    ('gpu_ids = range(0, 4)\n', 'gpu_ids = [0, 1, 2, 3]\n', False),  # mmseg 0.x wrote range()
    ("import os\nos.system('touch x')\ngpu_ids = [0]\nlr = 0.1\n", 'gpu_ids = [0]\n', False),
    ('gpu_ids = [0]\ngpu_ids = [\n    0, 1,\n    2]\n', 'gpu_ids = [0, 1, 2]\n', False),
    ('gpu_ids = [0, 1]\n', 'gpu_ids = [0, 1]\n', False),  # what inert_meta writes reads the same
    ("model = dict(type='X')\n", None, False),
    ('gpu_ids = None\n', None, False),
    (b'gpu_ids = [0]', None, False),
    ("gpu_ids = [__import__('os').system('touch x')]\n", None, True),
    ('gpu_ids = range(0, 10**9)\n', None, True),
    ('gpu_ids = range(0, 100000000000000000000000)\n', None, True),
    ('gpu_ids = list(range(2))\n', None, True),
])
def test_config_text_becomes_gpu_ids_or_nothing(text, config, warns):
    """Parsed as data, never run: ``meta['config']`` keeps only ``gpu_ids`` (mmengine's resume
    reads nothing else from it); the stored configs an inferencer would run are removed."""
    checkpoint = dict(meta=dict(config=text, cfg=text, seed=3),
                      message_hub=dict(runtime_info=dict(cfg=text, iter=2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert inert_meta(checkpoint) is checkpoint
    assert [w for w in caught if 'GPU count' in str(w.message)] == caught
    assert len(caught) == warns
    expected_meta = dict(seed=3) if config is None else dict(seed=3, config=config)
    assert checkpoint == dict(meta=expected_meta, message_hub=dict(runtime_info=dict(iter=2)))
    assert inert_meta([1]) == [1] and inert_meta(dict(meta=None)) == dict(meta=None)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 2-iteration run of the tiny config: (env, work dir, its checkpoint)."""
    root = tmp_path_factory.mktemp('trained')
    env = tool_env(make_voc_dataset(str(root / 'voc')))
    work_dir = str(root / 'work')
    check_ok(run(train_cmd(work_dir, '--cfg-options', 'train_cfg.max_iters=2',
                           'train_cfg.val_interval=2'), env))
    return env, osp.join(work_dir, 'iter_2.pth')


def _with_config_text(source: str, path, marker, gpu_ids: str) -> str:
    checkpoint = load_local_checkpoint(source)
    payload = f"_ = __import__('os').system('touch {marker}')\n"  # mmengine runs this
    checkpoint['meta'].update(config=payload + gpu_ids, cfg=payload)
    checkpoint['message_hub']['runtime_info']['cfg'] = payload
    torch.save(checkpoint, str(path))
    return str(path)


@pytest.mark.parametrize('gpu_ids', ['gpu_ids = [0]', 'gpu_ids = range(0, 2)'])
@pytest.mark.slow
def test_resume_never_runs_config_text_but_checks_the_gpu_count(trained, tmp_path, gpu_ids):
    """``tools/train.py --resume CKPT``: the text is not run; its ``gpu_ids`` still reach
    mmengine's check (one GPU id: resumed; two in a one-process run: mmengine's error)."""
    env, source = trained
    marker = tmp_path / 'MARKER'
    ckpt = _with_config_text(source, tmp_path / 'resume.pth', marker, gpu_ids)
    proc = run(train_cmd(str(tmp_path / 'work'), '--resume', ckpt, '--cfg-options',
                         'train_cfg.max_iters=3', 'train_cfg.val_interval=3'), env)
    assert not marker.exists(), 'the config text in the checkpoint ran'
    if gpu_ids == 'gpu_ids = [0]':
        assert 'resumed epoch: 0, iter: 2' in check_ok(proc).stdout
    else:
        assert proc.returncode != 0
        assert 'Number of GPUs used for current experiment is not consistent' in proc.stderr


def test_inferencers_never_build_a_model_from_checkpoint_text(trained, tmp_path):
    """``model=None``: ``DeepLabV3Inferencer`` refuses, naming the checkpoint; mmseg's own
    inferencer (runtime imported) finds no config text left to run."""
    env, source = trained
    marker = tmp_path / 'MARKER'
    ckpt = _with_config_text(source, tmp_path / 'text.pth', marker, '')
    code = f'''
import deeplabv3_plugin.runtime
from mmseg.apis import MMSegInferencer
from deeplabv3_plugin.apis import DeepLabV3Inferencer
for cls in (DeepLabV3Inferencer, MMSegInferencer):
    try:
        cls(model=None, weights={ckpt!r}, device='cpu')
    except Exception as err:
        print('RESULT', cls.__name__, type(err).__name__, err)
'''
    proc = run([PYTHON, '-c', code], env)
    assert not marker.exists(), 'the config text in the checkpoint ran'
    lines = [line for line in check_ok(proc).stdout.splitlines() if line.startswith('RESULT')]
    assert lines[0].startswith('RESULT DeepLabV3Inferencer UserInputError') and ckpt in lines[0]
    assert 'Pass the config file' in lines[0]
    assert lines[1:] == ['RESULT MMSegInferencer ValueError Cannot find the config in the '
                         'checkpoint.']
