"""open_within: the one way dataset tools write below their output root (never through a link)."""
import os

import pytest

from deeplabv3_plugin.datasets import UnsafeWriteError, open_within


@pytest.fixture
def tree(tmp_path):
    """``root/`` holding a link to a file outside it, a linked directory, a real one and a file."""
    root, outside = tmp_path / 'root', tmp_path / 'outside'
    (root / 'real').mkdir(parents=True)
    outside.mkdir()
    (outside / 'victim.txt').write_text('keep me')
    (root / 'real' / 'plain.txt').write_text('a file')
    os.symlink(outside / 'victim.txt', root / 'real' / 'split.txt')
    os.symlink(outside, root / 'linked')
    os.symlink(outside / 'not_yet', root / 'dangling')  # makedirs(exist_ok) would create it
    return root, outside


def test_a_link_in_the_files_place_is_replaced_and_its_target_kept(tree):
    root, outside = tree
    with open_within(str(root), 'real/split.txt', 'w', encoding='utf-8') as f:
        f.write('a\nb\n')
    assert not os.path.islink(root / 'real' / 'split.txt')
    assert (root / 'real' / 'split.txt').read_text() == 'a\nb\n'
    assert (outside / 'victim.txt').read_text() == 'keep me'


def test_another_name_of_a_hard_linked_file_is_kept(tree):
    root, outside = tree
    os.link(outside / 'victim.txt', root / 'real' / 'label.png')
    with open_within(str(root), 'real/label.png') as f:
        f.write(b'new')
    assert (root / 'real' / 'label.png').read_bytes() == b'new'
    assert (outside / 'victim.txt').read_text() == 'keep me'


@pytest.mark.parametrize('relpath, reason', [
    ('linked/x.png', 'is a symbolic link'),
    ('dangling/x.png', 'is a symbolic link'),
    ('real/plain.txt/x.png', 'is not a directory'),
    ('../outside/x.png', "without '..'"),
    ('real/../../outside/x.png', "without '..'"),
    ('/tmp/x.png', "without '..'"),
])
def test_writes_that_leave_the_root_are_refused(tree, relpath, reason):
    root, outside = tree
    with pytest.raises(UnsafeWriteError, match=reason) as error:
        with open_within(str(root), relpath) as f:
            f.write(b'x')
    assert str(root) in str(error.value)  # the message names the path
    assert sorted(os.listdir(outside)) == ['victim.txt']


def test_missing_directories_are_created_and_a_failed_write_leaves_nothing(tree):
    root, _ = tree
    with open_within(str(root), 'new/deeper/a.png') as f:
        f.write(b'png')
    assert (root / 'new' / 'deeper' / 'a.png').read_bytes() == b'png'
    with pytest.raises(RuntimeError):
        with open_within(str(root), 'new/deeper/a.png') as f:
            f.write(b'half')
            raise RuntimeError('encoder failed')
    assert os.listdir(root / 'new' / 'deeper') == ['a.png']  # old file kept, no temp left
    assert (root / 'new' / 'deeper' / 'a.png').read_bytes() == b'png'


def test_the_root_itself_may_be_a_link_the_user_chose(tree, tmp_path):
    root, _ = tree
    os.symlink(root, tmp_path / 'root_link')
    with open_within(str(tmp_path / 'root_link'), 'real/b.txt', 'w') as f:
        f.write('ok')
    assert (root / 'real' / 'b.txt').read_text() == 'ok'
    with pytest.raises(UnsafeWriteError, match='not an existing directory'):
        with open_within(str(tmp_path / 'missing'), 'a.txt', 'w'):
            pass
