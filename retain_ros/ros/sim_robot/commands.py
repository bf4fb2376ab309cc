"""The sim robot's extra command interfaces and its gripper, on ROS topics.

Part of the ``sim_robot`` node (:mod:`retain_ros.ros.sim_robot.node`), beside its trajectory
and forward position controllers (parameters in :mod:`retain_ros.ros.sim_robot.parameters`);
each interface behaves like the ros2_control / MoveIt component it stands in for:

- ``velocity_command_topic`` (``std_msgs/Float64MultiArray``, default
  ``/forward_velocity_controller/commands``): one velocity per arm joint (rad/s), like
  forward_command_controller on velocity interfaces. The joint targets move at the commanded
  velocity (integrated by the physics step), limited to the joints' speed; a command persists
  until the next one, except that after ``velocity_timeout`` seconds without a command the
  velocities go to zero (0 = never). The real forward_command_controller has no such timeout
  (the last command stays on the interface); many hardware interfaces have a watchdog like it.
  A command of the wrong length or with non-finite values is rejected (throttled warning) and
  the previous one stays, like the forward controller's size check.
- ``joint_command_topic`` (``sensor_msgs/JointState``, default ``joint_command``, the Piper /
  Isaac Sim style): position targets by joint name, any subset of the arm's joints and the
  gripper joint; ``position`` must hold one value per name. Unknown or repeated names, a length
  mismatch or non-finite values reject the whole message (warning).
- ``twist_topic`` (``geometry_msgs/TwistStamped``, default ``/servo_node/delta_twist_cmds``),
  like MoveIt Servo with ``command_in_type: speed_units``: the gripper (end effector) moves with
  ``twist.linear.x`` / ``.y`` (m/s) in the arm's base frame (the sim's world frame;
  ``header.frame_id`` is not looked up, the sim has no TF). The arm is planar: ``linear.z`` and
  ``angular`` are ignored (a throttled warning says so when they are non-zero). Joint velocities
  come from the damped least-squares inverse of the arm's Jacobian, scaled uniformly to the
  joint speed limit. The arm stops when no twist arrived for ``twist_timeout`` seconds (Servo's
  ``incoming_command_timeout``, default 0.1).
- ``gripper_command_topic`` (``std_msgs/Float64MultiArray``, default
  ``/gripper_controller/commands``): one gripper position (m, 0 = open, 0.04 = closed; clipped),
  like a forward position controller on the gripper joint. The gripper also takes targets from
  ``joint_command_topic``.
- ``gripper_states_topic`` (``sensor_msgs/JointState``, default ``gripper/joint_states``): the
  gripper joint's position and velocity, every physics step, with the arm's stamp. It is never
  in the arm's ``joint_states`` (that message keeps exactly the arm's joints).

The most recent command of any interface wins for the joints it names: an accepted trajectory or
forward position command takes every arm joint back (cancelling velocity / twist motion and
by-name targets), a velocity or twist command takes every arm joint, a by-name command only the
joints it names. ``~/reset`` clears velocity and twist state and opens the gripper.
"""
from __future__ import annotations

import math
from typing import Dict
from typing import List

from geometry_msgs.msg import TwistStamped
import numpy as np
from retain_ros.sim.commands import CommandArbiter
from retain_ros.sim.gripper import SimGripper
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray


