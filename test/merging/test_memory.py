"""Memory plan, snapshot-free restore, disk-mode file safety and the digest cache."""
from __future__ import annotations

import json
import os
import shutil
import threading

import pytest
import torch

from retain_ros.merging import devices
from retain_ros.merging import digests
from retain_ros.merging import memory
from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.engine import open_sources
from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import RestoreFailedError
from retain_ros.merging.live import LiveMerger
from retain_ros.merging.memory import MemoryPlanError
from retain_ros.merging.memory import plan_memory
from retain_ros.merging.safetensors_io import FileChangedError
from retain_ros.merging.safetensors_io import SafetensorsFile
from retain_ros.merging.spec import MergeSpec
from helpers.tiny_checkpoints import save_lerobot
from helpers.tiny_checkpoints import tiny_pi0

GIB = 1 << 30


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp('mem')
    pre, ft = tiny_pi0(seed=1), tiny_pi0(seed=2)
    bf_pre, bf_ft = tiny_pi0(seed=1, dtype=torch.bfloat16), tiny_pi0(seed=2, dtype=torch.bfloat16)
    return {
        'pre_state': {k: v.clone() for k, v in pre.state_dict().items()},
        'ft_state': {k: v.clone() for k, v in ft.state_dict().items()},
        'pre': save_lerobot(pre.state_dict(), str(root / 'pre')),
        'ft': save_lerobot(ft.state_dict(), str(root / 'ft')),
        'bf_pre': save_lerobot(bf_pre.state_dict(), str(root / 'bf_pre')),
        'bf_ft': save_lerobot(bf_ft.state_dict(), str(root / 'bf_ft')),
    }


def _free(monkeypatch, host_bytes):
    monkeypatch.setattr(memory, 'host_free', lambda: (int(host_bytes), 'test limit'))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def test_sizes_come_from_the_headers(pair):
    pre, fts = open_sources(pair['pre'], [pair['ft']])
    s = memory.sizes(pre, fts, torch.float32)
    model_bytes = sum(v.numel() * v.element_size() for v in pair['pre_state'].values())
    assert s.model == model_bytes
    assert s.sources == 2 * model_bytes
    assert s.largest == max(v.numel() for v in pair['pre_state'].values())
    assert memory.sizes(pre, fts, torch.bfloat16).model == model_bytes // 2
    free, what = memory.host_free()
    assert 0 < free and what


def test_auto_picks_the_fastest_mode_that_fits(pair, monkeypatch):
    pre, fts = open_sources(pair['pre'], [pair['ft']])
    s = memory.sizes(pre, fts, torch.float32)
    _free(monkeypatch, 64 * GIB)
    assert plan_memory(pre, fts, 'cpu', 'float32').mode == 'device'
    # room for the model and a transient, not for two more copies of it
    tight = memory.HEADROOM_BYTES + 1.2 * (s.model + s.transient() + s.read_buffers())
    _free(monkeypatch, tight)
    plan = plan_memory(pre, fts, 'cpu', 'float32')
    assert plan.mode == 'disk'
    assert 'device needs' in plan.describe() and 'does not fit' in plan.describe()
    with pytest.raises(MemoryPlanError, match=r'keep_sources=host does not fit: it needs '
                                              r'[0-9.]+ GiB \+ [0-9.]+ GiB headroom on the host > '
                                              r'[0-9.]+ GiB free; modes that fit: disk \(use '
                                              r'keep_sources=auto or disk\)'):
        plan_memory(pre, fts, 'cpu', 'float32', keep_sources='host')
    _free(monkeypatch, s.model // 2)
    with pytest.raises(MemoryPlanError, match='does not fit in memory in any keep_sources'):
        plan_memory(pre, fts, 'cpu', 'float32')
    assert plan_memory(pre, fts, 'cpu', 'float32', enforce=False).mode == 'disk'


def test_cpu_bf16_detection_reads_the_feature_flags(tmp_path):
    for flags, native in (('fpu sse2 avx2 avx512f', False), ('fpu avx512f avx512_bf16', True),
                          ('fpu amx_tile amx_bf16', True)):
        info = tmp_path / f'cpuinfo_{native}_{len(flags)}'
        info.write_text(f'processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n')
        assert devices.cpu_has_native_bf16.__wrapped__(str(info)) is native
    arm = tmp_path / 'cpuinfo_arm'
    arm.write_text('processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n')
    assert devices.cpu_has_native_bf16.__wrapped__(str(arm)) is True
    assert devices.cpu_has_native_bf16.__wrapped__(str(tmp_path / 'missing')) is False


def test_dtype_auto_keeps_bf16_on_a_cpu_with_bf16_instructions(pair, monkeypatch):
    monkeypatch.setattr(devices, 'cpu_has_native_bf16', lambda: True)
    _free(monkeypatch, 64 * GIB)
    pre, fts = open_sources(pair['bf_pre'], [pair['bf_ft']])
    plan = plan_memory(pre, fts, 'cpu', 'auto')
    assert (plan.dtype, plan.mode) == (torch.bfloat16, 'device')   # float32 would fit: not wanted
    pre, fts = open_sources(pair['pre'], [pair['ft']])             # a float32 checkpoint
    assert plan_memory(pre, fts, 'cpu', 'auto').dtype == torch.float32   # never narrowed


def test_dtype_auto_widens_only_when_it_fits_as_well(pair, monkeypatch):
    monkeypatch.setattr(devices, 'cpu_has_native_bf16', lambda: False)
    pre, fts = open_sources(pair['bf_pre'], [pair['bf_ft']])
    assert memory.checkpoint_dtype(pre) == torch.bfloat16
    _free(monkeypatch, 64 * GIB)
    plan = plan_memory(pre, fts, 'cpu', 'auto')
    assert (plan.dtype, plan.mode) == (torch.float32, 'device')  # float32: no bf16 instructions
    s16 = memory.sizes(pre, fts, torch.bfloat16)
    # bf16 fits with its sources in memory, float32 would need disk mode: keep bf16
    _free(monkeypatch, memory.HEADROOM_BYTES + 1.15 * (s16.model + s16.sources + s16.transient()
                                                       + s16.read_buffers()))
    plan = plan_memory(pre, fts, 'cpu', 'auto')
    assert (plan.dtype, plan.mode) == (torch.bfloat16, 'device')
    assert "the checkpoint's bfloat16" in plan.describe()
    assert plan_memory(pre, fts, 'cpu', 'bfloat16').dtype == torch.bfloat16


def test_live_merger_auto_mode_and_refusal(pair, monkeypatch, caplog):
    caplog.set_level('INFO')
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pair['pre'], [pair['ft']], MergeSpec(alpha=1.0))
    assert merger.keep_sources == 'device' and merger.valid
    assert 'memory plan: keep_sources=device' in caplog.text
    assert _same(model, pair['ft_state'])
    pre, fts = open_sources(pair['pre'], [pair['ft']])
    s = memory.sizes(pre, fts, torch.float32)
    _free(monkeypatch, memory.HEADROOM_BYTES + 1.2 * (s.transient() + s.read_buffers()))
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pair['pre'], [pair['ft']], MergeSpec(alpha=0.0))
    assert merger.keep_sources == 'disk'  # the model itself is already allocated
    assert _same(model, pair['pre_state'])
    with pytest.raises(MemoryPlanError, match='keep_sources=device does not fit'):
        LiveMerger(tiny_pi0(seed=9), pair['pre'], [pair['ft']], MergeSpec(alpha=0.0),
                   keep_sources='device')


