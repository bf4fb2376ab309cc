"""Shared builders of test bags: ROS messages as CDR bytes (``rosbags``, no rclpy) and readers.

Imported by the tests of this folder as ``bags`` (pytest puts the folder on ``sys.path``).
Payloads are serialized by rosbags' CDR serializer; the node itself records the bytes it
receives from DDS (``test_recording_ros.py``).
"""
from pathlib import Path

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import get_typestore
from rosbags.typesys import Stores

from retain_ros.recording import bag as B

STORE = get_typestore(Stores.ROS2_KILTED)
#: message classes by type name, e.g. ``M['sensor_msgs/msg/Image']``
M = STORE.types
#: log time of a bag's first message (ns)
T0 = 1_700_000_000_000_000_000
#: one millisecond in ns
MS = 1_000_000


def cdr(msg):
    """Serialize a rosbags message to CDR bytes (what a bag stores)."""
    return bytes(STORE.serialize_cdr(msg, msg.__msgtype__))


def header(ns=0, frame_id=''):
    """Return a ``std_msgs/Header`` stamped ``ns`` nanoseconds."""
    return M['std_msgs/msg/Header'](
        stamp=M['builtin_interfaces/msg/Time'](sec=ns // 10 ** 9, nanosec=ns % 10 ** 9),
        frame_id=frame_id)


def rgb8_image(pixels, ns=0, frame_id=''):
    """Return an ``rgb8`` ``sensor_msgs/Image`` of the ``(H, W, 3)`` uint8 ``pixels``."""
    height, width = pixels.shape[:2]
    return M['sensor_msgs/msg/Image'](
        header=header(ns, frame_id), height=height, width=width, encoding='rgb8',
        is_bigendian=0, step=width * 3, data=np.ascontiguousarray(pixels).reshape(-1))


def compressed_image(data, fmt):
    """Return a ``sensor_msgs/CompressedImage`` of ``data`` (bytes) in format ``fmt``."""
    return M['sensor_msgs/msg/CompressedImage'](
        header=header(), format=fmt, data=np.frombuffer(bytes(data), np.uint8))


def joint_state(names, positions, ns=0, frame_id=''):
    """Return a ``sensor_msgs/JointState`` with positions only."""
    return M['sensor_msgs/msg/JointState'](
        header=header(ns, frame_id), name=list(names),
        position=np.asarray(positions, float), velocity=np.zeros(0), effort=np.zeros(0))


def trajectory(joint_names, positions, dt, ns=0, frame_id=''):
    """Return a ``trajectory_msgs/JointTrajectory``: point ``i`` at ``(i + 1) * dt`` seconds.

    :param positions: one position list per point.
    """
    def point(i, values):
        return M['trajectory_msgs/msg/JointTrajectoryPoint'](
            positions=np.asarray(values, float), velocities=np.zeros(0),
            accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=M['builtin_interfaces/msg/Duration'](
                sec=0, nanosec=int((i + 1) * dt * 1e9)))
    return M['trajectory_msgs/msg/JointTrajectory'](
        header=header(ns, frame_id), joint_names=list(joint_names),
        points=[point(i, values) for i, values in enumerate(positions)])


def string(text):
    """Return a ``std_msgs/String``."""
    return M['std_msgs/msg/String'](data=text)


def encode(msg):
    """Encode for the recorder: ``(CDR bytes, None)`` (no publish time)."""
    return cdr(msg), None


#: topics of the recorder tests: ``{topic: (type, offered QoS profiles, encoder)}``
TOPICS = {
    '/camera/image_raw': ('sensor_msgs/msg/Image', [B.qos_profile('best_effort', depth=1)],
                          encode),
    '/joint_states': ('sensor_msgs/msg/JointState', [B.qos_profile()], encode),
    '/instruction': ('std_msgs/msg/String', [B.qos_profile(durability='transient_local',
                                                           depth=1)], encode),
    '/arm_controller/joint_trajectory': ('trajectory_msgs/msg/JointTrajectory',
                                         [B.qos_profile()], encode),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', [B.qos_profile()], encode),
}


def read_mcap(bag):
    """Read a bag folder with the ``mcap`` reader.

    :return: ``(summary, [(topic, log_time, decoded)], {metadata name: dict})``.
    """
    with open(B.mcap_path(bag), 'rb') as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        decoded = [(c.topic, m.log_time, d) for _, c, m, d in reader.iter_decoded_messages()]
        metadata = {r.name: dict(r.metadata) for r in reader.iter_metadata()}
    return summary, decoded, metadata


def read_rosbags(bag):
    """Read a bag folder with ``rosbags``' reader: ``({topic: type}, [(topic, time, msg)])``."""
    with AnyReader([Path(bag)]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        msgs = [(c.topic, t, reader.deserialize(raw, c.msgtype))
                for c, t, raw in reader.messages()]
    return topics, msgs
