"""The sim_robot node's other command interfaces and its gripper, in a real rclpy graph.

Forward velocity commands, position targets by joint name (``sensor_msgs/JointState``), the
MoveIt-Servo-like twist, the gripper's command topic and its own state topic, and the rule that
the most recent command of any interface wins for the joints it names.
"""
from __future__ import annotations

import time

from geometry_msgs.msg import TwistStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from retain_ros.sim.gripper import GRIPPER_CLOSED
from retain_ros.sim.gripper import GRIPPER_JOINT
from retain_ros.sim.gripper import GRIPPER_SPEED
from retain_ros.sim.world import end_effector
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from helpers.sim_graph import Graph
from helpers.sim_graph import wait_for

pytestmark = pytest.mark.ros
ARM = ['shoulder_joint', 'elbow_joint', 'wrist_joint']
PERIOD = 0.02  # the sim's default physics period


class InterfaceGraph(Graph):
    """The sim node's graph plus publishers for the extra inputs and the gripper's states."""

    def __init__(self):
        super().__init__()
        self.gripper_states = []
        self.node.create_subscription(JointState, '/gripper/joint_states',
                                      self.gripper_states.append, 50)
        self.velocity_pub = self.node.create_publisher(
            Float64MultiArray, '/forward_velocity_controller/commands', 10)
        self.joint_command_pub = self.node.create_publisher(JointState, '/joint_command', 10)
        self.twist_pub = self.node.create_publisher(
            TwistStamped, '/servo_node/delta_twist_cmds', 10)
        self.gripper_pub = self.node.create_publisher(
            Float64MultiArray, '/gripper_controller/commands', 10)
        for pub in (self.velocity_pub, self.joint_command_pub, self.twist_pub,
                    self.gripper_pub):
            assert wait_for(lambda p=pub: p.get_subscription_count() > 0, 15.0), pub.topic_name

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def velocity(self, values):
        self.velocity_pub.publish(Float64MultiArray(data=[float(v) for v in values]))

    def joint_command(self, names, positions):
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = list(names)
        msg.position = [float(v) for v in positions]
        self.joint_command_pub.publish(msg)

    def twist(self, vx, vy, angular_z=0.0):
        msg = TwistStamped()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = 'base_link'
        msg.twist.linear.x, msg.twist.linear.y = float(vx), float(vy)
        msg.twist.angular.z = float(angular_z)
        self.twist_pub.publish(msg)

    def gripper(self, values):
        self.gripper_pub.publish(Float64MultiArray(data=[float(v) for v in values]))

    def gripper_position(self):
        return self.gripper_states[-1].position[0]

    def settled(self, duration=0.2):
        """Joint positions once they have not changed for ``duration`` seconds."""
        def still():
            count = len(self.joint_states)
            q = self.latest_q()
            time.sleep(duration)
            return len(self.joint_states) > count and np.array_equal(self.latest_q(), q)
        assert wait_for(still, 10.0), 'the arm does not come to rest'
        return self.latest_q()


def _stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


@pytest.fixture(scope='module')
def graph():
    g = InterfaceGraph()
    try:
        assert wait_for(lambda: len(g.joint_states) > 0 and len(g.gripper_states) > 0, 10.0)
        yield g
    finally:
        g.close()


def test_gripper_on_its_own_topic_never_in_joint_states(graph):
    graph.reset(task='reach_red', split='', seed=1)
    assert wait_for(lambda: graph.gripper_states, 10.0)
    msg = graph.gripper_states[-1]
    assert list(msg.name) == [GRIPPER_JOINT] and msg.position[0] == 0.0   # open after a reset
    assert msg.header.stamp.sec > 0
    q0 = graph.latest_q()
    count = len(graph.gripper_states)
    graph.gripper([GRIPPER_CLOSED])
    assert wait_for(lambda: graph.gripper_position() == GRIPPER_CLOSED, 10.0)
    states = graph.gripper_states[count:]
    moving = [m for m in states if 0.0 < m.position[0] < GRIPPER_CLOSED]
    # bounded speed: 0.04 m at 0.05 m/s takes 0.8 s
    assert _stamp(moving[-1]) - _stamp(moving[0]) > 0.6
    assert max(m.velocity[0] for m in states) <= GRIPPER_SPEED + 1e-9
    # the arm is not affected, and joint_states only ever holds the arm's joints
    np.testing.assert_array_equal(graph.latest_q(), q0)
    assert all(list(m.name) == ARM and len(m.position) == 3 for m in graph.joint_states)
    # the same stamps as the arm's joint states (one physics step publishes both)
    arm_stamps = {_stamp(m) for m in graph.joint_states[-20:]}
    assert arm_stamps & {_stamp(m) for m in graph.gripper_states[-20:]}
    # wrong length and non-finite: rejected, the target is kept
    rejected = graph.sim.rejected
    graph.gripper([0.0, 0.01])
    graph.gripper([float('nan')])
    assert wait_for(lambda: graph.sim.rejected == rejected + 2, 10.0)
    assert graph.sim.commands.rejections['gripper'] >= 2
    time.sleep(0.2)
    assert graph.gripper_position() == GRIPPER_CLOSED
    # a reset opens it at once
    graph.reset()
    assert wait_for(lambda: graph.gripper_position() == 0.0, 5.0)