@pytest.mark.parametrize('keep', ['device', 'disk'])
def test_restore_failure_is_reported_distinctly(pair, keep, monkeypatch):
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pair['pre'], [pair['ft']], MergeSpec(alpha=0.3),
                        keep_sources=keep)
    original = LiveMerger._merge_piece
    calls = {'n': 0}

    def broken(self, merge, key, *args, **kwargs):
        calls['n'] += 1
        if calls['n'] >= 20:  # the merge fails part-way and so does every recomputation
            raise RuntimeError('device lost (injected)')
        return original(self, merge, key, *args, **kwargs)

    monkeypatch.setattr(LiveMerger, '_merge_piece', broken)
    with pytest.raises(RestoreFailedError, match='restoring the previous weights failed too.*'
                                                 'inconsistent'):
        merger.apply(MergeSpec(alpha=0.9))
    assert merger.valid is False
    monkeypatch.setattr(LiveMerger, '_merge_piece', original)
    merger.apply(MergeSpec(alpha=1.0))
    assert merger.valid is True
    assert _same(model, pair['ft_state'])


def _copy(src, dest):
    shutil.copytree(src, dest)
    return dest


def test_disk_mode_refuses_a_file_rewritten_in_place(pair, tmp_path):
    ft = _copy(pair['ft'], str(tmp_path / 'ft'))
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pair['pre'], [ft], MergeSpec(alpha=0.5), keep_sources='disk')
    before = _snapshot(model)
    fp = merger.state.fingerprint
    weights = os.path.join(ft, 'model.safetensors')
    info = SafetensorsFile(weights)
    t = next(iter(info.tensors.values()))
    with open(weights, 'r+b') as fh:  # same size, new bytes, same inode
        fh.seek(info.data_start + t.start)
        fh.write(b'\x00' * t.nbytes)
    st = os.stat(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    with pytest.raises(FileChangedError, match=r'model.safetensors: rewritten in place.*reload'):
        merger.apply(MergeSpec(alpha=0.8))
    assert _same(model, before) and merger.valid
    state = merger.reload()  # explicit re-open and re-fingerprint
    assert state.fingerprint != fp
    merger.apply(MergeSpec(alpha=0.8))


def test_truncated_file_raises_instead_of_sigbus(pair, tmp_path):
    ft = _copy(pair['ft'], str(tmp_path / 'ft'))
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pair['pre'], [ft], MergeSpec(alpha=0.5), keep_sources='disk')
    before = _snapshot(model)
    weights = os.path.join(ft, 'model.safetensors')
    reader = SafetensorsFile(weights)
    names = sorted(reader.tensors, key=lambda n: reader.tensors[n].start)
    reader.read(names[-1])  # opens the descriptor
    view = reader.get(names[-1])  # a mapping exists too
    del view
    with open(weights, 'r+b') as fh:
        fh.truncate(reader.data_start + reader.tensors[names[-1]].start + 4)
    with pytest.raises(FileChangedError, match='truncated while open'):
        reader._pread_into(memoryview(bytearray(64)), reader.data_start +
                           reader.tensors[names[-1]].start, names[-1])
    with pytest.raises(FileChangedError, match='rewritten in place'):
        reader.get(names[-1])  # size checked before touching the mapping
    reader.close()
    with pytest.raises(MergeError, match='rewritten in place'):
        merger.apply(MergeSpec(alpha=0.7))
    assert _same(model, before)
    with pytest.raises(MergeError, match='truncated'):
        merger.reload()
    assert merger.valid and _same(model, before)  # the live weights were never touched


