"""safetensors checkpoints: the loader, the writer and tools/publish_model.py.

Round trips are bitwise; malformed files are loaded in a child process, so a crash fails the test
instead of killing the run; the tools run as subprocesses on a checkpoint of a real (tiny)
training run.
"""
import glob
import hashlib
import json
import os.path as osp
import re
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.hub import HASH_REGEX, download_url_to_file

import deeplabv3_plugin.runtime  # noqa: F401  (the safe checkpoint loader the tools use)
from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.checkpoint.loader import CheckpointError, load_local_checkpoint
from deeplabv3_plugin.checkpoint.safetensors_format import (check_resumable,
                                                           load_safetensors_checkpoint,
                                                           safetensors_bytes,
                                                           save_safetensors_checkpoint)
from helpers.tools import (PYTHON, REPO_ROOT, TINY_CONFIG, check_ok, eval_cmd, load_tool, run,
                             train_cmd)

PUBLISH_TOOL = osp.join(REPO_ROOT, 'tools', 'publish_model.py')


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _assert_bitwise_equal(loaded, expected) -> None:
    assert set(loaded) == set(expected)
    for key, want in expected.items():
        got = loaded[key]
        assert (got.dtype, got.shape, _bits(got)) == (want.dtype, want.shape, _bits(want)), key


def _state_dict():
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    base[0, 0] = float('nan')
    return {
        'conv.weight': base,
        'conv.weight_t': base.t(),  # non-contiguous, and shares base's storage
        'conv.row': base[1],  # a view into the same storage
        'same.object': base,  # the same tensor under a second name
        'bn.num_batches_tracked': torch.tensor(7),  # 0-dim int64
        'half': torch.randn(3, dtype=torch.float16),
        'bf16': torch.randn(2, 2).to(torch.bfloat16),
        'mask': torch.tensor([True, False, True]),
        'bytes': torch.arange(5, dtype=torch.uint8),
        'empty': torch.zeros(0, 3),
        'param': torch.nn.Parameter(torch.ones(2)),
    }


# --- writer and loader ----------------------------------------------------------------------
def test_round_trip_is_bitwise_and_meta_stays_data(tmp_path):
    state = _state_dict()
    before = {k: _bits(v) for k, v in state.items()}
    meta = dict(dataset_meta=dict(classes=('background', 'disc'), palette=[[0, 0, 0], [9, 9, 9]]),
                iter=4, config="raise SystemExit('never executed')", nested={'a': [1, 2.5, None]})
    path = str(tmp_path / 'model.safetensors')
    save_safetensors_checkpoint(path, state, meta)
    loaded = load_safetensors_checkpoint(path)
    assert set(loaded) == {'state_dict', 'meta'}
    _assert_bitwise_equal(loaded['state_dict'], state)
    assert {k: _bits(v) for k, v in state.items()} == before, 'the source was not changed'
    assert loaded['meta'] == dict(meta, dataset_meta=dict(classes=['background', 'disc'],
                                                          palette=[[0, 0, 0], [9, 9, 9]]))
    assert loaded['meta']['config'] == "raise SystemExit('never executed')"  # a string, inert
    # shared and aliased tensors were written as separate copies, and load as such
    loaded['state_dict']['conv.weight'].zero_()
    assert _bits(loaded['state_dict']['same.object']) == before['same.object']
    # the ecosystem's own reader reads it too
    _assert_bitwise_equal(load_file(path), state)


def test_loaded_tensors_own_their_memory(tmp_path):
    """Not views of the file: changing or truncating it later leaves the weights alone."""
    path = str(tmp_path / 'model.safetensors')
    save_safetensors_checkpoint(path, {'w': torch.zeros(1000)})
    loaded = load_safetensors_checkpoint(path)['state_dict']['w']
    with open(path, 'r+b') as f:
        f.seek(-4, 2)
        f.write(struct.pack('<f', 1.0))
        f.truncate(100)
    assert loaded.sum().item() == 0


def test_map_location_follows_torch_load(tmp_path):
    path = str(tmp_path / 'model.safetensors')
    save_safetensors_checkpoint(path, {'a': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2)})
    for location in (None, 'cpu', torch.device('cpu'), {'cpu': 'cpu'}):
        state = load_safetensors_checkpoint(path, map_location=location)['state_dict']
        assert state['a'].device.type == 'cpu' and state['a'].tolist() == [[0, 1, 2], [3, 4, 5]]
    seen = []
    state = load_safetensors_checkpoint(
        path, map_location=lambda storage, location: seen.append(location) or storage)['state_dict']
    assert seen and set(seen) == {'cpu'} and state['a'][1, 2].item() == 5
    state = load_safetensors_checkpoint(path, map_location='meta')['state_dict']
    assert state['a'].is_meta and state['a'].shape == (2, 3) and state['b'].is_meta


