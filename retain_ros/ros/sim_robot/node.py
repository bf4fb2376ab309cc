"""The ``sim_robot`` node: a simulated arm, its controllers and its camera, on real ROS topics.

It stands in for a robot with ros2_control: it consumes the same
``trajectory_msgs/JointTrajectory`` chunks a joint_trajectory_controller would, timed and
sampled exactly as JTC does (:mod:`retain_ros.sim.trajectory_follower`: stamp 0 = start now,
a trajectory that ends in the past is rejected, past points skipped), and the
``Float64MultiArray`` commands of a forward position controller; also those of a forward
velocity controller, position targets by joint name, a MoveIt-Servo-like twist and a gripper
joint (:mod:`.commands`; the most recent command wins for the joints it names). It steps the
:class:`retain_ros.sim.world.SimWorld` physics in real time, and publishes
``sensor_msgs/JointState`` and an RGB image (:mod:`.camera`). Tasks are named in language; the
instruction of the current scene is published (transient local) so the policy node picks it up.

Evaluation rollouts: ``~/reset`` draws the scene for the current ``task`` / ``split`` / ``seed``
parameters; with ``auto_end_episode`` the node then tells the policy node how the episode ended
(:mod:`.episodes`). Parameters: :mod:`.parameters`; command line: :mod:`.main`.
"""
from __future__ import annotations

from dataclasses import asdict
import json
from typing import List

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy
from retain_ros.ros.sim_robot.camera import SimCamera
from retain_ros.ros.sim_robot.commands import SimCommandInputs
from retain_ros.ros.sim_robot.episodes import EpisodeReporter
from retain_ros.ros.sim_robot.parameters import PARAMETERS
from retain_ros.sim.tasks import get_task
from retain_ros.sim.tasks import SPLITS
from retain_ros.sim.trajectory_follower import TrajectoryError
from retain_ros.sim.trajectory_follower import TrajectoryFollower
from retain_ros.sim.world import SimWorld
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

NODE_NAME = 'sim_robot'


