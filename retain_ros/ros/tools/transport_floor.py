"""The transport floor under :mod:`.node_latency`: the same round trip with no policy node.

An echo node subscribes to the same topics with the node's QoS (``joint_states`` and one
224x224 rgb8 camera per topic, best effort, rclpy's own deserialization as a plain node does) and,
once it holds every message of a sample's stamp, publishes a prebuilt ``JointTrajectory`` of the
node's chunk shape stamped with it. Publish -> trajectory received on the probe is then what
rclpy and DDS cost for those messages in this process layout (publish calls, loopback both ways,
deserialization, two executors' dispatch) and nothing else: the part of the node's overhead that
no change in the node can remove. With ``separate_process`` the echo node runs in a child process
(``python -m retain_ros.ros.tools.transport_floor CAMERAS POINTS``), as a camera driver and a
controller would: DDS then crosses processes (shared memory or UDP loopback) instead of Fast
DDS's intra-process path, and the two sides no longer share one GIL.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Dict
from typing import List
from typing import Optional

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from retain_ros.ros.node_main import make_executor
from retain_ros.ros.node_main import spin_in_background
from retain_ros.ros.policy_node.outputs import build_trajectory
from retain_ros.ros.policy_node.qos import SENSOR_QOS
from retain_ros.ros.tools.checkpoints import JOINTS
from sensor_msgs.msg import Image
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _echo_node(context: Context, cameras: int, points: int):
    """Create the echo node: it publishes the chunk-shaped trajectory once a stamp is complete."""
    topics = [f'cam{i}/image_raw' for i in range(cameras)]
    echo = rclpy.create_node('transport_floor_echo', context=context)
    out = echo.create_publisher(JointTrajectory, '/arm_controller/joint_trajectory', 10)
    template = build_trajectory(np.zeros((points, len(JOINTS))), JOINTS, 0.0, 0.02)
    got: Dict[int, set] = {}
    needed = set(topics) | {'joint_states'}

    def on_input(name: str, msg) -> None:
        stamp = _stamp_ns(msg)
        seen = got.setdefault(stamp, set())
        seen.add(name)
        if seen == needed:
            template.header.stamp = msg.header.stamp
            out.publish(template)

    echo.create_subscription(JointState, 'joint_states',
                             lambda m: on_input('joint_states', m), SENSOR_QOS)
    for topic in topics:
        echo.create_subscription(Image, topic, lambda m, t=topic: on_input(t, m), SENSOR_QOS)
    return echo


def run_floor(cameras: int, samples: int, points: int, warmup: int = 5,
              separate_process: bool = False) -> List[float]:
    """Return ``samples`` echo round trips (ms) with ``cameras`` cameras and a chunk of ``points``.

    :param points: the trajectory's point count (the node's chunk horizon).
    :param separate_process: the echo node runs in a child process (a camera driver and a
        controller are other processes than the policy node) instead of in this one.
    """
    from retain_ros.ros.tools.node_latency import sample_messages
    from retain_ros.ros.tools.node_latency import SIDE

    context = Context()
    rclpy.init(context=context)
    topics = [f'cam{i}/image_raw' for i in range(cameras)]
    child = echo = None
    if separate_process:
        child = subprocess.Popen([sys.executable, '-m', __name__, str(cameras), str(points)])
    else:
        echo = _echo_node(context, cameras, points)
    probe = rclpy.create_node('transport_floor_probe', context=context)
    image_pubs = [probe.create_publisher(Image, t, 10) for t in topics]
    joint_pub = probe.create_publisher(JointState, 'joint_states', 10)
    arrived: Dict[int, float] = {}
    cond = threading.Condition()

    def on_chunk(msg) -> None:
        now = time.monotonic()
        with cond:
            arrived.setdefault(_stamp_ns(msg), now)
            cond.notify_all()

    probe.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory', on_chunk, 10)
    nodes = [n for n in (echo, probe) if n is not None]
    executors = [make_executor(context=context) for _ in nodes]
    for executor, node in zip(executors, nodes):
        executor.add_node(node)
    threads = [spin_in_background(e) for e in executors]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in topics]
    rows: List[float] = []
    last = 0
    try:
        deadline = time.monotonic() + 30.0
        while child is not None and not probe.count_subscribers('joint_states'):
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError('the echo process did not come up')
            time.sleep(0.1)
        time.sleep(1.0)
        for i in range(warmup + samples):
            stamp_ns = last = max(probe.get_clock().now().nanoseconds, last + 1)
            joints, msgs = sample_messages(images, stamp_ns)
            t_pub = time.monotonic()
            joint_pub.publish(joints)
            for pub, msg in zip(image_pubs, msgs):
                pub.publish(msg)
            with cond:
                cond.wait_for(lambda: stamp_ns in arrived, timeout=2.0)
                t_arr = arrived.get(stamp_ns)
            if i >= warmup and t_arr is not None:
                rows.append((t_arr - t_pub) * 1e3)
            time.sleep(0.12)    # the node benchmark's spacing
    finally:
        for executor in executors:
            executor.shutdown(timeout_sec=5)
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
        for thread in threads:
            thread.join(timeout=5)
        if child is not None:
            child.terminate()
            child.wait(timeout=10)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    """Child process of ``run_floor(separate_process=True)``: spin the echo node until killed."""
    cameras, points = (int(a) for a in (sys.argv[1:] if argv is None else argv))
    context = Context()
    rclpy.init(context=context)
    executor = make_executor(context=context)
    executor.add_node(_echo_node(context, cameras, points))
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == '__main__':
    main()
