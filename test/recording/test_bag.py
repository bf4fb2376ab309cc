"""Bags in rosbag2 layout, MCAP storage (:mod:`retain_ros.recording.bag`).

Written with real ROS messages and read back with both the ``rosbags`` and the ``mcap`` readers;
repair after a crash.
"""
import json
import os

import numpy as np
import pytest
import yaml

pytest.importorskip('mcap_ros2')
pytest.importorskip('rosbags')

from helpers.bags import cdr  # noqa: E402
from helpers.bags import header  # noqa: E402
from helpers.bags import joint_state  # noqa: E402
from helpers.bags import M  # noqa: E402
from helpers.bags import read_mcap  # noqa: E402
from helpers.bags import read_rosbags  # noqa: E402
from helpers.bags import rgb8_image  # noqa: E402
from helpers.bags import string  # noqa: E402
from helpers.bags import T0  # noqa: E402
from helpers.bags import TOPICS  # noqa: E402
from helpers.bags import trajectory  # noqa: E402

from retain_ros.recording import bag as B  # noqa: E402
from retain_ros.recording.recorder import ThreadedBagRecorder  # noqa: E402


def _image(value, side=16):
    return rgb8_image(np.full((side, side, 3), value, np.uint8), ns=5 * 10 ** 9,
                      frame_id='camera')


def _joints(i):
    return joint_state(['a', 'b'], [0.1 * i, 0.0], ns=5 * 10 ** 9, frame_id='camera')


def _chunk(i):
    return trajectory(['a', 'b'], [[float(i), float(i) + 0.5]], dt=0.1, ns=5 * 10 ** 9,
                      frame_id='camera')


def _diagnostics():
    status = M['diagnostic_msgs/msg/DiagnosticStatus'](
        level=0, name='retain_policy: policy', message='acting', hardware_id='x',
        values=[M['diagnostic_msgs/msg/KeyValue'](key='k', value='v')])
    return M['diagnostic_msgs/msg/DiagnosticArray'](header=header(5 * 10 ** 9, 'camera'),
                                                    status=[status])


def test_bag_is_read_by_rosbags_and_mcap(tmp_path):
    path = str(tmp_path / 'episode_a')
    rec = ThreadedBagRecorder(path, TOPICS, custom_data={'retain_ros.start': '{}'},
                              flush_topics=['/arm_controller/joint_trajectory'])
    rec.put('/instruction', T0, string('touch the red block'), 32)
    for i in range(5):
        t = T0 + i * 100_000_000
        rec.put('/camera/image_raw', t, _image(i * 10), 16 * 16 * 3)
        rec.put('/joint_states', t + 1, _joints(i), 64)
        rec.put('/arm_controller/joint_trajectory', t + 2, _chunk(i), 64)
    rec.put('/diagnostics', T0 + 10, _diagnostics(), 128)
    assert rec.put('/not/registered', T0, string(''), 1) is False
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

    topics, msgs = read_rosbags(path)
    assert topics['/arm_controller/joint_trajectory'] == 'trajectory_msgs/msg/JointTrajectory'
    images = [m for topic, _, m in msgs if topic == '/camera/image_raw']
    assert [int(np.frombuffer(bytes(m.data), np.uint8)[0]) for m in images] == [0, 10, 20, 30, 40]
    chunks = [m for topic, _, m in msgs if topic == '/arm_controller/joint_trajectory']
    assert [list(c.points[0].positions) for c in chunks][-1] == [4.0, 4.5]

    summary, decoded, metadata = read_mcap(path)
    assert summary is not None and summary.statistics.message_count == 17
    assert {s.encoding for s in summary.schemas.values()} == {'ros2msg'}
    assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}
    instruction = [d for topic, _, d in decoded if topic == '/instruction']
    assert instruction[0].data == 'touch the red block'
    assert json.loads(metadata[B.EPISODE_RECORD]['episode']) == line
    assert 'serialized_metadata' in metadata['rosbag2']
    assert B.repair_bag(path) is None           # a closed bag needs no repair


def test_repair_after_an_unfinished_file(tmp_path):
    """A bag whose process died (no summary, no footer) is read up to its last flushed chunk."""
    path = str(tmp_path / 'crashed')
    bag = B.BagWriter(path, custom_data={'retain_ros.start': json.dumps({'episode_id': 'x'})})
    bag.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    bag.add_topic('/instruction', 'std_msgs/msg/String')
    for i in range(4):
        bag.write('/camera/image_raw', cdr(_image(i)), T0 + i)
    bag.flush()
    bag.write('/camera/image_raw', cdr(_image(99)), T0 + 10)   # never flushed
    bag.abort()
    with open(bag.mcap_path, 'ab') as handle:
        handle.write(b'\x06\x40\x00\x00\x00\x00\x00\x00\x00partial')   # a torn chunk record
    assert not B.is_finished(bag.mcap_path)
    assert B.read_metadata(path)['custom_data'][B.STATUS_KEY] == B.STATUS_RECORDING
    _, _, messages, complete = B.scan_records(bag.mcap_path)
    assert len(messages) == 4 and not complete
    with pytest.raises(Exception):
        read_rosbags(path)                       # strict readers need the footer
    info = B.repair_bag(path)
    assert info['custom_data'][B.STATUS_KEY] == B.STATUS_INTERRUPTED
    assert info['message_count'] == 4
    assert json.loads(info['custom_data']['retain_ros.start'])['episode_id'] == 'x'
    names = {t['topic_metadata']['name'] for t in info['topics_with_message_count']}
    assert names == {'/camera/image_raw', '/instruction'}
    _, msgs = read_rosbags(path)
    assert [int(bytes(m.data)[0]) for _, _, m in msgs] == [0, 1, 2, 3]
    _, decoded, _ = read_mcap(path)
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