class SimCommandInputs:
    """The extra command subscriptions, the gripper and its state publisher of a sim node.

    :param node: the ``sim_robot`` node; its topic and timeout parameters must be declared,
        its ``rejected`` counter is incremented for every rejected command.
    :param joint_names: the arm's joints.
    :param lower: the arm's lower joint limits.
    :param upper: the arm's upper joint limits.
    :param max_velocity: the arm's joint speed limit (rad/s).
    """

    def __init__(self, node, joint_names: List[str], lower, upper, max_velocity: float):
        self._node = node
        self.joint_names = list(joint_names)
        self.arbiter = CommandArbiter(len(self.joint_names), lower, upper, max_velocity)
        self.gripper = SimGripper()
        #: rejected commands per interface (``velocity``, ``joint_command``, ``twist``,
        #: ``gripper``)
        self.rejections: Dict[str, int] = {}
        param = node.get_parameter
        self.gripper_pub = node.create_publisher(
            JointState, param('gripper_states_topic').value, 10)
        node.create_subscription(Float64MultiArray, param('velocity_command_topic').value,
                                 self.velocity_callback, 10)
        node.create_subscription(JointState, param('joint_command_topic').value,
                                 self.joint_command_callback, 10)
        node.create_subscription(TwistStamped, param('twist_topic').value,
                                 self.twist_callback, 10)
        node.create_subscription(Float64MultiArray, param('gripper_command_topic').value,
                                 self.gripper_callback, 10)

    def _now(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def _reject(self, interface: str) -> None:
        self.rejections[interface] = self.rejections.get(interface, 0) + 1
        self._node.rejected += 1

    # ------------------------------------------------------------------------- the node's
    def follow(self) -> None:
        """Give every arm joint to the follower (an accepted trajectory or position command)."""
        self.arbiter.follow()

    def reset(self) -> None:
        """Scene reset: every arm joint back to the follower, velocities cleared, gripper open."""
        self.arbiter.follow()
        self.gripper.reset()

    def arm_command(self, follower_command: np.ndarray, q: np.ndarray, now: float,
                    dt: float) -> np.ndarray:
        """Position targets of one physics step (see :meth:`CommandArbiter.command`)."""
        self.arbiter.velocity_timeout = float(self._node.get_parameter('velocity_timeout').value)
        self.arbiter.twist_timeout = float(self._node.get_parameter('twist_timeout').value)
        return self.arbiter.command(follower_command, q, now, dt)

    def step_gripper(self, dt: float, stamp) -> None:
        """Move the gripper by one physics step and publish its state with ``stamp``."""
        self.gripper.step(dt)
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = [self.gripper.name]
        msg.position = [float(self.gripper.position)]
        msg.velocity = [float(self.gripper.velocity)]
        self.gripper_pub.publish(msg)

    # --------------------------------------------------------------------------- callbacks
    def velocity_callback(self, msg: Float64MultiArray) -> None:
        values = list(msg.data)
        if len(values) != len(self.joint_names):
            self._reject('velocity')
            self._node.get_logger().warning(
                f'velocity command rejected: command size ({len(values)}) does not match number '
                f'of interfaces ({len(self.joint_names)}: {self.joint_names})',
                throttle_duration_sec=1.0)
            return
        if not all(math.isfinite(v) for v in values):
            self._reject('velocity')
            self._node.get_logger().warning(
                f'velocity command rejected: non-finite values {values}',
                throttle_duration_sec=1.0)
            return
        self.arbiter.set_velocities(values, self._now())

    def joint_command_callback(self, msg: JointState) -> None:
        names, positions = [str(n) for n in msg.name], list(msg.position)
        known = self.joint_names + [self.gripper.name]
        unknown = [n for n in names if n not in known]
        error = None
        if not names:
            error = 'no joint names'
        elif unknown:
            error = f'unknown joint(s) {unknown}; this robot has {known}'
        elif len(set(names)) != len(names):
            error = f'joint names repeated: {names}'
        elif len(positions) != len(names):
            error = f'{len(positions)} positions for {len(names)} joint names'
        elif not all(math.isfinite(v) for v in positions):
            error = f'non-finite positions {positions}'
        if error is not None:
            self._reject('joint_command')
            self._node.get_logger().warning(f'joint command rejected: {error}',
                                            throttle_duration_sec=2.0)
            return
        arm = [(self.joint_names.index(n), p) for n, p in zip(names, positions)
               if n in self.joint_names]
        if arm:
            self.arbiter.set_positions([i for i, _ in arm], [p for _, p in arm])
        for name, position in zip(names, positions):
            if name == self.gripper.name:
                self.gripper.set_target(position)

    def twist_callback(self, msg: TwistStamped) -> None:
        linear, angular = msg.twist.linear, msg.twist.angular
        values = [linear.x, linear.y, linear.z, angular.x, angular.y, angular.z]
        if not all(math.isfinite(v) for v in values):
            self._reject('twist')
            self._node.get_logger().warning(f'twist rejected: non-finite values {values}',
                                            throttle_duration_sec=2.0)
            return
        if any(values[2:]):
            self._node.get_logger().warning(
                'twist: linear.z and angular are ignored (the arm is planar; only linear x, y '
                'are followed)', throttle_duration_sec=5.0)
        self.arbiter.set_twist([linear.x, linear.y], self._now())

    def gripper_callback(self, msg: Float64MultiArray) -> None:
        values = list(msg.data)
        if len(values) != 1 or not math.isfinite(values[0]):
            self._reject('gripper')
            self._node.get_logger().warning(
                f'gripper command rejected: expected one finite position for '
                f'[{self.gripper.name}], got {values}', throttle_duration_sec=1.0)
            return
        self.gripper.set_target(values[0])
