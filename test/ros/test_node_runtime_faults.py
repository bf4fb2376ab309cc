"""The node's weights under faults, on a real rclpy graph: the stale-chunk race after a live alpha
change, a merge whose restore fails, reloads refused mid-episode."""
import threading
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

OUT = '/arm_controller/joint_trajectory'
STREAM = '/forward_position_controller/commands'
JOINTS = (0.1, -0.1, 0.2, 0.0)


def _actions(msg):
    return np.array([list(p.positions) for p in msg.points])


def _latest_chunk(harness, traj, since_wall):
    """The first chunk received after ``since_wall`` (monotonic), feeding meanwhile."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = [m for t, m in traj.items[:] if t > since_wall]
        if got:
            return _actions(got[0])
        harness.feed(0.05, joints=JOINTS)
    raise AssertionError('no chunk')


def _delay_once(node, seconds):
    """Arm a one-shot delay between predict and publish; returns the event set when it starts."""
    started = threading.Event()

    def hook():
        if not started.is_set():
            started.set()
            time.sleep(seconds)

    node.after_predict = hook
    return started


@pytest.mark.parametrize('mode', ['trajectory', 'stream'])
def test_no_chunk_of_old_weights_after_a_set_returned(tiny_pi0_checkpoints, mode):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        extra = {} if mode == 'trajectory' else {'output_mode': 'stream', 'output_topic': STREAM,
                                                 'replan_steps': 5}
        # chunks of 10 x 0.1 s: a chunk delayed 0.6 s still has future points (not 'late')
        node = harness.start_node(pre, ft, alpha=0.0, control_period=0.1, **extra)
        traj = harness.subscribe(JointTrajectory, OUT)
        stream = harness.subscribe(Float64MultiArray, STREAM)
        # reference chunks of both weight sets, from the same constant observation
        if mode == 'trajectory':
            at_zero = _latest_chunk(harness, traj, time.monotonic() + 0.3)
            assert harness.set_params(alpha=1.0)[0].successful
            at_one = _latest_chunk(harness, traj, time.monotonic() + 0.3)
            assert harness.set_params(alpha=0.0)[0].successful
        else:
            at_zero = node.runtime.predict(_obs(node))[0].actions
            assert harness.set_params(alpha=1.0)[0].successful
            at_one = node.runtime.predict(_obs(node))[0].actions
            assert harness.set_params(alpha=0.0)[0].successful
        assert not np.allclose(at_zero, at_one, atol=1e-4)
        stop = threading.Event()
        feeder = harness.feed_in_background(stop, JOINTS)
        try:
            time.sleep(0.5)
            started = _delay_once(node, 0.6)    # the next chunk waits 0.6 s before publishing
            assert started.wait(20)
            result = harness.set_params(alpha=1.0)[0]
            set_returned = time.monotonic()
            assert result.successful, result.reason
            time.sleep(2.0)
        finally:
            stop.set()
            feeder.join(5)
        late = set_returned + 0.2
        if mode == 'trajectory':
            after = [_actions(m) for t, m in traj.items[:] if t > late]
            assert after, 'no chunk after the alpha change'
            for actions in after:
                assert not np.allclose(actions, at_zero, atol=1e-5), \
                    'a chunk computed with the old weights was published after the set returned'
                np.testing.assert_allclose(actions, at_one, atol=1e-5)
        else:
            after = [np.array(m.data) for t, m in stream.items[:] if t > late]
            assert after, 'no command after the alpha change'
            for command in after:
                assert np.min(np.abs(at_zero - command).max(axis=1)) > 1e-5, \
                    'an action of the old weights was streamed after the set returned'
        assert node.dropped.get('stale_generation', 0) >= 1
    finally:
        harness.shutdown()


def _obs(node):
    from conftest import TEST_INSTRUCTION
    from retain_ros.policies.base import Observation

    rgb = np.full((32, 32, 3), 128, np.uint8)
    rgb[:16, :, 0] = 255
    return Observation(images={s: rgb for s in node.policy.camera_names},
                       instruction=TEST_INSTRUCTION, state=np.array(JOINTS))


def _inject_restore_failure(merger):
    original = merger._run
    calls = []

    def failing(tensor_merger, keys, check, snapshot, done):
        calls.append(1)
        if len(calls) == 1:
            original(tensor_merger, keys[:3], check, snapshot, done)   # half-merged
        raise RuntimeError('injected: device lost')

    merger._run = failing
    return lambda: setattr(merger, '_run', original)


def _diag(harness, diag, predicate, timeout=10):
    diag.clear()
    return diag.wait(1, timeout=timeout, predicate=lambda m: predicate(m.status[0]))[-1].status[0]


def test_failed_restore_holds_with_error_until_reload(tiny_pi0_checkpoints):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, ft, alpha=0.5)
        traj = harness.subscribe(JointTrajectory, OUT)
        diag = harness.subscribe(DiagnosticArray, '/diagnostics')
        before = _latest_chunk(harness, traj, time.monotonic())
        restore = _inject_restore_failure(node.merger)
        result = harness.set_params(alpha=0.9)[0]
        failed_at = time.monotonic()
        restore()
        assert not result.successful and 'could not be restored' in result.reason
        assert node.get_parameter('alpha').value == 0.5
        harness.feed(1.0, joints=JOINTS)
        assert not [m for t, m in traj.items[:] if t > failed_at + 0.3], \
            'published a chunk computed on half-merged weights'
        assert 'weights invalid' in (node.hold_reason or '')
        status = _diag(harness, diag, lambda s: s.level == DiagnosticStatus.ERROR)
        assert 'reload' in status.message
        refused = harness.set_params(alpha=0.7)[0]         # no merge on inconsistent weights
        assert not refused.successful and 'reload' in refused.reason
        reply = harness.call(Trigger, '/retain_policy/reload_weights')
        assert reply.success, reply.message
        reloaded_at = time.monotonic()
        np.testing.assert_allclose(_latest_chunk(harness, traj, reloaded_at + 0.2), before,
                                   atol=1e-5)
        _diag(harness, diag, lambda s: s.level == DiagnosticStatus.OK)
    finally:
        harness.shutdown()


def test_reload_refused_mid_episode(tiny_pi0_checkpoints, tmp_path):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        harness.start_node(pre, ft, episode_log=str(tmp_path / 'ep.jsonl'))
        assert harness.call(Trigger, '/retain_policy/start_episode').success
        reply = harness.call(Trigger, '/retain_policy/reload_weights')
        assert not reply.success and 'episode' in reply.message
        assert harness.call(SetBool, '/retain_policy/end_episode',
                            SetBool.Request(data=False)).success
        assert harness.call(Trigger, '/retain_policy/reload_weights').success
    finally:
        harness.shutdown()