def test_writer_names_what_it_cannot_store():
    with pytest.raises(UserInputError, match=r"state_dict\['x'\] is a list"):
        safetensors_bytes({'x': [1, 2]})
    with pytest.raises(UserInputError, match=r"meta\['iter'\] is a float64"):
        import numpy as np
        safetensors_bytes({'x': torch.ones(1)}, dict(iter=np.float64(3)))
    with pytest.raises(UserInputError, match='strict JSON'):
        safetensors_bytes({'x': torch.ones(1)}, dict(loss=float('nan')))
    with pytest.raises(UserInputError, match='non-string key'):
        safetensors_bytes({'x': torch.ones(1)}, {'meta': {1: 'a'}})


def test_resume_from_safetensors_is_refused_with_what_to_do():
    check_resumable('work_dirs/x/iter_4.pth')
    with pytest.raises(CheckpointError, match=r"Cannot resume from 'm-1234abcd.safetensors'.*"
                       r'no optimizer.*load_from=m-1234abcd.safetensors'):
        check_resumable('m-1234abcd.safetensors')


def _raw(header: dict, data: bytes = b'') -> bytes:
    text = json.dumps(header).encode()
    return struct.pack('<Q', len(text)) + text + data


def _malformed_files() -> dict:
    valid = safetensors_bytes({'w': torch.ones(2, 3)}, {'iter': 1})
    tensor = {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]}
    data = bytes(24)

    def with_meta(text):
        return _raw({'__metadata__': {'meta': text}, 'w': tensor}, data)

    return {
        'empty file': b'',
        'shorter than the length field': b'\x10\x00\x00',
        'truncated header': valid[:20],
        'truncated data': valid[:-5],
        'huge declared header length': struct.pack('<Q', 2**63) + b'{}',
        'header length past the end': struct.pack('<Q', 2**20) + b'{}',
        'header not JSON': struct.pack('<Q', 8) + b'\xff\xfe{[}]!!',
        'offsets past the data': _raw({'w': dict(tensor, data_offsets=[0, 100])}, data),
        'offsets not matching the shape': _raw({'w': dict(tensor, data_offsets=[0, 20])}, data),
        'overlapping tensors': _raw({'w': tensor, 'v': tensor}, data),
        'shape overflowing': _raw({'w': dict(tensor, shape=[2**62, 2**62])}, data),
        'unknown dtype': _raw({'w': dict(tensor, dtype='X99')}, data),
        'metadata not strings': _raw({'__metadata__': {'meta': 5}, 'w': tensor}, data),
        'meta not JSON': with_meta('{"iter": 1,'),
        'meta with NaN': with_meta('{"loss": NaN}'),
        'meta with a repeated key': with_meta('{"iter": 1, "iter": 2}'),
        'meta not an object': with_meta('["a"]'),
        'meta nested deeply': with_meta('[' * 100000 + ']' * 100000),
        'meta with a 10000-digit integer': with_meta('{"iter": ' + '9' * 10000 + '}'),
    }


_CHILD = '''
import json, sys
from deeplabv3_plugin.checkpoint.loader import CheckpointError
from deeplabv3_plugin.checkpoint.safetensors_format import load_safetensors_checkpoint
outcomes = {}
for name, path in json.load(open(sys.argv[1])).items():
    try:
        load_safetensors_checkpoint(path)
        outcomes[name] = 'loaded'
    except CheckpointError as error:
        outcomes[name] = 'CheckpointError' if path in str(error) else 'unnamed: ' + str(error)
    except Exception as error:
        outcomes[name] = f'{type(error).__name__}: {error}'
print(json.dumps(outcomes))
'''


