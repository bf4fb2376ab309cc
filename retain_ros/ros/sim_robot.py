"""The ``sim_robot`` node: a simulated arm, its controllers and its camera, on real ROS topics.

It stands in for a robot with ros2_control: it consumes the same
``trajectory_msgs/JointTrajectory`` chunks a joint_trajectory_controller would, timed and
sampled exactly as JTC does (:mod:`retain_ros.control.trajectory_follower`: stamp 0 = start now,
a trajectory that ends in the past is rejected, past points skipped), and the
``Float64MultiArray`` commands of a forward position controller; also those of a forward
velocity controller, position targets by joint name, a MoveIt-Servo-like twist and a gripper
joint (:mod:`retain_ros.ros.sim_commands`; the most recent command wins for the joints it
names). It steps the :class:`retain_ros.sim.world.SimWorld` physics in real time, and publishes
``sensor_msgs/JointState`` and an RGB ``sensor_msgs/Image``. Tasks are named in language; the
instruction of the current scene is published (transient local) so the policy node picks it up.

Evaluation rollouts: ``~/reset`` draws the scene for the current ``task`` / ``split`` / ``seed``
parameters; with ``auto_end_episode`` the node then tells the policy node how the episode ended
(``<policy_node>/end_episode``, ``std_srvs/SetBool``, data = success) as soon as the task's success
test holds or ``episode_timeout`` seconds have passed, and publishes the outcome on ``~/episode``
(``std_msgs/String`` JSON, transient local: ``reset``, ``success``, ``time_s``, ``reason``, the
SceneInfo fields, ``reported`` = the policy node accepted it, ``message`` = its reply).

Run it as ``ros2 run retain_ros sim_robot`` or ``retain-ros sim [--ros-args -p task:=...]``.
"""
from __future__ import annotations

from dataclasses import asdict
import json
import sys
import time
from typing import List
from typing import Optional

import cv2
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy
from retain_ros.ros.node_main import run_node
from retain_ros.ros.sim_commands import COMMAND_PARAMETERS
from retain_ros.ros.sim_commands import descriptor as _descriptor
from retain_ros.ros.sim_commands import SimCommandInputs
from retain_ros.control.trajectory_follower import TrajectoryError
from retain_ros.control.trajectory_follower import TrajectoryFollower
from retain_ros.sim.tasks import get_task
from retain_ros.sim.tasks import NEW_TASK
from retain_ros.sim.tasks import SPLITS
from retain_ros.sim.world import SimWorld
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

NODE_NAME = 'sim_robot'
#: how long a pending end_episode call waits for the policy node's service to appear (s)
END_EPISODE_WAIT = 10.0


