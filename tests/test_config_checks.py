"""deeplabv3_plugin.config_checks: --cfg-options keys and config files named with what was
expected."""
import os.path as osp

import pytest
from mmengine.config import Config

from deeplabv3_plugin.config_checks import cfg_option_problem, check_cfg_options, load_config
from deeplabv3_plugin.errors import UserInputError

TINY_CONFIG = osp.join(osp.dirname(__file__), 'configs', 'tools_tiny.py')


@pytest.fixture
def cfg():
    return Config.fromfile(TINY_CONFIG)


def test_cfg_option_existing_and_new_keys_pass(cfg):
    as_dict = cfg.to_dict()
    assert cfg_option_problem(as_dict, 'model.backbone.depth') is None
    assert cfg_option_problem(as_dict, 'train_dataloader.dataset.pipeline.2.crop_size') is None
    # New keyword arguments with no look-alike sibling are a legitimate use.
    assert 'output_stride' in as_dict['model'] and 'test_output_stride' not in as_dict['model']
    assert cfg_option_problem(as_dict, 'model.test_output_stride') is None
    assert cfg_option_problem(as_dict, 'model.backbone.norm_eval') is None
    assert cfg_option_problem(as_dict, 'work_dir') is None


def test_cfg_option_typo_of_existing_leaf(cfg):
    problem = cfg_option_problem(cfg.to_dict(), 'model.backbone.dept')
    assert "'model.backbone' has no key 'dept'" in problem
    assert "'model.backbone.depth'" in problem
    problem = cfg_option_problem(cfg.to_dict(), 'train_cfg.max_iter')
    assert "'train_cfg.max_iters'" in problem


def test_cfg_option_missing_parent(cfg):
    problem = cfg_option_problem(cfg.to_dict(), 'model.backbon.depth')
    assert "'model' has no key 'backbon'" in problem
    assert "Did you mean 'model.backbone'" in problem
    problem = cfg_option_problem(cfg.to_dict(), 'nothing_like_this.x')
    assert 'the top level of the config' in problem
    assert 'Its keys are:' in problem and 'model' in problem


def test_cfg_option_bad_list_index_and_scalar_parent(cfg):
    problem = cfg_option_problem(cfg.to_dict(), 'train_dataloader.dataset.pipeline.9.type')
    assert 'is a list of 5 items' in problem and '0..4' in problem
    problem = cfg_option_problem(cfg.to_dict(), 'train_cfg.max_iters.value')
    assert "'train_cfg.max_iters' is 4 (a int)" in problem


def test_check_cfg_options_lists_every_problem(cfg):
    check_cfg_options(cfg, None)
    check_cfg_options(cfg, {'model.backbone.depth': 34})
    with pytest.raises(UserInputError) as info:
        check_cfg_options(cfg, {'model.backbone.dept': 34, 'model.decode_head.chanels': 4,
                                'model.backbone.depth': 34}, 'cfg.py')
    message = str(info.value)
    assert "2 key(s) do not fit the keys of config 'cfg.py'" in message
    assert "'model.backbone.dept'" in message and "'model.decode_head.channels'" in message


def test_load_config_missing_file(tmp_path):
    with pytest.raises(UserInputError, match=r"config file '.*nope\.py' does not exist"):
        load_config(str(tmp_path / 'nope.py'))
    with pytest.raises(UserInputError, match='is a directory'):
        load_config(str(tmp_path))
    assert load_config(TINY_CONFIG).model.type