def test_malformed_files_raise_checkpoint_error_in_a_child_process(tmp_path):
    paths = {}
    for index, (name, data) in enumerate(_malformed_files().items()):
        paths[name] = str(tmp_path / f'case{index}.safetensors')
        with open(paths[name], 'wb') as f:
            f.write(data)
    with open(tmp_path / 'cases.json', 'w') as f:
        json.dump(paths, f)
    child = subprocess.run([sys.executable, '-c', _CHILD, str(tmp_path / 'cases.json')],
                           capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert child.returncode == 0, f'the loader crashed ({child.returncode}): {child.stderr[-2000:]}'
    outcomes = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcomes == {name: 'CheckpointError' for name in paths}


# --- tools, on a real checkpoint ---------------------------------------------------------------
@pytest.fixture(scope='module')
def published(tmp_path_factory, data_env, tiny_run):
    """``(training checkpoint, published .safetensors, tool output)`` of the session's run."""
    checkpoint = tiny_run[1]
    out = str(tmp_path_factory.mktemp('published') / 'tiny_voc')
    proc = check_ok(run([PYTHON, PUBLISH_TOOL, checkpoint, out], data_env))
    weights = glob.glob(out + '-*.safetensors')
    assert len(weights) == 1, weights
    return checkpoint, weights[0], proc.stdout + proc.stderr


def test_publish_strips_training_state_and_names_the_file_by_its_hash(published):
    checkpoint, weights, output = published
    with open(weights, 'rb') as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    stem = weights[:-len('.safetensors')]
    assert stem.endswith(f'tiny_voc-{sha256[:8]}')
    assert 'dropped: message_hub, optimizer, param_schedulers' in output
    source = load_local_checkpoint(checkpoint)
    loaded = load_safetensors_checkpoint(weights)
    _assert_bitwise_equal(loaded['state_dict'], source['state_dict'])
    meta = loaded['meta']
    assert meta['iter'] == 4 and meta['source_checkpoint'] == 'iter_4.pth'
    assert meta['dataset_meta']['classes'] == list(source['meta']['dataset_meta']['classes'])
    assert {'mmseg_version', 'deeplabv3_plugin_version', 'torch_version'} <= set(meta)
    assert 'cfg' not in meta and 'config' not in meta  # no config text is published
    with open(stem + '.json') as f:
        sidecar = json.load(f)
    assert sidecar == dict(file=osp.basename(weights), sha256=sha256, bytes=osp.getsize(weights),
                           num_tensors=len(source['state_dict']), meta=meta)


def test_torch_hub_checks_a_download_against_the_name(published, tmp_path):
    _, weights, _ = published
    prefix = HASH_REGEX.search(osp.basename(weights)).group(1)  # what load_state_dict_from_url does
    assert len(prefix) == 8
    download_url_to_file('file://' + weights, str(tmp_path / 'ok'), hash_prefix=prefix,
                         progress=False)
    tampered = str(tmp_path / osp.basename(weights))
    shutil.copyfile(weights, tampered)
    with open(tampered, 'r+b') as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(RuntimeError, match='invalid hash value'):
        download_url_to_file('file://' + tampered, str(tmp_path / 'bad'), hash_prefix=prefix,
                             progress=False)


def test_publish_refuses_a_name_torch_hub_would_misread_and_a_missing_file(published, tmp_path):
    checkpoint, _, _ = published
    tool = load_tool('publish_model')
    with pytest.raises(UserInputError, match=r"torch.hub .* would read '-1\.'"):
        tool.main([checkpoint, str(tmp_path / 'deeplabv3-1.0')])
    with pytest.raises(UserInputError, match="checkpoint '.*missing.pth' does not exist"):
        tool.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'x')])
    assert not glob.glob(str(tmp_path / '*.safetensors'))


def test_train_resume_from_safetensors_is_refused(published, data_env, tmp_path, monkeypatch):
    _, weights, _ = published
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    with pytest.raises(UserInputError, match=re.escape(f'Cannot resume from {weights!r}')):
        load_tool('train').main(train_cmd(str(tmp_path / 'work'), '--resume', weights)[2:])


@pytest.mark.slow
def test_test_py_evaluates_a_published_safetensors_model(published, data_env, tmp_path,
                                                       monkeypatch, capfd):
    """Same mIoU from the published file (tools/test.py as a user runs it) as from the training
    checkpoint (its ``main`` in this process) (issue #20)."""
    checkpoint, weights, _ = published
    proc = check_ok(run(eval_cmd(weights, str(tmp_path / 'safetensors')), data_env))
    published_miou = re.findall(r'mIoU: ([0-9.]+)', proc.stdout + proc.stderr)[-1]
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    load_tool('test').main(eval_cmd(checkpoint, str(tmp_path / 'pth'))[2:])
    assert re.findall(r'mIoU: ([0-9.]+)', ''.join(capfd.readouterr()))[-1] == published_miou


def test_inference_api_inferencer_and_pretrained_init_load_safetensors(published, data_env):
    """init_model, DeepLabV3Inferencer and init_cfg's Pretrained take the published file."""
    checkpoint, weights, _ = published
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from deeplabv3_plugin.apis import DeepLabV3Inferencer, inference_model, init_model
    image = sorted(glob.glob(osp.join(data_env['DEEPLABV3_TOOLS_DATA'], 'JPEGImages', '*')))[0]
    reference = init_model(TINY_CONFIG, checkpoint)
    model = init_model(TINY_CONFIG, weights)
    assert model.dataset_meta['classes'] == list(reference.dataset_meta['classes'])
    expected = inference_model(reference, image)
    assert (inference_model(model, image) == expected).all()
    predicted = DeepLabV3Inferencer(TINY_CONFIG, weights=weights, device='cpu')(image)
    assert (predicted['predictions'] == expected).all()

    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=weights, prefix='backbone.')
    init_default_scope('mmseg')
    segmentor = MODELS.build(cfg.model)
    segmentor.init_weights()
    source = load_local_checkpoint(checkpoint)['state_dict']
    for key, value in segmentor.backbone.state_dict().items():
        assert torch.equal(value, source[f'backbone.{key}']), key
