"""``pretrained_path`` / ``finetuned_paths`` set live: a new finetune without a restart.

Real rclpy graph, tiny pi0 checkpoints on CPU: a third finetune (another seed) is switched in;
its chunks equal a fresh node's on the new pair; with alpha in one atomic set it is one merge; a
bad path or a running episode is refused and leaves the old weights and parameters live.
"""
import json
import os
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from conftest import write_tiny_pi0  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402

pytestmark = pytest.mark.ros

OUT = '/arm_controller/joint_trajectory'
JOINTS = (0.1, -0.2, 0.3, 0.0)


@pytest.fixture(scope='module')
def third_finetune(tmp_path_factory):
    """A third tiny pi0 checkpoint: same model configuration, another seed."""
    return write_tiny_pi0(tmp_path_factory.mktemp('ft3') / 'finetuned3', seed=3)


def _stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _chunk(harness, collector):
    """Feed a constant observation and return the positions of a chunk computed from it."""
    harness.feed(0.4, joints=JOINTS)
    since = harness.now()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        fresh = [m for _, m in collector.items[:] if _stamp(m) > since]
        if len(fresh) >= 2:     # the first one's step may have begun before ``since``
            return np.array([p.positions for p in fresh[1].points])
        harness.feed(0.1, joints=JOINTS)
    raise AssertionError('no chunk from the fed observation in 20 s')


def _merge_state(collector):
    return json.loads(collector.wait(1)[-1].data)


def _set_atomically(harness, **values):
    request = SetParametersAtomically.Request()
    request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return harness.call(SetParametersAtomically, '/retain_policy/set_parameters_atomically',
                        request, timeout=60.0).result


def test_switched_finetune_acts_like_a_fresh_node_on_the_new_pair(tiny_pi0_checkpoints,
                                                                  third_finetune):
    pre, ft = tiny_pi0_checkpoints
    harness = RosHarness()
    try:
        traj = harness.subscribe(JointTrajectory, OUT)
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        node = harness.start_node(pre, ft, alpha=0.5)
        before = _chunk(harness, traj)
        assert _merge_state(merge)['checkpoints']['finetuned'] == [os.path.abspath(ft)]
        result = harness.set_params(finetuned_paths=[third_finetune])[0]
        assert result.successful, result.reason
        state = _merge_state(merge)
        assert state['checkpoints'] == {
            'pretrained': os.path.abspath(pre), 'finetuned': [os.path.abspath(third_finetune)],
            'digests': state['checkpoints']['digests']}
        assert len(state['checkpoints']['digests']['finetuned']) == 1
        switched = _chunk(harness, traj)
        assert not np.allclose(switched, before), 'the new finetune is not in the actions'
        harness.stop_node(node)
        merge.clear()
        harness.start_node(pre, third_finetune, alpha=0.5)
        assert _merge_state(merge)['fingerprint'] == state['fingerprint']
        np.testing.assert_allclose(_chunk(harness, traj), switched, atol=1e-5)
    finally:
        harness.shutdown()


def test_atomic_switch_refusals_and_episodes(tiny_pi0_checkpoints, third_finetune, tmp_path):
    pre, ft = tiny_pi0_checkpoints
    log = tmp_path / 'episodes.jsonl'
    harness = RosHarness()
    try:
        traj = harness.subscribe(JointTrajectory, OUT)
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        node = harness.start_node(pre, ft, alpha=0.5, episode_log=str(log))
        generation = _merge_state(merge)['generation']
        merges = []
        merger = node.merger
        original = merger._apply
        merger._apply = lambda *a: merges.append(a[0]) or original(*a)
        # new finetune and alpha in one set_parameters_atomically: one merge with both
        result = _set_atomically(harness, finetuned_paths=[third_finetune], alpha=0.8)
        assert result.successful, result.reason
        assert [spec.alpha for spec in merges] == [0.8]
        state = _merge_state(merge)
        assert state['generation'] == generation + 1 and state['alpha']['language'] == 0.8
        assert state['checkpoints']['finetuned'] == [os.path.abspath(third_finetune)]
        live = _chunk(harness, traj)
        # a bad path: refused with the reason, old weights and parameter values stay
        missing = str(tmp_path / 'no_such_finetune')
        bad = _set_atomically(harness, finetuned_paths=[missing], alpha=0.3)
        assert not bad.successful and missing in bad.reason, bad.reason
        assert 'previous weights still live' in bad.reason
        assert node.get_parameter('finetuned_paths').value == [third_finetune]
        assert node.get_parameter('alpha').value == 0.8
        assert node.runtime.generation == generation + 1 and len(merges) == 1
        np.testing.assert_allclose(_chunk(harness, traj), live, atol=1e-6)
        # during an episode: refused, like alpha
        start = harness.call(Trigger, '/retain_policy/start_episode')
        assert start.success, start.message
        busy = harness.set_params(finetuned_paths=[ft])[0]
        assert not busy.successful and 'end it before switching checkpoints' in busy.reason
        assert node.get_parameter('finetuned_paths').value == [third_finetune]
        harness.feed(0.3, joints=JOINTS)
        end = harness.call(SetBool, '/retain_policy/end_episode', SetBool.Request(data=True))
        assert end.success, end.message
        # between episodes: switched back (same all-or-nothing path), the pretrained kept
        again = harness.set_params(finetuned_paths=[ft], pretrained_path=pre)
        assert all(r.successful for r in again), [r.reason for r in again]
        assert _merge_state(merge)['checkpoints']['finetuned'] == [os.path.abspath(ft)]
    finally:
        harness.shutdown()
    line = json.loads(log.read_text().splitlines()[-1])
    assert line['checkpoints']['pretrained'] == os.path.abspath(pre)
    assert line['checkpoints']['finetuned'] == [os.path.abspath(third_finetune)]
    assert line['alpha']['language'] == 0.8
