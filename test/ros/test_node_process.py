"""The node as a separate process (`python -m retain_ros.cli node --ros-args ...`)."""
from contextlib import contextmanager
import json
import os
import signal
import subprocess
import sys
import threading
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

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402
from retain_ros.runtime.merged_policy import ALPHA_CONVENTION  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


# --------------------------------------------------------------------------- clean exits
class NodeProcess:
    """``retain-ros node`` as a subprocess, its output in a log file read while it runs."""

    def __init__(self, tmp_path, *ros_args, name='node'):
        self.path = tmp_path / f'{name}.log'
        self._log = open(self.path, 'w')
        self.proc = subprocess.Popen(_cli('--ros-args', *ros_args), cwd=str(tmp_path),
                                     env=_env(), stdout=self._log, stderr=subprocess.STDOUT)

    def output(self):
        return self.path.read_text(errors='replace')

    def wait_for(self, text, timeout=60.0, poll=0.005):
        """Wait until ``text`` is in the output (poll every ``poll`` s); fail if it exits."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f'no {text!r} in the node output:\n{self.output()}')
            time.sleep(poll)

    def signal(self, *signals, gap=0.0):
        """Send ``signals`` with ``gap`` seconds between two."""
        for i, signum in enumerate(signals):
            if i and gap:
                time.sleep(gap)
            self.proc.send_signal(signum)

    def finish(self, timeout=30.0):
        """Wait for the exit; return ``(status, output)`` (killed after ``timeout``: None)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._log.close()
        return code, self.output()


def _policy_args(checkpoints, tmp_path, *extra):
    pre, ft = checkpoints
    return ('-p', f'pretrained_path:={pre}', '-p', f'finetuned_paths:=[{ft}]',
            '-p', f'camera_topics:=[{CAMERA}]', '-p', f'joint_names:=[{",".join(TEST_JOINTS)}]',
            '-p', 'device:=cpu', '-p', 'control_period:=0.05', '-p', 'replan_steps:=2',
            '-p', 'max_observation_age:=2.0', '-p', f'episode_log:={tmp_path / "ep.jsonl"}',
            '-p', 'default_instruction:=put the gripper on the red block', *extra)


def _assert_clean_exit(code, output):
    assert code == 0, f'exit status {code}:\n{output}'
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert 'cannot start' not in output, output


def _feed(harness, stop, period=0.05):
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (0, 0, 255)
    msg = CompressedImage(format='jpeg')
    msg.data = cv2.imencode('.jpg', image)[1].tobytes()
    pub = harness.publisher(CompressedImage, CAMERA)
    while not stop.is_set():
        msg.header.stamp = harness.probe.get_clock().now().to_msg()
        pub.publish(msg)
        harness.publish_joints((0.0, 0.0, 0.0, 0.0))
        time.sleep(period)


#: time between the two SIGINTs: a terminal's and the one ``ros2 launch`` forwards
GAPS = (0.0, 0.03)


@pytest.mark.parametrize('gap', GAPS)
def test_double_sigint_while_configuring_exits_0(tiny_pi0_checkpoints, tmp_path, gap):
    node = NodeProcess(tmp_path, *_policy_args(tiny_pi0_checkpoints, tmp_path))
    try:
        node.wait_for('loading pretrained=')        # configure: load + merge + warm-up
        node.signal(signal.SIGINT, signal.SIGINT, gap=gap)
    finally:
        code, output = node.finish()
    _assert_clean_exit(code, output)
    # the start was abandoned (not finished and then shut down)
    assert 'interrupted while starting' in output and 'acting:' not in output, output


@contextmanager
def _acting_process(checkpoints, tmp_path, *extra):
    """A node process acting on fed inputs: ``(harness, node)``; stopped and cleaned up after."""
    harness = RosHarness()
    stop = threading.Event()
    node = None
    try:
        traj = harness.subscribe(JointTrajectory, '/arm_controller/joint_trajectory')
        node = NodeProcess(tmp_path, *_policy_args(checkpoints, tmp_path, *extra))
        node.wait_for('acting:')
        threading.Thread(target=_feed, args=(harness, stop), daemon=True).start()
        traj.wait(1, timeout=30)
        yield harness, node
    finally:
        stop.set()
        harness.shutdown()
        if node is not None and node.proc.poll() is None:
            node.finish(timeout=1)


