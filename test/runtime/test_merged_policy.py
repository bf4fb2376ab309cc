"""MergedPolicy (no ROS): generations, the publish check, failed restores, reload, release."""
import os
import shutil
import threading
import time

import numpy as np
import pytest

from conftest import TEST_INSTRUCTION
from conftest import write_tiny_pi0
from retain_ros.merging.errors import MergeError
from retain_ros.merging.spec import MergeSpec
from retain_ros.policies.base import Observation
from retain_ros.policies.loader import load_merged_policy
from retain_ros.runtime.merged_policy import MergedPolicy
from retain_ros.runtime.merged_policy import RuntimeInvalidError


def _runtime(pre, ft, alpha=0.5):
    policy, merger = load_merged_policy(pre, [ft], MergeSpec(alpha=alpha), device='cpu',
                                        dtype='float32', warmup=False)
    return MergedPolicy(policy, merger)


def _obs(runtime):
    images = {n: np.full((32, 32, 3), 100, np.uint8) for n in runtime.policy.camera_names}
    return Observation(images=images, instruction=TEST_INSTRUCTION,
                       state=np.zeros(runtime.policy.state_dim))


def _inject_restore_failure(merger):
    """The next merge fails half-way and so does its restore (a real LiveMerger path)."""
    original = merger._run
    calls = []

    def failing(merge, inputs, keys, check, done, bar=None):
        calls.append(len(keys))
        if len(calls) == 1:
            original(merge, inputs, keys[:3], check, done, bar)   # 3 tensors overwritten
        raise RuntimeError('injected: device lost')

    merger._run = failing
    return lambda: setattr(merger, '_run', original)


def test_generation_and_publish_check(tiny_pi0_checkpoints):
    runtime = _runtime(*tiny_pi0_checkpoints)
    assert runtime.warm_up() > 0
    chunk, gen = runtime.predict(_obs(runtime))
    assert chunk.actions.shape == (runtime.policy.chunk_size, runtime.policy.state_dim)
    with runtime.current(gen) as ok:
        assert ok
    state = runtime.set_spec(MergeSpec(alpha=1.0))
    assert state.alphas['language'] == 1.0 and runtime.generation == gen + 1
    with runtime.current(gen) as ok:
        assert not ok, 'a chunk of the previous weights passed the check after set_spec returned'
    again, gen2 = runtime.predict(_obs(runtime))
    assert gen2 == gen + 1 and not np.allclose(again.actions, chunk.actions)
    # a refused merge (the old weights restored) changes nothing
    with pytest.raises(MergeError):
        runtime.set_spec(MergeSpec(recipe='capability', alpha=0.5))
    assert runtime.valid and runtime.generation == gen2
    with runtime.current(gen2) as ok:
        assert ok


def test_set_spec_waits_for_the_running_prediction(tiny_pi0_checkpoints):
    runtime = _runtime(*tiny_pi0_checkpoints)
    policy = runtime.policy
    original = policy.predict
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(0.5)
        return original(*args, **kwargs)

    policy.predict = slow
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=runtime.predict(_obs(runtime))))
    thread.start()
    assert started.wait(10)
    t0 = time.monotonic()
    runtime.set_spec(MergeSpec(alpha=0.9))
    assert time.monotonic() - t0 > 0.2     # the merge waited for the prediction in progress
    thread.join(10)
    _, generation = result['out']
    assert not runtime.is_current(generation)


def test_failed_restore_invalidates_until_reload(tiny_pi0_checkpoints):
    runtime = _runtime(*tiny_pi0_checkpoints)
    restore = _inject_restore_failure(runtime.merger)
    with pytest.raises(RuntimeInvalidError, match='could not restore'):
        runtime.set_spec(MergeSpec(alpha=0.9))
    restore()
    assert not runtime.valid and 'inconsistent' in runtime.invalid_reason
    with pytest.raises(RuntimeInvalidError):
        runtime.predict(_obs(runtime))
    with pytest.raises(RuntimeInvalidError):            # no merge on half-merged weights
        runtime.set_spec(MergeSpec(alpha=0.5))
    state = runtime.reload()
    assert runtime.valid and state.alphas['vision'] == 0.5
    chunk, gen = runtime.predict(_obs(runtime))
    assert np.all(np.isfinite(chunk.actions)) and runtime.is_current(gen)


def test_reload_refuses_bad_files_before_taking_the_lock(tiny_pi0_checkpoints, tmp_path):
    pre, ft = str(tmp_path / 'pre'), str(tmp_path / 'ft')
    shutil.copytree(tiny_pi0_checkpoints[0], pre)
    shutil.copytree(tiny_pi0_checkpoints[1], ft)
    runtime = _runtime(pre, ft)
    fingerprint = runtime.state.fingerprint
    weights = os.path.join(ft, 'model.safetensors')
    with open(weights + '.tmp', 'wb') as handle:
        handle.write(b'not a safetensors file' * 10)
    os.replace(weights + '.tmp', weights)
    gen = runtime.generation
    with runtime._model_lock:     # inference "running": validation must not need the lock
        box = {}
        thread = threading.Thread(target=lambda: box.update(err=_catch(runtime.reload)))
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), 'reload waited for the model lock before validating'
    assert isinstance(box['err'], MergeError)
    assert runtime.valid and runtime.generation == gen and runtime.state.fingerprint == fingerprint
    shutil.rmtree(ft)
    write_tiny_pi0(ft, seed=9)
    assert runtime.reload().fingerprint != fingerprint and runtime.generation == gen + 1


