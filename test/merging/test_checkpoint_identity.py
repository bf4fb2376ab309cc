"""Checkpoint file identity: data and digests come from the file opened, never from whatever a
path names later (a file renamed over it with the same size and mtime included)."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

from retain_ros.merging import digests
from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.errors import MergeError
from retain_ros.merging.live import LiveMerger
from retain_ros.merging.safetensors_io import FileChangedError
from retain_ros.merging.safetensors_io import file_identity
from retain_ros.merging.spec import MergeSpec
from helpers.tiny_checkpoints import save_lerobot
from helpers.tiny_checkpoints import tiny_pi0

WEIGHTS = 'model.safetensors'


@pytest.fixture(scope='module')
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp('identity')
    pre, ft, other = tiny_pi0(seed=1), tiny_pi0(seed=2), tiny_pi0(seed=3)
    return {
        'pre_state': {k: v.clone() for k, v in pre.state_dict().items()},
        'ft_state': {k: v.clone() for k, v in ft.state_dict().items()},
        'other_state': {k: v.clone() for k, v in other.state_dict().items()},
        'pre': save_lerobot(pre.state_dict(), str(root / 'pre')),
        'ft': save_lerobot(ft.state_dict(), str(root / 'ft')),
        'other': save_lerobot(other.state_dict(), str(root / 'other')),
    }


@pytest.fixture(autouse=True)
def _digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('ROS_HOME', str(tmp_path / 'ros_home'))


def _copy(src, dest):
    shutil.copytree(src, dest)
    return str(dest)


def swap(checkpoint_dir, replacement_dir):
    """Rename a different weight file of the same size over ``checkpoint_dir``'s, giving it the
    old file's mtime: only the inode tells them apart."""
    weights = os.path.join(checkpoint_dir, WEIGHTS)
    st = os.stat(weights)
    tmp = weights + '.incoming'
    shutil.copyfile(os.path.join(replacement_dir, WEIGHTS), tmp)
    assert os.path.getsize(tmp) == st.st_size
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, weights)
    now = os.stat(weights)
    assert (now.st_size, now.st_mtime_ns, now.st_dev) == (st.st_size, st.st_mtime_ns, st.st_dev)
    assert now.st_ino != st.st_ino
    return weights


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def test_reads_and_digest_come_from_the_file_opened(trio, tmp_path):
    path = _copy(trio['ft'], tmp_path / 'ft')
    original = open_checkpoint(trio['ft']).digest()
    src = open_checkpoint(path)
    key = src.keys()[0]
    expected = src.read(key).clone()
    weights = swap(path, trio['other'])
    # the digest is hashed from the descriptor opened with the file, not from the path
    assert src.digest() == original
    assert open_checkpoint(path).digest() == open_checkpoint(trio['other']).digest() != original
    assert torch.equal(src.read(key), expected)
    assert torch.equal(src.read_range(key, 0, 3), expected.reshape(-1)[:3])
    with pytest.raises(FileChangedError,
                       match=rf'{re.escape(weights)}: replaced on disk since it was '
                             r'opened .*inode'):
        src.check_unchanged()
    src.close()


def test_a_closed_file_swapped_on_disk_is_refused_by_fstat(trio, tmp_path):
    path = _copy(trio['ft'], tmp_path / 'ft')
    src = open_checkpoint(path)
    key = src.keys()[0]
    src.close()
    weights = swap(path, trio['other'])
    refused = (rf'{re.escape(weights)}: not the file that was opened any more '
               r'\(size .* inode \d+ -> \d+')
    with pytest.raises(FileChangedError, match=refused):
        src.read(key)
    with pytest.raises(FileChangedError, match=refused):
        src.digest()
    f = src.files[0]
    with pytest.raises(FileChangedError, match=rf'{re.escape(weights)}: replaced on disk'):
        f.get(f.keys()[0])                        # a mapping is refused as well