class SimRobotNode(Node):
    """The simulated robot node (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        p = self._param
        self.world = SimWorld(image_size=p('image_size'))
        self.joint_names: List[str] = list(self.world.joint_names)
        self.follower = TrajectoryFollower(self.joint_names, self.world.joint_positions())
        self._physics_dt = 1.0 / p('physics_rate')
        self._last_step = None
        self._last_q = self.world.joint_positions()
        self._velocity = np.zeros(len(self.joint_names))
        self._resets = 0
        self.rejected = 0

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.joint_pub = self.create_publisher(JointState, p('joint_states_topic'), 10)
        self.camera = SimCamera(self)
        self.instruction_pub = self.create_publisher(String, p('instruction_topic'), latched)
        self.scene_pub = self.create_publisher(String, '~/scene', latched)
        self.success_pub = self.create_publisher(Bool, '~/success', 10)
        self.episodes = EpisodeReporter(self, self.world, latched)
        self.create_subscription(JointTrajectory, p('trajectory_topic'),
                                 self.trajectory_callback, 10)
        self.create_subscription(Float64MultiArray, p('command_topic'), self.command_callback, 10)
        self.commands = SimCommandInputs(self, self.joint_names, self.world.lower_limits,
                                         self.world.upper_limits, self.world.max_velocity)
        self.create_service(Trigger, '~/reset', self.reset_callback)
        self.physics_timer = self.create_timer(self._physics_dt, self.physics_callback)
        self.camera_timer = self.create_timer(1.0 / p('camera_rate'), self.camera_callback)
        if p('reset_on_start'):
            ok, message = self.reset_world(open_episode=False)
            if not ok:
                self.get_logger().error(f'initial reset failed: {message}')
        self.get_logger().info(
            f'sim robot up: joints {self.joint_names}, camera {p("image_size")} px at '
            f'{p("camera_rate"):g} Hz on {self.camera.topic_name}, trajectories on '
            f'{p("trajectory_topic")}, commands on {p("command_topic")}, velocities on '
            f'{p("velocity_command_topic")}, by name on {p("joint_command_topic")}, twists on '
            f'{p("twist_topic")}, gripper on {p("gripper_command_topic")}')

    # ----------------------------------------------------------------------------- helpers
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == 'split' and param.value and param.value not in SPLITS:
                return SetParametersResult(
                    successful=False, reason=f'split must be one of {list(SPLITS)} or empty')
            if param.name == 'task':
                try:
                    get_task(param.value)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def reset_world(self, open_episode: bool = True):
        """Draw the scene of the current task / split / seed parameters.

        :param open_episode: with ``auto_end_episode``, report this episode's outcome.

        :return: ``(ok, message)``; message is the SceneInfo as JSON, or the error.
        """
        task, split, seed = self._param('task'), self._param('split'), self._param('seed')
        try:
            info = self.world.reset(task, split or None, int(seed))
        except ValueError as exc:
            return False, str(exc)
        q = self.world.joint_positions()
        self.follower.hold(q)
        self.commands.reset()
        self._last_q = q
        self._velocity[:] = 0.0
        self._last_step = None
        self._resets += 1
        self.episodes.start(self._resets, open_episode)
        text = json.dumps(asdict(info))
        self.scene_pub.publish(String(data=text))
        if self._param('publish_instruction'):
            self.instruction_pub.publish(String(data=info.instruction))
        self.get_logger().info(
            f'reset #{self._resets}: task={info.task} split={info.split} seed={info.seed} '
            f'[{info.variation_tag}] "{info.instruction}"')
        return True, text

    # --------------------------------------------------------------------------- callbacks
    def reset_callback(self, request, response):
        response.success, response.message = self.reset_world()
        return response

    def trajectory_callback(self, msg: JointTrajectory) -> None:
        # as joint_trajectory_controller: stamp 0 = start at the next update; a trajectory
        # that ends before now is rejected; the next physics step picks it up
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        points = [(pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9, pt.positions)
                  for pt in msg.points]
        try:
            self.follower.set_trajectory(msg.joint_names, points, stamp, self._now())
            self.commands.follow()  # it cancels velocity, twist and by-name targets
        except TrajectoryError as exc:
            self.rejected += 1
            self.get_logger().warning(f'trajectory rejected: {exc}', throttle_duration_sec=2.0)

    def command_callback(self, msg: Float64MultiArray) -> None:
        try:
            self.follower.set_target(list(msg.data))
            self.commands.follow()
        except TrajectoryError as exc:
            self.rejected += 1
            self.get_logger().warning(f'command rejected: {exc}', throttle_duration_sec=2.0)

    def physics_callback(self) -> None:
        now = self._now()
        dt = self._physics_dt if self._last_step is None else now - self._last_step
        # real-time stepping; a stalled process does not teleport the arm
        dt = min(max(dt, 0.0), 5.0 * self._physics_dt)
        self._last_step = now
        # the controller update: the command is the trajectory one period ahead (Jazzy's JTC),
        # unless another interface owns the joint (velocities are integrated over this step)
        measured = self.world.joint_positions()
        command = self.follower.update(now, measured, self._physics_dt)
        self.world.set_joint_targets(self.commands.arm_command(command, measured, now, dt))
        self.follower.settle(now)
        self.world.step(dt)
        q = self.world.joint_positions()
        if dt > 0.0:
            self._velocity = (q - self._last_q) / dt
        self._last_q = q
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.joint_names)
        msg.position = q.tolist()
        msg.velocity = self._velocity.tolist()
        self.joint_pub.publish(msg)
        self.commands.step_gripper(dt, msg.header.stamp)
        self.episodes.check()

    def camera_callback(self) -> None:
        self.camera.publish(self.world.render(), self.get_clock().now().to_msg())
        self.success_pub.publish(Bool(data=bool(self.world.success())))
