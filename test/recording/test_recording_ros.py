"""The node records each episode as a bag (real rclpy graph).

A node killed with SIGKILL mid-episode leaves a bag readable up to its last flushed chunk and a
consistent episode log.
"""
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('mcap_ros2')
pytest.importorskip('rosbags')

from conftest import RosHarness  # noqa: E402
from conftest import TEST_JOINTS  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.recording import bag as B  # noqa: E402
from retain_ros.recording.export import export  # noqa: E402
from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _episode(harness, success, seconds=1.4, **feed):
    start = harness.call(Trigger, '/retain_policy/start_episode')
    assert start.success, start.message
    harness.feed(seconds, **feed)
    end = harness.call(SetBool, '/retain_policy/end_episode', SetBool.Request(data=success))
    assert end.success, end.message
    return json.loads(start.message)['episode_id'], json.loads(end.message)


def _rosbags(path):
    with AnyReader([Path(path)]) as reader:
        return [(c.topic, c.msgtype, reader.deserialize(raw, c.msgtype))
                for c, _, raw in reader.messages()]


def _mcap(path):
    with open(B.mcap_path(path), 'rb') as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        return [(c.topic, d) for _, c, _, d in reader.iter_decoded_messages()]


def test_each_episode_is_a_bag(tiny_pi0_checkpoints, tmp_path):
    log, bags = tmp_path / 'episodes.jsonl', tmp_path / 'bags'
    harness = RosHarness()
    try:
        pre, ft = tiny_pi0_checkpoints
        harness.start_node(pre, ft, episode_log=str(log), record=True, record_dir=str(bags))
        chunks = harness.subscribe(JointTrajectory, '/arm_controller/joint_trajectory')
        harness.publisher(String, 'instruction', LATCHED_QOS).publish(
            String(data='touch the red block'))
        time.sleep(0.3)
        first, reply = _episode(harness, True)
        assert reply['recording']['bag'] == str(bags / first)
        second, _ = _episode(harness, False, seconds=0.5)
        published = len(chunks)
    finally:
        harness.shutdown()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x['episode_id'] for x in lines] == [first, second]
    assert sorted(os.listdir(bags)) == sorted([first, second])
    line = lines[0]
    recording = line['recording']
    assert recording['dropped'] == 0 and recording['errors'] == 0
    assert recording['bag'] == str(bags / first)
    stored = B.episode_of(str(bags / first))
    assert stored['episode_id'] == first and stored['success'] is True
    assert stored['alpha'] == line['alpha'] and stored['fingerprint'] == line['fingerprint']
    info = B.read_metadata(str(bags / first))
    assert info['custom_data'][B.STATUS_KEY] == B.STATUS_COMPLETE
    assert info['message_count'] == recording['messages']

    msgs = _rosbags(str(bags / first))
    by_topic = {}
    for topic, msgtype, msg in msgs:
        by_topic.setdefault((topic, msgtype), []).append(msg)
    images = by_topic[('/camera/image_raw', 'sensor_msgs/msg/Image')]
    assert len(images) >= 10 and images[0].encoding == 'rgb8' and images[0].width == 32
    joints = by_topic[('/joint_states', 'sensor_msgs/msg/JointState')]
    assert list(joints[0].name) == list(TEST_JOINTS)
    instruction = by_topic[('/instruction', 'std_msgs/msg/String')]
    assert instruction[0].data == 'touch the red block'
    recorded = by_topic[('/arm_controller/joint_trajectory',
                         'trajectory_msgs/msg/JointTrajectory')]
    assert 1 <= line['chunks'] <= len(recorded) + 1 and len(recorded) <= published
    assert len(recorded[0].points) == 10 and list(recorded[0].joint_names) == list(TEST_JOINTS)
    merge = json.loads(by_topic[('/retain_policy/merge_state', 'std_msgs/msg/String')][0].data)
    assert merge['fingerprint'] == line['fingerprint']
    diagnostics = by_topic[('/diagnostics', 'diagnostic_msgs/msg/DiagnosticArray')]
    assert any(s.name.startswith('retain_policy') for d in diagnostics for s in d.status)
    # the same bag through the mcap reader (schemas decoded by mcap_ros2)
    decoded = _mcap(str(bags / first))
    assert len(decoded) == len(msgs)
    assert sum(t == '/camera/image_raw' for t, _ in decoded) == len(images)
    # and both episodes as a LeRobot v3 dataset
    info = export([str(bags)], str(tmp_path / 'dataset'), progress=False)
    assert info['total_episodes'] == 2 and info['fps'] == 20 and not info['skipped']
    assert info['features']['observation.images.camera']['shape'] == [32, 32, 3]
    assert info['features']['action']['names'] == list(TEST_JOINTS)