def test_digest_cache_is_keyed_by_file_identity(pair, tmp_path, monkeypatch):
    monkeypatch.setenv('ROS_HOME', str(tmp_path / 'home'))
    path = os.path.join(_copy(pair['ft'], str(tmp_path / 'ft')), 'model.safetensors')
    first = digests.file_digest(path)
    entries = os.listdir(digests.cache_dir())
    assert len(entries) == 1
    with open(os.path.join(digests.cache_dir(), entries[0])) as fh:
        entry = json.load(fh)
    assert entry['path'] == path and entry['algorithm'] == 'blake3'
    digests._MEMORY.clear()

    def no_hashing(p):
        raise AssertionError('hashed again although size, mtime and inode are unchanged')

    monkeypatch.setattr(digests, 'hash_file', no_hashing)
    monkeypatch.setattr(digests, 'hash_fd', no_hashing)
    assert digests.file_digest(path) == first
    monkeypatch.undo()
    monkeypatch.setenv('ROS_HOME', str(tmp_path / 'home'))
    with open(path, 'r+b') as fh:
        fh.seek(-1, os.SEEK_END)
        fh.write(b'\x01')
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert digests.file_digest(path) != first
    assert open_checkpoint(path).digest() == open_checkpoint(path).digest()


@pytest.mark.parametrize('keep', ['device', 'host', 'disk'])
def test_chunked_merge_matches_whole_tensors(pair, keep, monkeypatch):
    from retain_ros.merging import live_inputs

    whole = tiny_pi0(seed=9, dtype=torch.bfloat16)
    LiveMerger(whole, pair['bf_pre'], [pair['bf_ft']], MergeSpec(alpha=0.3), keep_sources=keep)
    monkeypatch.setattr(live_inputs, 'CHUNK_ELEMS', 1000)  # most tensors now span several chunks
    model = tiny_pi0(seed=9, dtype=torch.bfloat16)
    merger = LiveMerger(model, pair['bf_pre'], [pair['bf_ft']], MergeSpec(alpha=0.9),
                        keep_sources=keep)
    before = _snapshot(model)
    original = LiveMerger._merge_piece
    calls = {'n': 0}

    def flaky(self, merge, key, *args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 50:
            raise RuntimeError('injected failure inside a chunked tensor')
        return original(self, merge, key, *args, **kwargs)

    monkeypatch.setattr(LiveMerger, '_merge_piece', flaky)
    with pytest.raises(MergeError, match='injected.*previous weights are still live'):
        merger.apply(MergeSpec(alpha=0.3))
    assert _same(model, before)
    # disk mode's reader thread (reads one chunk ahead) is stopped, not left reading
    assert not [t for t in threading.enumerate() if t.name.startswith('retain-merge-read')]
    monkeypatch.setattr(LiveMerger, '_merge_piece', original)
    merger.apply(MergeSpec(alpha=0.3))
    assert _same(model, _snapshot(whole))


def _largest_allocation(fn) -> int:
    """Bytes of the largest allocation any op made while ``fn`` ran (torch's profiler)."""
    from torch.profiler import profile
    from torch.profiler import ProfilerActivity

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32])
def test_finite_check_makes_no_copy_of_the_tensor(dtype, monkeypatch):
    """The check of every source tensor at load allocates nothing of the tensor's size.

    ``sum(dtype=float32)`` of a bf16 tensor copied it whole to float32 first: 2 GiB for π0's
    embedding on top of the planned model + sources. Non-finite values are still found, by an
    exact test in bounded chunks, and a half-precision sum that overflows is not taken for one.
    """
    from retain_ros.merging import engine

    t = (torch.randn(1 << 22) * 0.02).to(dtype)
    assert engine.all_finite(t)
    assert _largest_allocation(lambda: engine.all_finite(t)) < (1 << 10)
    monkeypatch.setattr(engine, 'CHUNK_ELEMS', 1 << 16)
    for bad in (float('nan'), float('inf'), -float('inf')):
        u = t.clone()
        u[(1 << 22) - 3] = bad
        assert not engine.all_finite(u)
        assert _largest_allocation(lambda: engine.all_finite(u)) <= 8 * (1 << 16)
    big = torch.full((1 << 16,), 60000.0, dtype=dtype)   # finite; its fp16 sum overflows
    assert engine.all_finite(big)
