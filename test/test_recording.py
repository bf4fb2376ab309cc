"""Bags in rosbag2 layout (MCAP storage): written with real ROS messages and read back with both
the ``rosbags`` and the ``mcap`` readers; queue bound and drop counting; repair after a crash."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip('mcap_ros2')
pytest.importorskip('rosbags')

from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.typesys import get_typestore  # noqa: E402
from rosbags.typesys import Stores  # noqa: E402

from retain_ros.recording import bag as B  # noqa: E402
from retain_ros.recording.msgdefs import message_definition  # noqa: E402
from retain_ros.recording.msgdefs import MessageDefinitionError  # noqa: E402
from retain_ros.recording.msgdefs import split_type  # noqa: E402
from retain_ros.recording.recorder import ThreadedBagRecorder  # noqa: E402

# payloads are serialized by rosbags' CDR serializer here (no rclpy needed); the node records
# the bytes it receives from DDS (test_recording_ros.py)
STORE = get_typestore(Stores.ROS2_KILTED)
M = STORE.types
T0 = 1_700_000_000_000_000_000


def _header(sec=5):
    return M['std_msgs/msg/Header'](stamp=M['builtin_interfaces/msg/Time'](sec=sec, nanosec=0),
                                    frame_id='camera')


def _image(value, side=16):
    return M['sensor_msgs/msg/Image'](
        header=_header(), height=side, width=side, encoding='rgb8', is_bigendian=0,
        step=side * 3, data=np.full((side, side, 3), value, np.uint8).reshape(-1))


def _joints(i):
    return M['sensor_msgs/msg/JointState'](
        header=_header(), name=['a', 'b'], position=np.array([0.1 * i, 0.0]),
        velocity=np.zeros(0), effort=np.zeros(0))


def _string(text):
    return M['std_msgs/msg/String'](data=text)


def _chunk(i):
    point = M['trajectory_msgs/msg/JointTrajectoryPoint'](
        positions=np.array([float(i), float(i) + 0.5]), velocities=np.zeros(0),
        accelerations=np.zeros(0), effort=np.zeros(0),
        time_from_start=M['builtin_interfaces/msg/Duration'](sec=0, nanosec=100_000_000))
    return M['trajectory_msgs/msg/JointTrajectory'](header=_header(), joint_names=['a', 'b'],
                                                    points=[point])


def _diagnostics():
    status = M['diagnostic_msgs/msg/DiagnosticStatus'](
        level=0, name='retain_policy: policy', message='acting', hardware_id='x',
        values=[M['diagnostic_msgs/msg/KeyValue'](key='k', value='v')])
    return M['diagnostic_msgs/msg/DiagnosticArray'](header=_header(), status=[status])


def _cdr(msg):
    return bytes(STORE.serialize_cdr(msg, msg.__msgtype__))


def _encode(msg):
    return _cdr(msg), None


TOPICS = {
    '/camera/image_raw': ('sensor_msgs/msg/Image', [B.qos_profile('best_effort', depth=1)],
                          _encode),
    '/joint_states': ('sensor_msgs/msg/JointState', [B.qos_profile()], _encode),
    '/instruction': ('std_msgs/msg/String', [B.qos_profile(durability='transient_local',
                                                           depth=1)], _encode),
    '/arm_controller/joint_trajectory': ('trajectory_msgs/msg/JointTrajectory',
                                         [B.qos_profile()], _encode),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', [B.qos_profile()], _encode),
}


def _read_mcap(bag):
    with open(B.mcap_path(bag), 'rb') as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        decoded = [(c.topic, m.log_time, d) for _, c, m, d in reader.iter_decoded_messages()]
        metadata = {r.name: dict(r.metadata) for r in reader.iter_metadata()}
    return summary, decoded, metadata


def _read_rosbags(bag):
    with AnyReader([Path(bag)]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        msgs = [(c.topic, t, reader.deserialize(raw, c.msgtype))
                for c, t, raw in reader.messages()]
    return topics, msgs


def test_message_definitions_come_from_the_installed_files():
    text = message_definition('trajectory_msgs/msg/JointTrajectory')
    assert text.startswith('# The header')
    for dep in ('std_msgs/Header', 'trajectory_msgs/JointTrajectoryPoint',
                'builtin_interfaces/Time', 'builtin_interfaces/Duration'):
        assert f'\nMSG: {dep}\n' in text
    assert split_type('sensor_msgs/msg/Image') == split_type('sensor_msgs/Image')
    with pytest.raises(MessageDefinitionError, match='no_such_msgs'):
        message_definition('no_such_msgs/msg/Nothing')


def test_bag_is_read_by_rosbags_and_mcap(tmp_path):
    path = str(tmp_path / 'episode_a')
    rec = ThreadedBagRecorder(path, TOPICS, custom_data={'retain_ros.start': '{}'},
                              flush_topics=['/arm_controller/joint_trajectory'])
    rec.put('/instruction', T0, _string('touch the red block'), 32)
    for i in range(5):
        t = T0 + i * 100_000_000
        rec.put('/camera/image_raw', t, _image(i * 10), 16 * 16 * 3)
        rec.put('/joint_states', t + 1, _joints(i), 64)
        rec.put('/arm_controller/joint_trajectory', t + 2, _chunk(i), 64)
    rec.put('/diagnostics', T0 + 10, _diagnostics(), 128)
    assert rec.put('/not/registered', T0, _string(''), 1) is False
    stats = rec.stop()
    assert stats['messages'] == 17 and stats['dropped'] == 0 and stats['errors'] == 0
    line = {'episode_id': 'episode_a', 'success': True, 'alpha': {'vision': 0.5},
            'fingerprint': 'abc'}
    rec.close(episode=line)

    info = B.read_metadata(path)
    assert info['version'] == 8 and info['storage_identifier'] == 'mcap'
    assert info['message_count'] == 17
    assert info['relative_file_paths'] == ['episode_a_0.mcap']
    counts = {t['topic_metadata']['name']: t['message_count']
              for t in info['topics_with_message_count']}
    assert counts['/camera/image_raw'] == 5 and counts['/diagnostics'] == 1
    camera = next(t['topic_metadata'] for t in info['topics_with_message_count']
                  if t['topic_metadata']['name'] == '/camera/image_raw')
    assert camera['type_description_hash'].startswith('RIHS01_')
    assert yaml.safe_load(camera['offered_qos_profiles'])[0]['reliability'] == 2
    assert info['custom_data'][B.STATUS_KEY] == B.STATUS_COMPLETE
    assert B.episode_of(path) == line

    topics, msgs = _read_rosbags(path)
    assert topics['/arm_controller/joint_trajectory'] == 'trajectory_msgs/msg/JointTrajectory'
    images = [m for topic, _, m in msgs if topic == '/camera/image_raw']
    assert [int(np.frombuffer(bytes(m.data), np.uint8)[0]) for m in images] == [0, 10, 20, 30, 40]
    chunks = [m for topic, _, m in msgs if topic == '/arm_controller/joint_trajectory']
    assert [list(c.points[0].positions) for c in chunks][-1] == [4.0, 4.5]

    summary, decoded, metadata = _read_mcap(path)
    assert summary is not None and summary.statistics.message_count == 17
    assert {s.encoding for s in summary.schemas.values()} == {'ros2msg'}
    assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}
    instruction = [d for topic, _, d in decoded if topic == '/instruction']
    assert instruction[0].data == 'touch the red block'
    assert json.loads(metadata[B.EPISODE_RECORD]['episode']) == line
    assert 'serialized_metadata' in metadata['rosbag2']
    assert B.repair_bag(path) is None           # a closed bag needs no repair


def test_full_queue_drops_and_counts(tmp_path):
    """A burst faster than the writer: the bounded queue drops frames and counts them."""
    big = _image(7, side=256)
    rec = ThreadedBagRecorder(str(tmp_path / 'burst'), TOPICS, max_queue_bytes=len(big.data))
    accepted = sum(rec.put('/camera/image_raw', T0 + i, big, len(big.data)) for i in range(300))
    stats = rec.stop()
    rec.close()
    assert stats['dropped'] > 0
    assert stats['dropped_by_topic']['/camera/image_raw'] == stats['dropped']
    assert accepted + stats['dropped'] == 300
    assert stats['messages'] == accepted
    assert stats['max_queue_mb'] <= len(big.data) / 2 ** 20 + 1e-3
    _, msgs = _read_rosbags(str(tmp_path / 'burst'))
    assert len(msgs) == accepted


def test_repair_after_an_unfinished_file(tmp_path):
    """A bag whose process died (no summary, no footer) is read up to its last flushed chunk."""
    path = str(tmp_path / 'crashed')
    bag = B.BagWriter(path, custom_data={'retain_ros.start': json.dumps({'episode_id': 'x'})})
    bag.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    bag.add_topic('/instruction', 'std_msgs/msg/String')
    for i in range(4):
        bag.write('/camera/image_raw', _cdr(_image(i)), T0 + i)
    bag.flush()
    bag.write('/camera/image_raw', _cdr(_image(99)), T0 + 10)   # never flushed
    bag.abort()
    with open(bag.mcap_path, 'ab') as handle:
        handle.write(b'\x06\x40\x00\x00\x00\x00\x00\x00\x00partial')   # a torn chunk record
    assert not B.is_finished(bag.mcap_path)
    assert B.read_metadata(path)['custom_data'][B.STATUS_KEY] == B.STATUS_RECORDING
    _, _, messages, complete = B.scan_records(bag.mcap_path)
    assert len(messages) == 4 and not complete
    with pytest.raises(Exception):
        _read_rosbags(path)                       # strict readers need the footer
    info = B.repair_bag(path)
    assert info['custom_data'][B.STATUS_KEY] == B.STATUS_INTERRUPTED
    assert info['message_count'] == 4
    assert json.loads(info['custom_data']['retain_ros.start'])['episode_id'] == 'x'
    names = {t['topic_metadata']['name'] for t in info['topics_with_message_count']}
    assert names == {'/camera/image_raw', '/instruction'}
    _, msgs = _read_rosbags(path)
    assert [int(bytes(m.data)[0]) for _, _, m in msgs] == [0, 1, 2, 3]
    _, decoded, _ = _read_mcap(path)
    assert len(decoded) == 4
    assert sorted(os.listdir(path)) == ['crashed_0.mcap', 'metadata.yaml']
    assert B.repair_bag(path) is None


def test_bag_folder_is_never_overwritten(tmp_path):
    B.BagWriter(str(tmp_path / 'b')).close()
    with pytest.raises(B.BagError, match='exists already'):
        B.BagWriter(str(tmp_path / 'b'))
    with pytest.raises(B.BagError, match='not a bag folder'):
        B.read_metadata(str(tmp_path))
    assert B.find_bags([str(tmp_path)]) == [str(tmp_path / 'b')]