def test_jpeg_recording(tiny_pi0_checkpoints, tmp_path):
    harness = RosHarness()
    try:
        pre, ft = tiny_pi0_checkpoints
        harness.start_node(pre, ft, episode_log=str(tmp_path / 'ep.jsonl'), record=True,
                           record_dir=str(tmp_path / 'bags'), record_jpeg_quality=90)
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[:, :16] = (255, 0, 0)
        episode, _ = _episode(harness, True, seconds=0.6, rgb=rgb)
    finally:
        harness.shutdown()
    msgs = _rosbags(str(tmp_path / 'bags' / episode))
    jpegs = [m for topic, msgtype, m in msgs if topic == '/camera/image_raw/compressed']
    assert jpegs and not any(topic == '/camera/image_raw' for topic, _, _ in msgs)
    bgr = cv2.imdecode(np.frombuffer(bytes(jpegs[0].data), np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (32, 32, 3)
    assert bgr[16, 4, 2] > 200 and bgr[16, 28, 2] < 50        # red left half survived


def _node_process(pre, ft, tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text(json.dumps({'retain_policy': {'ros__parameters': {
        'pretrained_path': pre, 'finetuned_paths': [ft], 'camera_topics': ['camera/image_raw'],
        'joint_names': list(TEST_JOINTS), 'device': 'cpu', 'control_period': 0.05,
        'replan_steps': 2, 'max_observation_age': 2.0, 'default_instruction': 'touch red',
        'episode_log': str(tmp_path / 'episodes.jsonl'), 'record': True,
        'record_dir': str(tmp_path / 'bags')}}}))
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH', '')) if p)
    log = open(tmp_path / 'node.log', 'w+')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'retain_ros.cli', 'node', '--ros-args', '--params-file',
         str(params)], cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def test_sigkill_mid_episode_leaves_a_readable_bag(tiny_pi0_checkpoints, tmp_path):
    pre, ft = tiny_pi0_checkpoints
    proc, log = _node_process(pre, ft, tmp_path)
    harness = RosHarness()
    try:
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        merge.wait(1, timeout=90)                  # the node is up
        finished, _ = _episode(harness, True, seconds=0.6)
        start = harness.call(Trigger, '/retain_policy/start_episode')
        assert start.success, start.message
        killed = json.loads(start.message)['episode_id']
        bag = tmp_path / 'bags' / killed
        deadline = time.monotonic() + 30
        kept = 0
        while time.monotonic() < deadline:       # until a few chunks have been flushed
            harness.feed(0.2)
            if (bag / f'{killed}_0.mcap').exists():
                kept = len(B.scan_records(str(bag / f'{killed}_0.mcap'))[2])
            if kept >= 8:
                break
        assert kept >= 8, 'nothing flushed'
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    # the episode log: the finished episode only, every line complete JSON
    lines = [json.loads(x) for x in (tmp_path / 'episodes.jsonl').read_text().splitlines()]
    assert [x['episode_id'] for x in lines] == [finished]
    assert (tmp_path / 'episodes.jsonl').read_text().endswith('\n')
    # the killed episode's bag: no footer, metadata.yaml from the start, messages up to the
    # last flushed chunk
    mcap_file = str(bag / f'{killed}_0.mcap')
    assert not B.is_finished(mcap_file)
    info = B.read_metadata(str(bag))
    assert info['custom_data'][B.STATUS_KEY] == B.STATUS_RECORDING
    assert json.loads(info['custom_data']['retain_ros.start'])['episode_id'] == killed
    _, _, messages, _ = B.scan_records(mcap_file)
    assert len(messages) >= kept
    # a new node with the same record_dir repairs it at startup; then every reader takes it
    try:
        harness.start_node(pre, ft, episode_log=str(tmp_path / 'episodes.jsonl'), record=True,
                           record_dir=str(tmp_path / 'bags'))
    finally:
        harness.shutdown()
    info = B.read_metadata(str(bag))
    assert info['custom_data'][B.STATUS_KEY] == B.STATUS_INTERRUPTED
    assert info['message_count'] == len(messages)
    msgs = _rosbags(str(bag))
    assert len(msgs) == len(messages) == len(_mcap(str(bag)))
    assert any(msgtype == 'sensor_msgs/msg/Image' for _, msgtype, _ in msgs)
    assert B.episode_of(str(tmp_path / 'bags' / finished))['episode_id'] == finished