def test_velocity_command_integrates_and_persists(graph):
    graph.reset(task='reach_red', split='', seed=1, velocity_timeout=0.0)
    q0 = graph.latest_q()
    velocity = np.array([0.3, -0.4, 0.2])
    count = len(graph.joint_states)
    graph.velocity(velocity)
    time.sleep(1.0)   # far beyond the default timeout: 0 = no timeout
    states = graph.joint_states[count:]
    assert not np.allclose(graph.latest_q(), q0)
    moving = [m for m in states if not np.allclose(m.position, q0)]
    assert len(moving) > 20
    # the joints move at the commanded velocity (positions over the messages' stamps)
    first, last = moving[2], moving[-1]
    slope = (np.array(last.position) - np.array(first.position)) / (_stamp(last) - _stamp(first))
    np.testing.assert_allclose(slope, velocity, rtol=0.1)
    np.testing.assert_allclose(np.median([m.velocity for m in moving], axis=0), velocity,
                               rtol=0.05)
    # zero velocity stops the arm
    graph.velocity([0.0, 0.0, 0.0])
    held = graph.settled()
    time.sleep(0.3)
    np.testing.assert_array_equal(graph.latest_q(), held)
    assert graph.sim.commands.arbiter.sources == ['velocity'] * 3


def test_velocity_timeout_and_bad_velocity_commands(graph):
    graph.reset(task='reach_red', split='', seed=2, velocity_timeout=0.3)
    q0 = graph.latest_q()
    rejected = graph.sim.rejected
    graph.velocity([0.1, 0.2])                      # wrong length
    graph.velocity([0.1, float('inf'), 0.0])        # non-finite
    assert wait_for(lambda: graph.sim.rejected == rejected + 2, 10.0)
    assert graph.sim.commands.rejections['velocity'] >= 2
    time.sleep(0.2)
    np.testing.assert_array_equal(graph.latest_q(), q0)
    velocity = np.array([0.5, -0.5, 0.0])
    graph.velocity(velocity)
    held = graph.settled()
    # it moved for the timeout (plus at most about a physics period and the delivery), then
    # stopped without another command
    travelled = (held - q0)[:2] / velocity[:2]
    assert np.all(travelled > 0.3 - PERIOD) and np.all(travelled < 0.3 + 4 * PERIOD), travelled
    assert held[2] == q0[2]
    graph.reset(velocity_timeout=0.5)


def test_joint_command_by_name(graph):
    graph.reset(task='reach_red', split='', seed=3)
    q0 = graph.latest_q()
    rejected = graph.sim.rejected
    graph.joint_command(['elbow_joint', 'finger_joint'], [1.0, 0.0])    # unknown name
    graph.joint_command(['elbow_joint', 'wrist_joint'], [1.0])          # length mismatch
    graph.joint_command(['elbow_joint', 'elbow_joint'], [1.0, 1.1])     # repeated
    assert wait_for(lambda: graph.sim.rejected == rejected + 3, 10.0)
    assert graph.sim.commands.rejections['joint_command'] >= 3
    time.sleep(0.2)
    np.testing.assert_array_equal(graph.latest_q(), q0)
    assert graph.gripper_position() == 0.0
    # any subset, any order, the gripper included
    graph.joint_command([GRIPPER_JOINT, 'elbow_joint'], [0.02, q0[1] - 0.4])
    assert wait_for(lambda: np.isclose(graph.latest_q()[1], q0[1] - 0.4, atol=1e-9), 10.0)
    assert wait_for(lambda: np.isclose(graph.gripper_position(), 0.02, atol=1e-9), 10.0)
    q = graph.latest_q()
    assert q[0] == q0[0] and q[2] == q0[2]          # the joints not named hold
    assert graph.sim.commands.arbiter.sources == ['follow', 'position', 'follow']
    # then all three arm joints
    goal = q0 + np.array([0.2, -0.2, 0.2])
    graph.joint_command(ARM, goal)
    assert wait_for(lambda: np.allclose(graph.latest_q(), goal, atol=1e-9), 10.0)


