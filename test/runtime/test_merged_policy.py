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
