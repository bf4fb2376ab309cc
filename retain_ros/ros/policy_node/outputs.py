"""Outputs of the ``retain_policy`` node: a publisher (or action client) per embodiment output.

Chunk timing, the way ros2_control's joint_trajectory_controller executes a trajectory: a chunk
computed from an observation taken at ``t_obs`` (the state's header stamp corrected by
``clock_offset``; its arrival time when unstamped) holds the actions for ``t_obs + (i + 1)·dt``.
A ``joint_trajectory`` output publishes ``header.stamp = t_obs`` and ``time_from_start =
(i + 1)·dt`` (the controller skips the points whose time passed); stream outputs get one row
per control period, the elapsed ones already dropped (:mod:`retain_ros.runtime.acting`).

Message per output type:

- ``joint_trajectory``: ``trajectory_msgs/JointTrajectory`` (a hold is one point, stamp 0);
- ``position_stream`` / ``velocity_stream``: ``std_msgs/Float64MultiArray`` (forward
  position / velocity controllers);
- ``joint_state``: ``sensor_msgs/JointState`` with names and positions (Piper / Isaac Sim style);
- ``twist``: ``geometry_msgs/TwistStamped`` (MoveIt Servo), republished at the output's ``rate``
  (at least 30 Hz) until the next row, so Servo's command timeout never stops a moving arm;
- ``pose``: ``geometry_msgs/PoseStamped`` (a Cartesian controller's target);
- ``gripper_action``: the ``control_msgs`` ``GripperCommand`` / ``ParallelGripperCommand``
  action, a goal sent only when the (binarized) command changes. ``control_msgs`` is imported
  when such an output is configured; without it configure fails with the reason.

With ``dry_run`` every output goes to a preview topic of the same type instead: ``~/preview`` for
the first output, ``~/preview/<output name>`` for the others.
"""
from __future__ import annotations

import array
import threading
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import JointTrajectoryPoint

from retain_ros.control.control_loop import ControlLoop
from retain_ros.ros.conversions import sec_to_duration
from retain_ros.ros.conversions import sec_to_time

#: control_msgs action type per ``action_type`` of a gripper_action output
GRIPPER_ACTIONS = {'gripper_command': 'GripperCommand',
                   'parallel_gripper': 'ParallelGripperCommand'}


def build_trajectory(actions: np.ndarray, joint_names, obs_time: float,
                     dt: float) -> JointTrajectory:
    """Return a ``JointTrajectory`` stamped at the observation time, points at ``(i + 1) * dt``.

    Positions are handed over as ``array.array('d')`` (rosidl's setter takes it without checking
    every value in Python, and rclpy copies it as one buffer); the message is the same.
    """
    rows = np.ascontiguousarray(actions, dtype=np.float64)
    points = []
    for i in range(rows.shape[0]):
        point = JointTrajectoryPoint(time_from_start=sec_to_duration((i + 1) * dt))
        point.positions = array.array('d', rows[i].tobytes())
        points.append(point)
    msg = JointTrajectory(joint_names=list(joint_names), points=points)
    msg.header.stamp = sec_to_time(obs_time)
    return msg


def message_type(output_type: str):
    """Return the ROS message class an output of ``output_type`` publishes."""
    if output_type == 'joint_trajectory':
        return JointTrajectory
    if output_type in ('position_stream', 'velocity_stream'):
        return Float64MultiArray
    if output_type == 'joint_state':
        return JointState
    if output_type == 'twist':
        from geometry_msgs.msg import TwistStamped
        return TwistStamped
    if output_type == 'pose':
        from geometry_msgs.msg import PoseStamped
        return PoseStamped
    raise ValueError(f'output type {output_type!r} has no message type')


class OutputPublisher:
    """One output: builds its message from command values and publishes it.

    :param node: the node (publishers, clock).
    :param spec: the embodiment's output (``name``, ``type``, ``topic``, ``names``, ``frame``,
        ``rate``, ``action_type``, ``max_effort``).
    :param topic: where to publish (the output's topic, or its preview topic in dry_run).
    :param dt: the control period.
    """

    def __init__(self, node, spec, topic: str, dt: float):
        self.spec = spec
        self.topic = topic
        self._node = node
        self._dt = dt
        self._type = message_type(spec.type)
        self._pub = node.create_publisher(self._type, topic, 10)
        self._repeat: Optional[ControlLoop] = None
        self._last = None
        self._lock = threading.Lock()
        if spec.type == 'twist':
            rate = max(float(getattr(spec, 'rate', 0.0) or 0.0), 30.0)
            self._repeat = ControlLoop(f'retain_policy.{spec.name}', 1.0 / rate, self._again,
                                       lambda exc: node.context.ok())
            self._repeat.start()

    def publish(self, values: np.ndarray, stamp: Optional[float]) -> None:
        """Publish ``values``: a chunk ``(H, n)`` with its stamp, or one row (stamp None)."""
        msg = self._message(np.asarray(values, dtype=np.float64), stamp)
        with self._lock:
            self._last = msg
        self._pub.publish(msg)

    def _again(self) -> None:
        with self._lock:
            msg = self._last
        if msg is not None:
            msg.header.stamp = self._node.get_clock().now().to_msg()
            self._pub.publish(msg)

    def _message(self, values: np.ndarray, stamp: Optional[float]):
        kind = self.spec.type
        if kind == 'joint_trajectory':
            return build_trajectory(values.reshape(-1, len(self.spec.names)), self.spec.names,
                                    stamp or 0.0, self._dt)
        row = values.reshape(-1)
        if kind in ('position_stream', 'velocity_stream'):
            msg = Float64MultiArray()
            msg.data = [float(v) for v in row]
            return msg
        msg = self._type()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        if kind == 'joint_state':
            msg.name = list(self.spec.names)
            msg.position = [float(v) for v in row]
            return msg
        msg.header.frame_id = str(getattr(self.spec, 'frame', '') or '')
        if kind == 'twist':
            lin, ang = msg.twist.linear, msg.twist.angular
            lin.x, lin.y, lin.z, ang.x, ang.y, ang.z = (float(v) for v in row[:6])
            return msg
        pos, ori = msg.pose.position, msg.pose.orientation
        pos.x, pos.y, pos.z, ori.x, ori.y, ori.z, ori.w = (float(v) for v in row[:7])
        return msg

    def close(self) -> None:
        """Stop the repeat loop and destroy the publisher."""
        if self._repeat is not None:
            self._repeat.stop()
            self._repeat = None
        self._node.destroy_publisher(self._pub)


