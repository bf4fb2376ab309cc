"""The node as a separate process (`python -m retain_ros.cli node --ros-args ...`)."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from conftest import TEST_JOINTS  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node import LATCHED_QOS  # noqa: E402
from retain_ros.runtime.merged_policy import ALPHA_CONVENTION  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMERA = 'camera/image_raw/compressed'


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH', '')) if p)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def _cli(*args):
    return [sys.executable, '-m', 'retain_ros.cli', 'node', *args]


def test_node_process_serves_and_stops_on_sigint(tiny_pi0_checkpoints, tmp_path):
    pre, ft = tiny_pi0_checkpoints
    log = open(tmp_path / 'node.log', 'w+')
    proc = subprocess.Popen(_cli(
        '--ros-args', '-p', f'pretrained_path:={pre}', '-p', f'finetuned_paths:=[{ft}]',
        '-p', f'camera_topics:=[{CAMERA}]', '-p', f'joint_names:=[{",".join(TEST_JOINTS)}]',
        '-p', 'device:=cpu', '-p', 'alpha:=0.25', '-p', 'control_period:=0.05',
        '-p', 'replan_steps:=2', '-p', 'max_observation_age:=2.0',
        '-p', f'episode_log:={tmp_path / "ep.jsonl"}'),
        cwd=str(tmp_path), env=_env(), stdout=log, stderr=subprocess.STDOUT)
    harness = RosHarness()
    try:
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        traj = harness.subscribe(JointTrajectory, '/arm_controller/joint_trajectory')
        instruction = harness.publisher(String, 'instruction', LATCHED_QOS)
        instruction.publish(String(data='put the gripper on the red block'))
        state = json.loads(merge.wait(1, timeout=60)[-1].data)
        assert state['alpha']['language'] == 0.25
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :32] = (0, 0, 255)
        msg = CompressedImage(format='jpeg')
        msg.data = cv2.imencode('.jpg', image)[1].tobytes()
        pub = harness.publisher(CompressedImage, CAMERA)
        deadline = time.monotonic() + 30
        while len(traj) < 2 and time.monotonic() < deadline:
            msg.header.stamp = harness.probe.get_clock().now().to_msg()
            pub.publish(msg)
            harness.publish_joints((0.0, 0.0, 0.0, 0.0))
            time.sleep(0.05)
        chunk = traj.wait(2, timeout=1)[-1]
        assert list(chunk.joint_names) == list(TEST_JOINTS) and len(chunk.points) == 10
        result = harness.set_params(alpha=0.75)
        assert result[0].successful, result[0].reason
        assert json.loads(merge.wait(2)[-1].data)['alpha']['vision'] == 0.75
    finally:
        harness.shutdown()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert code == 0, output
    assert 'alpha convention' in output and ALPHA_CONVENTION in output
    # a clean SIGINT: no exception from a timer or thread publishing on the dead context
    assert 'Traceback' not in output and 'RCLError' not in output, output


def test_cli_help_and_clear_startup_error(tmp_path):
    out = subprocess.run(_cli('--help'), env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in ('alpha_language', 'max_observation_age', 'episode_log', 'alpha_schedule'):
        assert name in out.stdout
    bad = subprocess.run(_cli('--ros-args', '-p', f'pretrained_path:={tmp_path}'), env=_env(),
                         capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert bad.returncode == 1
    assert 'cannot start' in bad.stderr and 'finetuned_paths is empty' in bad.stderr
