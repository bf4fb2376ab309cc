"""Load for the policy node: a process publishing camera images and joint states, a CPU hog.

The publisher runs in its own process and rclpy context, as a camera driver would: 224x224 rgb8
images and ``sensor_msgs/JointState`` messages, each stamped with the time it is published, at
rates that can change while it runs. This module imports nothing heavy: the spawned processes
import it again.
"""
from __future__ import annotations

import multiprocessing
import time
from typing import Dict

import numpy as np
from retain_ros.ros.tools.checkpoints import JOINTS

CAMERA_TOPIC = 'camera/image_raw'
JOINT_TOPIC = 'joint_states'
SIDE = 224


def _publisher_main(rates, counts, stop, ready, side: int, qos: str) -> None:
    """Publish images and joint states at ``rates`` (``[image_hz, joint_hz]``, 0 = paused)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from sensor_msgs.msg import JointState

    from retain_ros.ros.conversions import rgb_to_image

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('input_load_publisher', context=context)
    profile = qos_profile_sensor_data if qos == 'sensor' else 10
    image_pub = node.create_publisher(Image, CAMERA_TOPIC, profile)
    joint_pub = node.create_publisher(JointState, JOINT_TOPIC, profile)
    rgb = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    image = rgb_to_image(rgb)
    joints = JointState(name=list(JOINTS), position=[0.0] * len(JOINTS))
    ready.set()
    next_image = next_joint = time.monotonic()
    current = (None, None)
    try:
        while not stop.is_set():
            image_hz, joint_hz = float(rates[0]), float(rates[1])
            now = time.monotonic()
            if (image_hz, joint_hz) != current:
                current = (image_hz, joint_hz)
                next_image = next_joint = now
            due = []
            if image_hz > 0:
                due.append(next_image)
                if now >= next_image:
                    image.header.stamp = node.get_clock().now().to_msg()
                    image_pub.publish(image)
                    counts[0] += 1
                    # absolute deadlines; a late publisher skips ticks instead of bursting
                    next_image = max(next_image + 1.0 / image_hz, now)
            if joint_hz > 0:
                due.append(next_joint)
                if now >= next_joint:
                    joints.header.stamp = node.get_clock().now().to_msg()
                    joint_pub.publish(joints)
                    counts[1] += 1
                    next_joint = max(next_joint + 1.0 / joint_hz, now)
            wait = (min(due) - time.monotonic()) if due else 0.01
            if wait > 0:
                time.sleep(min(wait, 0.01))
    finally:
        node.destroy_node()
        context.try_shutdown()


def _hog_main(seconds: float) -> None:
    """Busy-loop one core for ``seconds``."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


class LoadPublisher:
    """The publisher process: ``set_rates(image_hz, joint_hz)``, ``counts()``, ``close()``."""

    def __init__(self, side: int = SIDE, qos: str = 'reliable'):
        ctx = multiprocessing.get_context('spawn')
        self._rates = ctx.Array('d', [0.0, 0.0])
        self._counts = ctx.Array('q', [0, 0])
        self._stop = ctx.Event()
        ready = ctx.Event()
        self._process = ctx.Process(target=_publisher_main, daemon=True,
                                    args=(self._rates, self._counts, self._stop, ready, side,
                                          qos))
        self._process.start()
        if not ready.wait(60.0):
            self.close()
            raise RuntimeError('the publisher process did not start')

    def set_rates(self, image_hz: float, joint_hz: float) -> None:
        """Publish at these rates from now on (0 = paused)."""
        self._rates[0], self._rates[1] = float(image_hz), float(joint_hz)

    def counts(self) -> Dict[str, int]:
        """Messages published so far."""
        return {'images': int(self._counts[0]), 'joints': int(self._counts[1])}

    def close(self) -> None:
        """Stop and join the process."""
        self._stop.set()
        self._process.join(10.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)


def cpu_hog(seconds: float) -> multiprocessing.Process:
    """Start one busy-looping process for ``seconds`` (bounded even if nobody joins it)."""
    ctx = multiprocessing.get_context('spawn')
    process = ctx.Process(target=_hog_main, args=(seconds,), daemon=True)
    process.start()
    return process