def test_twist_moves_the_end_effector_and_stops(graph):
    graph.reset(task='reach_red', split='', seed=4)
    q0 = graph.latest_q()
    twist = np.array([0.15, 0.05])
    count = len(graph.joint_states)
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:   # a servo client streams commands (here at ~50 Hz)
        graph.twist(*twist, angular_z=0.5)   # angular is ignored: the arm is planar
        time.sleep(PERIOD)
    last_sent = graph.now()
    held = graph.settled()
    moved = end_effector(held) - end_effector(q0)
    direction = moved / np.linalg.norm(moved)
    assert float(direction @ (twist / np.linalg.norm(twist))) > 0.99, moved
    # at the commanded speed, for about as long as it was commanded
    assert 0.45 * np.linalg.norm(twist) < np.linalg.norm(moved) < 0.8 * np.linalg.norm(twist)
    # it stops within the 0.1 s incoming-command timeout plus a physics period after the last
    # command arrived (and was sent: plus its delivery)
    states = graph.joint_states[count:]
    received = graph.sim.commands.arbiter.twist_stamp
    assert last_sent - 0.7 < received < last_sent + 0.1
    late = [m for m in states if _stamp(m) > received + 0.1 + PERIOD]
    assert late and all(np.array_equal(m.position, held) for m in late)
    assert not any(np.array_equal(m.position, held) for m in states
                   if _stamp(m) < received + 0.1 - PERIOD)
    early = [np.array(m.position) for m in states
             if last_sent - 0.15 < _stamp(m) < last_sent - 0.02]
    assert len(early) > 2 and not np.allclose(early[0], early[-1])   # still moving until then
    assert graph.sim.commands.arbiter.sources == ['twist'] * 3


def test_most_recent_command_wins(graph):
    graph.reset(task='reach_red', split='', seed=5, velocity_timeout=0.0)
    q0 = graph.latest_q()
    # a trajectory cancels velocity motion: the arm ends on its goal and stays there
    graph.velocity([0.3, -0.3, 0.3])
    time.sleep(0.3)
    goal = q0 + np.array([-0.2, -0.1, 0.1])
    graph.send_trajectory(ARM, [(0.5, goal)])
    assert wait_for(lambda: np.allclose(graph.latest_q(), goal, atol=1e-9), 10.0)
    time.sleep(0.3)
    np.testing.assert_allclose(graph.latest_q(), goal, atol=1e-9)
    assert graph.sim.commands.arbiter.sources == ['follow'] * 3
    # a velocity command cancels the trajectory: zero velocity stops it half way
    far = goal + np.array([0.6, -0.6, 0.6])
    graph.send_trajectory(ARM, [(3.0, far)])
    assert wait_for(lambda: np.linalg.norm(graph.latest_q() - goal) > 0.1, 10.0)
    graph.velocity([0.0, 0.0, 0.0])
    stopped = graph.settled()
    assert np.linalg.norm(far - stopped) > 0.3
    # a by-name target takes only its joints; the others keep their velocity
    graph.velocity([0.0, -0.4, 0.4])
    time.sleep(0.2)
    graph.joint_command(['elbow_joint'], [stopped[1]])
    time.sleep(0.5)
    q = graph.latest_q()
    assert np.isclose(q[1], stopped[1], atol=1e-9)   # back on its target and held
    assert q[2] > stopped[2] + 0.2                   # still moving at 0.4 rad/s
    assert graph.sim.commands.arbiter.sources == ['velocity', 'position', 'velocity']
    # a forward position command takes everything back
    graph.cmd_pub.publish(Float64MultiArray(data=q0.tolist()))
    assert wait_for(lambda: np.allclose(graph.latest_q(), q0, atol=1e-9), 10.0)
    assert graph.sim.commands.arbiter.sources == ['follow'] * 3


def test_reset_clears_velocity_and_opens_the_gripper(graph):
    graph.reset(task='reach_red', split='', seed=6, velocity_timeout=0.0)
    graph.velocity([0.2, -0.2, 0.2])
    graph.gripper([GRIPPER_CLOSED])
    assert wait_for(lambda: graph.gripper_position() > 0.01, 10.0)
    graph.reset()
    q = graph.latest_q()
    time.sleep(0.3)
    np.testing.assert_array_equal(graph.latest_q(), q)
    assert graph.gripper_position() == 0.0
    assert graph.sim.commands.arbiter.sources == ['follow'] * 3
    graph.sim.set_parameters([Parameter('velocity_timeout', value=0.5)])


def test_help_lists_the_new_parameters(capsys):
    from retain_ros.ros.sim_robot.main import main
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    for name in ('velocity_command_topic', 'velocity_timeout', 'joint_command_topic',
                 'twist_topic', 'twist_timeout', 'gripper_command_topic',
                 'gripper_states_topic'):
        assert name in out