@pytest.mark.parametrize('gap', GAPS)
def test_double_sigint_while_acting_exits_0(tiny_pi0_checkpoints, tmp_path, gap):
    with _acting_process(tiny_pi0_checkpoints, tmp_path) as (harness, node):
        node.signal(signal.SIGINT, signal.SIGINT, gap=gap)
        code, output = node.finish()
    _assert_clean_exit(code, output)


@pytest.mark.parametrize('gap', GAPS)
def test_double_sigint_during_live_alpha_change_exits_0(tiny_pi0_checkpoints, tmp_path, gap):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    # keep_sources=disk: the re-merge re-reads both checkpoints, so it is still running
    with _acting_process(tiny_pi0_checkpoints, tmp_path, '-p', 'keep_sources:=disk') as (
            harness, node):
        client = harness.probe.create_client(SetParameters, '/retain_policy/set_parameters')
        assert client.wait_for_service(timeout_sec=30)
        request = SetParameters.Request()
        request.parameters = [Parameter('alpha', value=0.9).to_parameter_msg()]
        client.call_async(request)                  # the re-merge takes milliseconds
        time.sleep(0.002)
        node.signal(signal.SIGINT, signal.SIGINT, gap=gap)
        code, output = node.finish()
    _assert_clean_exit(code, output)


@pytest.mark.parametrize('gap', GAPS)
def test_double_sigint_while_deactivating_exits_0(tiny_pi0_checkpoints, tmp_path, gap):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    with _acting_process(tiny_pi0_checkpoints, tmp_path) as (harness, node):
        client = harness.probe.create_client(ChangeState, '/retain_policy/change_state')
        assert client.wait_for_service(timeout_sec=30)
        request = ChangeState.Request()
        request.transition.id = Transition.TRANSITION_DEACTIVATE
        client.call_async(request)                  # like `ros2 lifecycle set ... deactivate`
        time.sleep(0.005)
        node.signal(signal.SIGINT, signal.SIGINT, gap=gap)
        code, output = node.finish()
    _assert_clean_exit(code, output)


@pytest.mark.parametrize('signals', [(signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM)],
                         ids=['sigterm', 'sigint-then-sigterm'])
def test_sigterm_exits_0(tiny_pi0_checkpoints, tmp_path, signals):
    """SIGTERM (what ``ros2 launch`` sends when SIGINT did not end the node in time)."""
    node = NodeProcess(tmp_path, *_policy_args(tiny_pi0_checkpoints, tmp_path))
    try:
        node.wait_for('acting:')
        node.signal(*signals, gap=0.01)
    finally:
        code, output = node.finish()
    _assert_clean_exit(code, output)


@pytest.mark.parametrize('args, name, expected', [
    (('-p', 'alpha:=1.7'), 'alpha=1.7', 'out of range, expected a double in [0, 1]'),
    (('-p', 'alpha:=abc'), "alpha='abc'", 'a string, expected a double in [0, 1]'),
    (('-p', 'replan_steps:=0'), 'replan_steps=0', 'expected an integer in [1, 10000]'),
    (('-p', 'replan_steps:=1.5'), 'replan_steps=1.5',
     'a double, expected an integer in [1, 10000]'),
    ('params_file', 'max_observation_age=0.0', 'expected a double in [0.001, 3600]'),
], ids=['alpha-range', 'alpha-type', 'replan-range', 'replan-type', 'params-file'])
def test_bad_startup_parameter_is_one_line(tmp_path, args, name, expected):
    if args == 'params_file':
        path = tmp_path / 'params.yaml'
        path.write_text('retain_policy:\n  ros__parameters:\n    max_observation_age: 0.0\n')
        args = ('--params-file', str(path))
    out = subprocess.run(_cli('--ros-args', *args), env=_env(), capture_output=True, text=True,
                         timeout=120, cwd=str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if 'cannot start:' in line]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f'retain_policy: cannot start: {name}: '), lines[0]
    assert lines[0].endswith(expected), lines[0]
    assert 'Traceback' not in out.stderr + out.stdout, out.stderr
