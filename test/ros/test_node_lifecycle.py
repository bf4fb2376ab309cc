"""The managed lifecycle of retain_policy over a real graph (lifecycle_msgs ChangeState /
GetState calls), and the joint-limit checks that must pass before it acts."""
import time

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('lifecycle_msgs')

from conftest import RosHarness  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402
from retain_ros.ros.policy_node.node import StartupError  # noqa: E402

OUT = '/arm_controller/joint_trajectory'


def _state(harness):
    return harness.call(GetState, '/retain_policy/get_state').current_state.label


def _change(harness, transition):
    request = ChangeState.Request(transition=Transition(id=transition))
    return harness.call(ChangeState, '/retain_policy/change_state', request, timeout=60).success


def _chunks_during(harness, traj, seconds):
    """Chunks (with points) received while feeding for ``seconds``."""
    start = time.monotonic()
    harness.feed(seconds)
    return [m for t, m in traj.items[:] if t > start and len(m.points) > 1]


def test_transitions(tiny_pi0_checkpoints):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, ft, autostart=False)
        traj = harness.subscribe(JointTrajectory, OUT)
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        assert _state(harness) == 'unconfigured' and node.policy is None
        assert not _chunks_during(harness, traj, 0.5)

        assert _change(harness, Transition.TRANSITION_CONFIGURE)
        assert _state(harness) == 'inactive' and node.policy is not None
        assert merge.wait(1)                                  # merged at configure
        assert not _chunks_during(harness, traj, 0.6), 'an inactive node commanded the arm'

        assert _change(harness, Transition.TRANSITION_ACTIVATE)
        assert _state(harness) == 'active'
        assert _chunks_during(harness, traj, 1.0)

        deactivated = time.monotonic()
        assert _change(harness, Transition.TRANSITION_DEACTIVATE)
        assert _state(harness) == 'inactive'
        stops = traj.wait(1, timeout=5, predicate=lambda m: len(m.points) == 1)
        stop = stops[-1]
        assert list(stop.joint_names), 'the hold trajectory names the joints'
        assert (stop.header.stamp.sec, stop.header.stamp.nanosec) == (0, 0), 'stamp 0: now'
        time.sleep(0.3)
        assert not [m for t, m in traj.items[:] if t > deactivated + 0.2 and len(m.points) > 1]
        assert not _chunks_during(harness, traj, 0.6), 'a deactivated node commanded the arm'
        assert node.diagnostics_status().message.startswith('holding: inactive')

        assert _change(harness, Transition.TRANSITION_ACTIVATE)
        assert _chunks_during(harness, traj, 1.0), 'no chunks after re-activation'
        assert _change(harness, Transition.TRANSITION_DEACTIVATE)
        assert _change(harness, Transition.TRANSITION_CLEANUP)
        assert _state(harness) == 'unconfigured' and node.policy is None
        assert _change(harness, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert _state(harness) == 'finalized'
    finally:
        harness.shutdown()


def test_configure_failure_keeps_the_node_unconfigured(tiny_pi0_checkpoints, tmp_path):
    harness = RosHarness()
    pre, _ = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, str(tmp_path / 'missing'), autostart=False)
        assert not _change(harness, Transition.TRANSITION_CONFIGURE)
        assert _state(harness) == 'unconfigured' and node.policy is None
        assert 'cannot load and merge' in node._transition_error
        # the same failure with autostart (the default) is a StartupError with the reason
        with pytest.raises(StartupError, match='cannot load and merge'):
            from retain_ros.ros.policy_node.node import PolicyNode

            PolicyNode(context=harness.context, parameter_overrides=[
                Parameter('pretrained_path', value=pre),
                Parameter('finetuned_paths', value=[str(tmp_path / 'missing')])])
    finally:
        harness.shutdown()


def test_limits_checked_against_the_first_joint_state(tiny_pi0_checkpoints):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        # joint_names empty: a 1-element limit list must not be broadcast to the 4 joints
        node = harness.start_node(pre, ft, joint_lower_limits=[-0.01], joint_upper_limits=[0.01],
                                  joint_names=None)
        traj = harness.subscribe(JointTrajectory, OUT)
        assert not _chunks_during(harness, traj, 1.5), 'acted with limits of the wrong length'
        status = node.diagnostics_status()
        assert status.level == DiagnosticStatus.ERROR, status.message
        assert 'joint_lower_limits has 1 value' in status.message
        from rcl_interfaces.srv import SetParametersAtomically

        # both arrays in one atomic set (one at a time, the first would not match the other)
        reply = harness.call(SetParametersAtomically, '/retain_policy/set_parameters_atomically',
                             SetParametersAtomically.Request(parameters=[
                                 Parameter('joint_lower_limits', value=[-0.01] * 4)
                                 .to_parameter_msg(),
                                 Parameter('joint_upper_limits', value=[0.01] * 4)
                                 .to_parameter_msg()]))
        assert reply.result.successful, reply.result.reason
        assert _chunks_during(harness, traj, 1.5), 'no chunks once the limits fit'
        assert node.diagnostics_status().level == DiagnosticStatus.OK
        # once the joints are known, a wrong length is refused at the set
        bad = harness.set_params(joint_upper_limits=[0.01])[0]
        assert not bad.successful and '1 value' in bad.reason
    finally:
        harness.shutdown()


def test_limits_checked_against_joint_names_at_startup(tiny_pi0_checkpoints):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        with pytest.raises(StartupError, match='joint_upper_limits has 2 value'):
            harness.start_node(pre, ft, joint_upper_limits=[1.0, 1.0])
    finally:
        harness.shutdown()


def test_cleanup_and_configure_again_do_not_pile_up_recording_subscriptions(
        tiny_pi0_checkpoints, tmp_path):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, ft, autostart=False, record=True,
                                  record_dir=str(tmp_path / 'bags'))
        counts = []
        for _ in range(2):
            assert _change(harness, Transition.TRANSITION_CONFIGURE)
            counts.append(len(list(node.subscriptions)))
            assert _change(harness, Transition.TRANSITION_CLEANUP)
        assert counts[0] == counts[1] and counts[0] > 0, counts
    finally:
        harness.shutdown()
