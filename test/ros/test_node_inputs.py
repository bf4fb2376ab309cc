"""The node's inputs on a real rclpy graph: instruction QoS (volatile and latched publishers),
incompatible-QoS warnings, stamp-based ages (frozen camera, clock offset), chunk stamps, the
instruction length cap, and compressed-image guards with decoding off the executor thread."""
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from conftest import TEST_JOINTS  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402

OUT = '/arm_controller/joint_trajectory'
LATCHED_TEXT = 'touch the green block'
VOLATILE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _stamp(msg):
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def _wait(predicate, timeout=10.0, feed=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if feed is not None:
            feed()
        else:
            time.sleep(0.05)
    return predicate()


def _png_header(width, height):
    """A PNG signature and IHDR chunk claiming ``width`` x ``height`` (no pixel data)."""
    import struct
    import zlib

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', len(ihdr)) + b'IHDR' + ihdr
            + struct.pack('>I', zlib.crc32(b'IHDR' + ihdr)))


def test_compressed_guard_and_decoding_off_the_executor(tiny_pi0_checkpoints, monkeypatch):
    from retain_ros.ros.policy_node import cameras

    threads = set()
    original = cameras.to_rgb

    def watched(msg):
        threads.add(threading.current_thread().name)
        return original(msg)

    monkeypatch.setattr(cameras, 'to_rgb', watched)
    topic = 'camera/image_raw/compressed'
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, ft, camera_topics=[topic])
        traj = harness.subscribe(JointTrajectory, OUT)
        pub = harness.publisher(CompressedImage, topic)
        bomb = CompressedImage(format='png')
        bomb.data = _png_header(20000, 20000) + b'\x00' * 64
        assert _wait(lambda: pub.publish(bomb) or
                     node.dropped.get(f'image {topic}', 0) >= 1)
        assert not threads, 'the oversized image reached the decoder'
        good = CompressedImage(format='png')
        good.data = cv2.imencode('.png', np.full((40, 40, 3), 90, np.uint8))[1].tobytes()

        def feed():
            good.header.stamp = harness.stamp()
            pub.publish(good)
            harness.publish_joints((0.0,) * len(TEST_JOINTS))
            time.sleep(0.05)

        # runs before the module's shared node exists: every chunk here is this node's
        assert _wait(lambda: len(traj) >= 1, timeout=20, feed=feed)
        assert threads == {'retain_policy.decode'}, threads
    finally:
        harness.shutdown()


@pytest.fixture(scope='module')
def env(tiny_pi0_checkpoints):
    harness = RosHarness()
    pre, ft = tiny_pi0_checkpoints
    try:
        # a latched instruction published BEFORE the node exists
        harness.publisher(String, 'instruction', LATCHED_QOS).publish(String(data=LATCHED_TEXT))
        node = harness.start_node(pre, ft, default_instruction='', max_observation_age=0.5)
        traj = harness.subscribe(JointTrajectory, OUT)
        yield harness, node, traj
    finally:
        harness.shutdown()


def test_latched_and_volatile_instruction_publishers(env):
    harness, node, _ = env
    assert _wait(lambda: node.inputs.instruction == LATCHED_TEXT), node.inputs.instruction
    # a default (volatile) publisher, e.g. `ros2 topic pub`: a transient-local subscription
    # alone would never connect to it
    pub = harness.publisher(String, 'instruction', VOLATILE)
    assert _wait(lambda: (pub.publish(String(data='touch the blue block')) or
                          node.inputs.instruction == 'touch the blue block'))
    assert not node.inputs.qos_incompatible.get('instruction')


def test_incompatible_publisher_is_reported(env):
    harness, node, _ = env
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    harness.probe.create_publisher(String, 'instruction', best_effort)
    assert _wait(lambda: node.inputs.qos_incompatible.get('instruction', 0) >= 1), \
        'no incompatible-QoS report for a best-effort instruction publisher'
    keys = {kv.key for kv in node.diagnostics_status().values}
    assert 'qos_incompatible.instruction' in keys


def test_instruction_capped_before_tokenization(env):
    harness, node, _ = env
    assert harness.set_params(max_instruction_chars=64)[0].successful
    try:
        pub = harness.publisher(String, 'instruction', VOLATILE)
        huge = 'x' * 1_000_000
        assert _wait(lambda: pub.publish(String(data=huge)) or
                     (node.inputs.instruction or '').startswith('xxx'))
        assert len(node.inputs.instruction) == 64
        assert node.dropped.get('instruction_truncated', 0) >= 1
    finally:
        harness.set_params(max_instruction_chars=2000)
        harness.publisher(String, 'instruction', VOLATILE).publish(String(data=LATCHED_TEXT))


def test_chunk_stamp_is_the_observation_time(env):
    harness, node, traj = env
    sent = set()
    since = harness.now()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and \
            len([m for _, m in traj.items[:] if _stamp(m) > since]) < 4:
        stamp = harness.now() - 0.1                  # taken 0.1 s before it is published
        harness.publish_image()
        msg = harness.publish_joints((0.0,) * len(TEST_JOINTS), stamp=stamp)
        sent.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        time.sleep(0.05)
    chunks = [m for _, m in traj.items[:] if _stamp(m) > since][1:]
    assert chunks
    for msg in chunks:
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) in sent, \
            'the chunk is not stamped with the joint state it was computed from'
        first = msg.points[0].time_from_start
        assert first.sec + 1e-9 * first.nanosec == pytest.approx(0.05)


def test_frozen_camera_stamp_holds(env):
    harness, node, traj = env
    harness.feed(0.5)
    frozen = harness.now()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:                    # the driver keeps sending, stamp frozen
        harness.publish_image(stamp=frozen)
        harness.publish_joints((0.0,) * len(TEST_JOINTS))
        time.sleep(0.05)
    assert 'stale camera/image_raw' in (node.hold_reason or ''), node.hold_reason
    assert 'header stamp' in node.hold_reason
    since = harness.now()
    time.sleep(0.4)
    assert not [m for _, m in traj.items[:] if _stamp(m) > since], \
        'acted on a frozen camera'
    assert _wait(lambda: node.hold_reason is None, feed=lambda: harness.feed(0.1))


def test_clock_offset(env):
    harness, node, traj = env
    ahead = 5.0

    def feed_ahead():
        now = harness.now()
        harness.publish_image(stamp=now + ahead)
        harness.publish_joints((0.0,) * len(TEST_JOINTS), stamp=now + ahead)
        time.sleep(0.05)

    assert _wait(lambda: 'future' in (node.hold_reason or ''), feed=feed_ahead)
    assert harness.set_params(clock_offset=ahead)[0].successful
    try:
        assert _wait(lambda: node.hold_reason is None, feed=feed_ahead)
        since = harness.now()
        assert _wait(lambda: [m for _, m in traj.items[:] if _stamp(m) > since], feed=feed_ahead)
        stamp = _stamp([m for _, m in traj.items[:] if _stamp(m) > since][-1])
        assert abs(stamp - harness.now()) < 1.0, 'chunk stamps are not on the node clock'
    finally:
        harness.set_params(clock_offset=0.0)
