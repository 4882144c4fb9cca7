"""Training loss and val mIoU drawn from the scalars.json that a real training run writes."""
import json

import pytest
from matplotlib import image as plt_image

from deeplabv3_plugin.paper.curves import (find_scalars, plot_training_curves,
                                                    read_scalars)
from helpers.tools import check_ok, make_voc_dataset, run, tool_env, train_cmd


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """tools/train.py on the tiny config: 4 iterations, loss logged each, validation at 4."""
    root = tmp_path_factory.mktemp('curves')
    data = make_voc_dataset(str(root / 'voc'))
    check_ok(run(train_cmd(str(root / 'work')), tool_env(data)))
    return str(root / 'work')


def test_scalars_of_a_training_run_are_read_and_drawn(trained, tmp_path):
    scalars = find_scalars(trained)
    curves = read_scalars(scalars)
    assert [step for step, _ in curves['loss']] == [1, 2, 3, 4]
    assert [step for step, _ in curves['mIoU']] == [4]
    out = plot_training_curves(scalars, str(tmp_path / 'curves.png'), title='tools_tiny.py')
    height, width = plt_image.imread(out).shape[:2]
    assert (width, height) == (770, 572)  # 7.0 x 5.2 in at 110 dpi


def test_bad_scalar_files_are_named(tmp_path):
    assert find_scalars(str(tmp_path)) is None
    broken = tmp_path / 'scalars.json'
    broken.write_text(json.dumps({'loss': 1.0, 'step': 1}) + '\n{not json\n')
    with pytest.raises(ValueError, match=r'scalars.json, line 2: not a JSON object'):
        read_scalars(str(broken))
    only_val = tmp_path / 'val.json'
    only_val.write_text(json.dumps({'mIoU': 50.0, 'step': 10}) + '\n')
    with pytest.raises(ValueError, match='holds no training loss'):
        plot_training_curves(str(only_val), str(tmp_path / 'x.png'))