def _catch(fn):
    try:
        fn()
    except Exception as exc:  # noqa: B902
        return exc
    return None


def test_release_frees_the_model(tiny_pi0_checkpoints):
    runtime = _runtime(*tiny_pi0_checkpoints)
    runtime.release()
    assert runtime.policy is None and runtime.merger is None and not runtime.valid


# ---------------------------------------------------------------- switching checkpoints live
def _third(tmp_path, seed=3, **kwargs):
    """A third tiny pi0 (another seed) with its own, non-identity normalization statistics."""
    from retain_ros.policies.loader import load_policy
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import save_pi0_checkpoint

    out = write_tiny_pi0(tmp_path / f'ft{seed}', seed=seed, **kwargs)
    policy = load_policy(out, device='cpu', dtype='float32', warmup=False)
    d = policy.state_dim
    stats = NormStats(state_mean=np.full(d, 0.2), state_std=np.full(d, 2.0),
                      action_mean=np.full(policy.action_dim, -0.3),
                      action_std=np.full(policy.action_dim, 3.0), source='test')
    return save_pi0_checkpoint(policy, out, stats=stats)


def test_switch_equals_a_fresh_runtime_on_the_new_pair(tiny_pi0_checkpoints, tmp_path):
    pre, ft = tiny_pi0_checkpoints
    ft3 = _third(tmp_path)
    runtime = _runtime(pre, ft)
    before, gen = runtime.predict(_obs(runtime))
    state = runtime.switch(pre, [ft3], MergeSpec(alpha=0.7))   # sources and alpha: one merge
    fresh = _runtime(pre, ft3, alpha=0.7)
    assert runtime.generation == gen + 1 and state.fingerprint == fresh.state.fingerprint
    after, _ = runtime.predict(_obs(runtime))
    np.testing.assert_allclose(after.actions, fresh.predict(_obs(fresh))[0].actions, atol=1e-6)
    assert not np.allclose(after.actions, before.actions)
    assert runtime.policy.stats.action.stats['std'][0] == pytest.approx(3.0)  # ft3's statistics
    live = runtime.checkpoints()
    assert live['pretrained'] == os.path.abspath(pre)
    assert live['finetuned'] == [os.path.abspath(ft3)]
    assert live['digests'] == fresh.checkpoints()['digests']
    assert runtime.merge_state()['checkpoints'] == live
    runtime.reload()                                # a reload re-reads the switched-to files
    assert runtime.checkpoints()['finetuned'] == [os.path.abspath(ft3)]


def test_switch_refusals_leave_everything_live(tiny_pi0_checkpoints, tmp_path):
    pre, ft = tiny_pi0_checkpoints
    runtime = _runtime(pre, ft)
    chunk, gen = runtime.predict(_obs(runtime))
    live, stats, fp = runtime.checkpoints(), runtime.policy.stats, runtime.state.fingerprint
    other_config = write_tiny_pi0(tmp_path / 'chunk12', seed=4, chunk_size=12)
    other_shapes = write_tiny_pi0(tmp_path / 'wide', seed=5, state_dim=6, action_dim=6)
    no_stats = write_tiny_pi0(tmp_path / 'nostats', seed=6)
    for name in os.listdir(no_stats):
        if name.startswith('policy_'):
            os.remove(os.path.join(no_stats, name))
    cases = [
        (str(tmp_path / 'missing'), 'no such checkpoint'),
        (other_config, 'chunk_size'),
        (other_shapes, 'shape'),
        (no_stats, 'normalization statistics'),
    ]
    for path, reason in cases:
        with pytest.raises(MergeError, match=reason):
            runtime.switch(pre, [path], MergeSpec(alpha=0.9))
    with pytest.raises(MergeError, match='capability'):          # a spec unfit for the sources
        runtime.switch(pre, [_third(tmp_path)], MergeSpec(recipe='capability', alpha=0.5))
    assert runtime.valid and runtime.generation == gen and runtime.state.fingerprint == fp
    assert runtime.checkpoints() == live and runtime.policy.stats is stats
    again, _ = runtime.predict(_obs(runtime))
    np.testing.assert_array_equal(again.actions, chunk.actions)


def test_switch_refused_by_the_memory_plan_before_allocating(tiny_pi0_checkpoints, tmp_path,
                                                             monkeypatch):
    from retain_ros.merging import live
    from retain_ros.merging import memory
    from retain_ros.merging.memory import MemoryPlanError

    pre, ft = tiny_pi0_checkpoints
    policy, merger = load_merged_policy(pre, [ft], MergeSpec(alpha=0.5), device='cpu',
                                        dtype='float32', keep_sources='host', warmup=False)
    runtime = MergedPolicy(policy, merger)
    ft3 = _third(tmp_path)
    loads = []
    monkeypatch.setattr(live, 'load_cache', lambda *a: loads.append(a))
    monkeypatch.setattr(memory, 'host_free', lambda: (1024, 'test limit'))
    with pytest.raises(MemoryPlanError, match='keep_sources=host does not fit'):
        runtime.switch(pre, [ft3])
    assert loads == [] and runtime.valid
    assert runtime.checkpoints()['finetuned'] == [os.path.abspath(ft)]