# name -> (default, descriptor); read-only ones need a restart
PARAMETERS = {
    'task': (NEW_TASK, _descriptor(
        'task name (reach_red, reach_yellow, ...) or its instruction; used at the next reset')),
    'split': ('', _descriptor(
        "scene distribution: generalist | new_id | new_ood; empty = the task's first split; "
        'used at the next reset')),
    'seed': (0, _descriptor('scene seed; used at the next reset', int_range=(0, 2 ** 31 - 1))),
    'image_size': (96, _descriptor('camera image side in pixels', read_only=True,
                                   int_range=(16, 1024))),
    'physics_rate': (50.0, _descriptor('physics steps and joint_states per second',
                                       read_only=True, float_range=(1.0, 1000.0))),
    'camera_rate': (10.0, _descriptor('camera images (and ~/success) per second',
                                      read_only=True, float_range=(0.1, 120.0))),
    'trajectory_topic': ('/arm_controller/joint_trajectory', _descriptor(
        'trajectory_msgs/JointTrajectory input (joint_trajectory_controller)', read_only=True)),
    'command_topic': ('/forward_position_controller/commands', _descriptor(
        'std_msgs/Float64MultiArray direct position targets (forward controller)',
        read_only=True)),
    **COMMAND_PARAMETERS,
    'joint_states_topic': ('joint_states', _descriptor(
        "sensor_msgs/JointState output: the arm's joints only", read_only=True)),
    'camera_topic': ('camera/image_raw', _descriptor('sensor_msgs/Image (rgb8) output',
                                                     read_only=True)),
    'camera_frame_id': ('camera', _descriptor('frame_id of the images', read_only=True)),
    'image_format': ('raw', _descriptor(
        'raw: sensor_msgs/Image (rgb8) on camera_topic; jpeg: sensor_msgs/CompressedImage on '
        'compressed_topic (what a robot sends over Wi-Fi)', read_only=True)),
    'compressed_topic': ('', _descriptor(
        'CompressedImage topic of image_format jpeg; empty = <camera_topic>/compressed '
        "(image_transport's name)", read_only=True)),
    'jpeg_quality': (90, _descriptor('JPEG quality of image_format jpeg', read_only=True,
                                     int_range=(1, 100))),
    'instruction_topic': ('instruction', _descriptor(
        "std_msgs/String output, transient local: the scene's instruction", read_only=True)),
    'publish_instruction': (True, _descriptor('publish the instruction after each reset')),
    'auto_end_episode': (False, _descriptor(
        'after a reset, call <policy_node>/end_episode with the outcome once the task succeeds '
        'or episode_timeout passes')),
    'policy_node': ('/retain_policy', _descriptor(
        'node whose end_episode service auto_end_episode calls', read_only=True)),
    'episode_timeout': (30.0, _descriptor('seconds after a reset before an episode fails',
                                          float_range=(0.1, 3600.0))),
    'reset_on_start': (True, _descriptor('draw the first scene when the node starts',
                                         read_only=True)),
}


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
        self._episode_open = False
        self._end_pending = None  # (outcome, since) while waiting for the service
        self._resets = 0
        self.rejected = 0

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.joint_pub = self.create_publisher(JointState, p('joint_states_topic'), 10)
        self._jpeg = self._image_format() == 'jpeg'
        if self._jpeg:
            topic = p('compressed_topic') or p('camera_topic').rstrip('/') + '/compressed'
            self.image_pub = self.create_publisher(CompressedImage, topic, 2)
        else:
            self.image_pub = self.create_publisher(Image, p('camera_topic'), 2)
        self.instruction_pub = self.create_publisher(String, p('instruction_topic'), latched)
        self.scene_pub = self.create_publisher(String, '~/scene', latched)
        self.success_pub = self.create_publisher(Bool, '~/success', 10)
        self.episode_pub = self.create_publisher(String, '~/episode', latched)
        self.create_subscription(JointTrajectory, p('trajectory_topic'),
                                 self.trajectory_callback, 10)
        self.create_subscription(Float64MultiArray, p('command_topic'), self.command_callback, 10)
        self.commands = SimCommandInputs(self, self.joint_names, self.world.lower_limits,
                                         self.world.upper_limits, self.world.max_velocity)
        self.create_service(Trigger, '~/reset', self.reset_callback)
        policy = p('policy_node').rstrip('/') or '/retain_policy'
        self.end_client = self.create_client(SetBool, f'{policy}/end_episode')
        self.physics_timer = self.create_timer(self._physics_dt, self.physics_callback)
        self.camera_timer = self.create_timer(1.0 / p('camera_rate'), self.camera_callback)
        if p('reset_on_start'):
            ok, message = self.reset_world(open_episode=False)
            if not ok:
                self.get_logger().error(f'initial reset failed: {message}')
        self.get_logger().info(
            f'sim robot up: joints {self.joint_names}, camera {p("image_size")} px at '
            f'{p("camera_rate"):g} Hz on {self.image_pub.topic_name}, trajectories on '
            f'{p("trajectory_topic")}, commands on {p("command_topic")}, velocities on '
            f'{p("velocity_command_topic")}, by name on {p("joint_command_topic")}, twists on '
            f'{p("twist_topic")}, gripper on {p("gripper_command_topic")}')

    # ----------------------------------------------------------------------------- helpers
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _image_format(self) -> str:
        fmt = str(self._param('image_format')).strip().lower()
        if fmt not in ('raw', 'jpeg'):
            raise ValueError(f"image_format must be 'raw' or 'jpeg', not {fmt!r}")
        return fmt

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
        self._episode_open = open_episode and bool(self._param('auto_end_episode'))
        self._end_pending = None
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
        self._check_episode()

    def camera_callback(self) -> None:
        rgb = np.ascontiguousarray(self.world.render(), dtype=np.uint8)
        msg = CompressedImage() if self._jpeg else Image()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._param('camera_frame_id')
        if self._jpeg:
            _, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(self._param('jpeg_quality'))])
            msg.format = 'rgb8; jpeg compressed bgr8'  # image_transport's format string
            msg.data = data.tobytes()
            self.image_pub.publish(msg)
            self.success_pub.publish(Bool(data=bool(self.world.success())))
            return
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding = 'rgb8'
        msg.is_bigendian = 0
        msg.step = msg.width * 3
        msg.data = rgb.tobytes()
        self.image_pub.publish(msg)
        self.success_pub.publish(Bool(data=bool(self.world.success())))

    # ---------------------------------------------------------------------------- episodes
    def _check_episode(self) -> None:
        if self._episode_open:
            success = bool(self.world.success())
            if success or self.world.time >= self._param('episode_timeout'):
                self._episode_open = False
                outcome = {'reset': self._resets, 'success': success,
                           'time_s': round(self.world.time, 3),
                           'reason': 'success' if success else 'timeout',
                           **asdict(self.world.info)}
                self._end_pending = (outcome, time.monotonic())
        if self._end_pending is None:
            return
        outcome, since = self._end_pending
        if self.end_client.service_is_ready():
            self._end_pending = None
            future = self.end_client.call_async(SetBool.Request(data=outcome['success']))
            future.add_done_callback(lambda f, o=outcome: self._end_done(f, o))
            self.get_logger().info(
                f'episode over after {outcome["time_s"]:.1f} s: '
                f'{"SUCCESS" if outcome["success"] else "failure (timeout)"}; calling '
                f'{self.end_client.srv_name}')
        elif time.monotonic() - since > END_EPISODE_WAIT:
            self._end_pending = None
            message = f'{self.end_client.srv_name} not available after {END_EPISODE_WAIT:g} s'
            self.get_logger().error(f'{message}; episode outcome not reported')
            self._publish_outcome(outcome, False, message)

    def _end_done(self, future, outcome) -> None:
        try:
            result = future.result()
        except Exception as exc:  # noqa: B902 (any failure of the remote call is reported)
            self.get_logger().error(f'end_episode call failed: {exc}')
            self._publish_outcome(outcome, False, str(exc))
            return
        if result is None:
            self._publish_outcome(outcome, False, 'no response')
            return
        if not result.success:
            self.get_logger().warning(f'end_episode refused: {result.message}')
        self._publish_outcome(outcome, bool(result.success), result.message)

    def _publish_outcome(self, outcome, reported: bool, message: str) -> None:
        """Publish the episode's end on ``~/episode`` (JSON), for orchestrators and operators."""
        data = dict(outcome, reported=reported, message=message)
        self.episode_pub.publish(String(data=json.dumps(data)))


def _usage() -> str:
    lines = ['usage: retain-ros sim [--ros-args -p NAME:=VALUE ...]',
             '       ros2 run retain_ros sim_robot [--ros-args -p NAME:=VALUE ...]', '',
             'Simulated arm + controllers + camera. Parameters:']
    for name, (default, desc) in PARAMETERS.items():
        lines.append(f'  {name} (default {default!r}): {desc.description}')
    lines += ['', 'Services: ~/reset (std_srvs/Trigger). Topics out: joint_states, '
              'gripper/joint_states, camera/image_raw, instruction (latched), ~/scene, '
              '~/success, ~/episode.']
    return '\n'.join(lines)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until Ctrl-C.

    :param args: command-line arguments without the program name (``retain-ros sim``), or None
        to use ``sys.argv`` (``ros2 run``).
    :return: exit status.
    """
    return run_node(NODE_NAME, SimRobotNode, args, _usage)


if __name__ == '__main__':
    sys.exit(main())