class GripperActionOutput:
    """A ``gripper_action`` output: one goal per change of the commanded gripper position.

    :param node: the node (action client).
    :param spec: the embodiment's output (``topic`` = the action's name, ``action_type``,
        ``max_effort``).
    :raises RuntimeError: ``control_msgs`` is not installed (the message says so).
    """

    def __init__(self, node, spec, topic: str, dt: float):
        try:
            from control_msgs import action as control_actions
            from rclpy.action import ActionClient
        except ImportError as exc:
            raise RuntimeError(
                f'output {spec.name!r} is a gripper_action, which needs the control_msgs '
                f'package (ros-<distro>-control-msgs): {exc}') from exc
        action_type = getattr(spec, 'action_type', 'gripper_command') or 'gripper_command'
        self._action = getattr(control_actions, GRIPPER_ACTIONS[action_type])
        self.spec = spec
        self.topic = topic
        self._client = ActionClient(node, self._action, topic)
        self._max_effort = float(getattr(spec, 'max_effort', 0.0) or 0.0)
        self._last: Optional[float] = None

    def publish(self, values: np.ndarray, stamp: Optional[float]) -> None:
        """Send a goal when the commanded position differs from the last goal sent."""
        position = float(np.asarray(values, dtype=np.float64).reshape(-1)[0])
        if self._last is not None and abs(position - self._last) < 1e-9:
            return
        if not self._client.server_is_ready():
            return
        goal = self._action.Goal()
        if hasattr(goal.command, 'max_effort'):     # control_msgs/GripperCommand
            goal.command.position = position
            goal.command.max_effort = self._max_effort
        else:                                       # ParallelGripperCommand: a JointState
            goal.command.name = list(self.spec.names)
            goal.command.position = [position]
            goal.command.effort = [self._max_effort]
        self._client.send_goal_async(goal)
        self._last = position

    def close(self) -> None:
        """Destroy the action client."""
        self._client.destroy()


class Outputs:
    """Every output of the embodiment, and the ``publish(name, values, stamp)`` function.

    :param node: the node.
    :param outputs: the embodiment's outputs, in order.
    :param dt: the control period.
    :param dry_run: callable returning the ``dry_run`` parameter (read at every publish).
    :param active: callable: whether publishing is allowed now (the node is active).
    """

    def __init__(self, node, outputs: List, dt: float, dry_run: Callable[[], bool],
                 active: Callable[[], bool]):
        self._real: Dict[str, object] = {}
        self._preview: Dict[str, object] = {}
        self._dry_run = dry_run
        self._active = active
        try:
            for i, spec in enumerate(outputs):
                preview = '~/preview' if i == 0 else f'~/preview/{spec.name}'
                if spec.type == 'gripper_action':
                    self._real[spec.name] = GripperActionOutput(node, spec, spec.topic, dt)
                    preview_spec = _PreviewOf(spec)
                    self._preview[spec.name] = OutputPublisher(node, preview_spec, preview, dt)
                else:
                    self._real[spec.name] = OutputPublisher(node, spec, spec.topic, dt)
                    self._preview[spec.name] = OutputPublisher(node, spec, preview, dt)
        except Exception:  # noqa: B902 - nothing swallowed: close what was made, re-raise
            self.close()
            raise

    def publish(self, name: str, values: np.ndarray, stamp: Optional[float],
                force: bool = False) -> None:
        """Publish one output's command (to its preview topic in dry_run)."""
        if not (force or self._active()):
            return
        target = (self._preview if self._dry_run() else self._real).get(name)
        if target is not None:
            target.publish(values, stamp)

    def update_specs(self, outputs: List) -> None:
        """Take the outputs of a re-loaded embodiment (same names and types; joint names bound)."""
        for spec in outputs:
            for group in (self._real, self._preview):
                out = group.get(spec.name)
                if out is not None and not isinstance(out.spec, _PreviewOf):
                    out.spec = spec
                elif out is not None:
                    out.spec = _PreviewOf(spec)

    def topics(self) -> List[str]:
        """Return the topics or action names commanded now."""
        return [p.topic for p in (self._preview if self._dry_run() else self._real).values()]

    def close(self) -> None:
        """Destroy every publisher and client."""
        for group in (self._real, self._preview):
            for out in group.values():
                out.close()
            group.clear()


class _PreviewOf:
    """A gripper_action output previewed as a one-value ``position_stream``."""

    def __init__(self, spec):
        self.name = spec.name
        self.names = list(spec.names)
        self.type = 'position_stream'
