"""The node's outputs (``retain_ros/ros/policy_node/outputs.py``) without a ROS graph."""
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip('rclpy')

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.outputs import build_trajectory  # noqa: E402
from retain_ros.ros.policy_node.outputs import message_type  # noqa: E402
from retain_ros.ros.policy_node.outputs import Outputs  # noqa: E402


class _Node:
    """Publishers that record what they publish, a clock at 0."""

    def __init__(self):
        self.sent = []
        self.destroyed = []
        self.context = SimpleNamespace(ok=lambda: True)

    def create_publisher(self, msg_type, topic, qos):
        node = self
        return SimpleNamespace(topic=topic, publish=lambda m: node.sent.append((topic, m)))

    def destroy_publisher(self, pub):
        self.destroyed.append(pub.topic)

    def get_clock(self):
        return SimpleNamespace(now=lambda: SimpleNamespace(to_msg=Time))


def _spec(name, kind, topic, names=('j0', 'j1')):
    return SimpleNamespace(name=name, type=kind, topic=topic, names=list(names), frame='',
                           rate=0.0)


def test_trajectory_points_are_timed_from_the_observation():
    msg = build_trajectory(np.zeros((3, 2)), ['a', 'b'], 12.5, 0.1)
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 500_000_000
    offsets = [p.time_from_start.nanosec for p in msg.points]
    assert offsets == [100_000_000, 200_000_000, 300_000_000]
    assert list(msg.joint_names) == ['a', 'b']


def test_message_type_per_output_type():
    assert message_type('joint_trajectory') is JointTrajectory
    assert message_type('position_stream') is Float64MultiArray
    assert message_type('velocity_stream') is Float64MultiArray
    assert message_type('joint_state') is JointState
    with pytest.raises(ValueError, match='no message type'):
        message_type('gripper_action')


def test_outputs_publish_to_their_topic_or_the_preview_in_dry_run():
    node, dry = _Node(), [False]
    active = [True]
    outputs = Outputs(node, [_spec('arm', 'joint_trajectory', '/arm/joint_trajectory'),
                             _spec('hand', 'position_stream', '/hand/commands', ('g',))],
                      0.1, dry_run=lambda: dry[0], active=lambda: active[0])
    outputs.publish('arm', np.ones((2, 2)), 1.0)
    outputs.publish('hand', np.array([0.5]), None)
    assert [t for t, _ in node.sent] == ['/arm/joint_trajectory', '/hand/commands']
    assert list(node.sent[1][1].data) == [0.5]
    dry[0] = True
    outputs.publish('arm', np.ones((2, 2)), 1.0)
    assert node.sent[-1][0] == '~/preview'
    assert outputs.topics() == ['~/preview', '~/preview/hand']
    active[0] = False
    outputs.publish('arm', np.ones((2, 2)), 1.0)
    assert len(node.sent) == 3, 'published while not active'
    outputs.publish('arm', np.ones((1, 2)), 0.0, force=True)
    assert len(node.sent) == 4
    outputs.close()
    assert len(node.destroyed) == 4


def test_joint_state_output_names_its_joints():
    node = _Node()
    outputs = Outputs(node, [_spec('arm', 'joint_state', '/arm/command')], 0.1,
                      dry_run=lambda: False, active=lambda: True)
    outputs.publish('arm', np.array([0.1, 0.2]), None)
    msg = node.sent[-1][1]
    assert list(msg.name) == ['j0', 'j1'] and list(msg.position) == [0.1, 0.2]
    outputs.close()