def test_a_cached_digest_is_only_trusted_for_the_identity_opened(trio, tmp_path):
    path = _copy(trio['ft'], tmp_path / 'ft')
    weights = os.path.join(path, WEIGHTS)
    opened = file_identity(os.stat(weights))
    first = digests.file_digest(weights)                 # cached for the opened identity
    swap(path, trio['other'])
    fd = os.open(weights, os.O_RDONLY)
    try:
        with pytest.raises(FileChangedError,
                           match=rf'{re.escape(weights)}: not the file .*its digest is refused'):
            digests.file_digest(weights, fd=fd, identity=opened)
        assert digests.file_digest(weights, fd=fd) != first   # no identity given: hashed anew
    finally:
        os.close(fd)


def test_disk_mode_refuses_a_swapped_file_and_keeps_the_previous_weights(trio, tmp_path):
    ft = _copy(trio['ft'], tmp_path / 'ft')
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, trio['pre'], [ft], MergeSpec(alpha=1.0), keep_sources='disk')
    assert _same(model, trio['ft_state'])
    fp = merger.state.fingerprint
    weights = swap(ft, trio['other'])
    with pytest.raises(FileChangedError, match=rf'{re.escape(weights)}: replaced on disk.*reload'):
        merger.apply(MergeSpec(alpha=0.5))
    assert merger.valid and _same(model, trio['ft_state']) and merger.state.fingerprint == fp
    state = merger.reload()                       # explicit re-open: the new file is merged
    assert _same(model, trio['other_state']) and state.fingerprint != fp


def test_disk_mode_swap_after_the_check_still_reads_the_opened_file(trio, tmp_path, monkeypatch):
    ft = _copy(trio['ft'], tmp_path / 'ft')
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, trio['pre'], [ft], MergeSpec(alpha=0.0), keep_sources='disk')
    assert _same(model, trio['pre_state'])
    check = LiveMerger._check_files

    def check_then_swap(src):
        check(src)
        swap(ft, trio['other'])                   # between the check and the reads

    monkeypatch.setattr(LiveMerger, '_check_files', staticmethod(check_then_swap))
    merger.apply(MergeSpec(alpha=1.0))
    assert _same(model, trio['ft_state'])         # the opened file's weights, not the new ones
    reference = LiveMerger(tiny_pi0(seed=9), trio['pre'], [trio['ft']], MergeSpec(alpha=1.0))
    assert merger.state.fingerprint == reference.state.fingerprint


def test_reload_with_a_file_changing_while_hashed_keeps_the_previous_weights(
        trio, tmp_path, monkeypatch):
    pre = _copy(trio['pre'], tmp_path / 'pre')
    ft = _copy(trio['ft'], tmp_path / 'ft')
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pre, [ft], MergeSpec(alpha=1.0), keep_sources='host')
    assert _same(model, trio['ft_state'])
    fp = merger.state.fingerprint
    weights = swap(ft, trio['other'])            # a new file: reload must hash it
    target = os.stat(weights).st_ino
    hash_fd = digests.hash_fd

    def touch_then_hash(fd):
        st = os.fstat(fd)
        if st.st_ino == target:
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
        return hash_fd(fd)

    monkeypatch.setattr(digests, 'hash_fd', touch_then_hash)
    with pytest.raises(MergeError, match=rf'{re.escape(weights)}: (not the file that was opened '
                                         'any more|changed while it was being hashed)'):
        merger.reload()
    assert merger.valid and _same(model, trio['ft_state']) and merger.state.fingerprint == fp
    merger.apply(MergeSpec(alpha=0.0))           # the previous sources are still in use
    assert _same(model, trio['pre_state'])


def test_an_unchanged_file_is_not_hashed_again(trio, tmp_path, monkeypatch):
    path = _copy(trio['ft'], tmp_path / 'ft')
    first = open_checkpoint(path).digest()
    digests._MEMORY.clear()

    def no_hashing(fd):
        raise AssertionError('hashed again although the opened file is unchanged')

    monkeypatch.setattr(digests, 'hash_fd', no_hashing)
    assert open_checkpoint(path).digest() == first       # from the on-disk cache
