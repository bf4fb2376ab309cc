"""All-or-nothing weight changes: a failed reload or merge leaves the old weights live."""
import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from conftest import write_tiny_pi0  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402
from retain_ros.ros.policy_node.node import PolicyNode  # noqa: E402
from retain_ros.ros.policy_node.node import StartupError  # noqa: E402

FEED = {'joints': (0.1, -0.1, 0.2, 0.0)}


def _chunk(harness, traj):
    traj.clear()
    while len(traj) < 2:
        harness.feed(0.1, **FEED)
    return np.array([list(p.positions) for p in traj.wait(2)[1].points])


def test_failed_reload_and_merge_keep_old_weights(tiny_pi0_checkpoints, tmp_path):
    pre_src, ft_src = tiny_pi0_checkpoints
    pre, ft = str(tmp_path / 'pre'), str(tmp_path / 'ft')
    shutil.copytree(pre_src, pre)
    shutil.copytree(ft_src, ft)
    harness = RosHarness()
    try:
        node = harness.start_node(pre, ft, alpha=0.6)
        traj = harness.subscribe(JointTrajectory, '/arm_controller/joint_trajectory')
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        before = json.loads(merge.wait(1)[-1].data)
        actions = _chunk(harness, traj)

        # a merge the recipe cannot do: refused, parameter and weights unchanged
        result = harness.set_params(recipe='capability')[0]
        assert not result.successful and result.reason
        assert node.get_parameter('recipe').value == 'interpolate'

        # corrupt the finetuned file on disk (a new file, as a writer would), then reload
        weights = os.path.join(ft, 'model.safetensors')
        with open(weights + '.tmp', 'wb') as handle:
            handle.write(b'\x00garbage, not a safetensors file' * 10)
        os.replace(weights + '.tmp', weights)
        reply = harness.call(Trigger, '/retain_policy/reload_weights')
        assert not reply.success
        assert 'previous weights still live' in reply.message and len(reply.message) > 40
        assert json.loads(merge.items[-1][1].data)['fingerprint'] == before['fingerprint']
        np.testing.assert_allclose(_chunk(harness, traj), actions, atol=1e-5)
        # live alpha changes still work from the sources in memory
        assert harness.set_params(alpha=0.6)[0].successful

        # a new finetune written in place: reload picks it up
        shutil.rmtree(ft)
        write_tiny_pi0(ft, seed=7)
        reply = harness.call(Trigger, '/retain_policy/reload_weights')
        assert reply.success, reply.message
        after = json.loads(reply.message)
        assert after['fingerprint'] != before['fingerprint']
        assert after['alpha']['vision'] == 0.6
        assert not np.allclose(_chunk(harness, traj), actions, atol=1e-5)
    finally:
        harness.shutdown()


def test_startup_errors_are_clear(tiny_pi0_checkpoints, tmp_path):
    from rclpy.parameter import Parameter

    pre, _ = tiny_pi0_checkpoints
    harness = RosHarness()
    try:
        cases = (
            ({'pretrained_path': pre}, 'finetuned_paths is empty'),
            ({'pretrained_path': pre, 'finetuned_paths': [str(tmp_path / 'nope')]},
             'cannot load and merge'),
            ({'pretrained_path': pre, 'finetuned_paths': [pre], 'device': 'cpu',
              'camera_topics': ['a/image_raw', 'b/image_raw']}, 'camera slot'),
            ({'pretrained_path': pre, 'finetuned_paths': [pre], 'device': 'cpu',
              'output_mode': 'torque'}, 'output_mode'),
        )
        for values, message in cases:
            with pytest.raises(StartupError, match=message):
                PolicyNode(context=harness.context, parameter_overrides=[
                    Parameter(k, value=v) for k, v in values.items()])
    finally:
        harness.shutdown()


def test_empty_pretrained_path_means_demo_checkpoints(tiny_pi0_checkpoints, tmp_path,
                                                      monkeypatch):
    from rclpy.parameter import Parameter

    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', str(tmp_path / 'demo'))
    harness = RosHarness()
    try:
        overrides = [Parameter('device', value='cpu'),
                     Parameter('default_instruction', value='reach')]
        with pytest.raises(StartupError, match='retain-ros demo-train'):
            PolicyNode(context=harness.context, parameter_overrides=overrides)
        pre, ft = tiny_pi0_checkpoints
        shutil.copytree(pre, tmp_path / 'demo' / 'generalist')
        shutil.copytree(ft, tmp_path / 'demo' / 'finetuned')
        node = PolicyNode(context=harness.context, parameter_overrides=overrides)
        assert node.merger.state.alphas['vision'] == 0.5
        node.destroy_node()
    finally:
        harness.shutdown()
