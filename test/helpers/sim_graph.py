"""A real rclpy graph around one in-process sim_robot node (shared by the sim_robot tests)."""
from __future__ import annotations

import json
import os
import random
import threading
import time

from builtin_interfaces.msg import Duration
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy
from retain_ros.ros.node_main import make_executor
from retain_ros.ros.sim_robot.node import SimRobotNode
from sensor_msgs.msg import Image
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import JointTrajectoryPoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_SIZE = 48
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)


def wait_for(predicate, timeout=5.0, period=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


class Graph:
    """A sim node and a test node spinning in a background executor."""

    def __init__(self):
        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        self.domain = random.randint(100, 199)
        os.environ['ROS_DOMAIN_ID'] = str(self.domain)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        self.sim = SimRobotNode(context=self.context, parameter_overrides=[
            Parameter('image_size', value=IMAGE_SIZE),
            Parameter('camera_rate', value=20.0),
            Parameter('policy_node', value='/test_policy'),
            Parameter('task', value='reach_red'),
        ])
        self.node = rclpy.create_node('sim_robot_test', context=self.context)
        self.joint_states = []
        self.images = []
        self.success = []
        self.end_calls = []
        self.node.create_subscription(JointState, '/joint_states', self.joint_states.append, 50)
        self.node.create_subscription(Image, '/camera/image_raw', self.images.append, 5)
        self.node.create_subscription(Bool, '/sim_robot/success', self.success.append, 10)
        self.episodes = []
        self.node.create_subscription(String, '/sim_robot/episode',
                                      lambda m: self.episodes.append(json.loads(m.data)), LATCHED)
        self.end_reply = (True, 'ok')
        self.node.create_service(SetBool, '/test_policy/end_episode', self._end_episode)
        self.traj_pub = self.node.create_publisher(
            JointTrajectory, '/arm_controller/joint_trajectory', 10)
        self.cmd_pub = self.node.create_publisher(
            Float64MultiArray, '/forward_position_controller/commands', 10)
        self.reset_client = self.node.create_client(Trigger, '/sim_robot/reset')
        # the sim on the executor its main() uses, the test node on its own (as separate
        # processes would be), each on its own thread
        self.executors = [make_executor(context=self.context),
                          SingleThreadedExecutor(context=self.context)]
        self.executors[0].add_node(self.sim)
        self.executors[1].add_node(self.node)
        self._running = True
        self.threads = [threading.Thread(target=self._spin, args=(e,), daemon=True)
                        for e in self.executors]
        for thread in self.threads:
            thread.start()

    def _spin(self, executor):
        # spin_once in a loop (not spin()) so close() can stop it before anything is destroyed
        while self._running and self.context.ok():
            executor.spin_once(timeout_sec=0.05)

    def _end_episode(self, request, response):
        self.end_calls.append((request.data, self.sim.world.time))
        response.success, response.message = self.end_reply
        return response

    def close(self):
        self._running = False
        for thread in self.threads:
            thread.join(timeout=5.0)
        for executor in self.executors:
            executor.shutdown(timeout_sec=2.0)
        self.sim.destroy_node()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def latest_q(self):
        return np.array(self.joint_states[-1].position)

    def reset(self, **params):
        if params:
            result = self.sim.set_parameters([Parameter(k, value=v) for k, v in params.items()])
            assert all(r.successful for r in result), result
        # generous bounds: they only cost time when something is wrong (or CI is very busy)
        assert self.reset_client.wait_for_service(timeout_sec=20.0)
        future = self.reset_client.call_async(Trigger.Request())
        assert wait_for(future.done, 20.0)
        # joint states published before the reset may still be in flight: wait for new ones
        count = len(self.joint_states)
        assert wait_for(lambda: len(self.joint_states) >= count + 3, 20.0)
        return future.result()

    def send_trajectory(self, names, points, stamp_now=False, stamp_offset=None):
        """Publish a trajectory; its stamp is 0, now, or now + ``stamp_offset`` (s)."""
        msg = JointTrajectory()
        msg.joint_names = list(names)
        if stamp_now:
            msg.header.stamp = self.node.get_clock().now().to_msg()
        if stamp_offset is not None:
            ns = self.node.get_clock().now().nanoseconds + int(stamp_offset * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 10 ** 9)
        for t, pos in points:
            point = JointTrajectoryPoint()
            point.positions = [float(v) for v in pos]
            point.time_from_start = Duration(sec=int(t), nanosec=int(round((t % 1) * 1e9)))
            msg.points.append(point)
        assert wait_for(lambda: self.traj_pub.get_subscription_count() > 0, 15.0)
        self.traj_pub.publish(msg)
