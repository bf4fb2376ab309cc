"""The retain_policy node runs a π0.5 checkpoint pair on a real rclpy graph.

The pair is the LeRobot 0.4.4 π0.5 fixture (test/data/pi05_ref) as the pretrained model and a
perturbed copy as the finetune, both real safetensors files in tmp_path: the node merges them at
startup, publishes chunks for two cameras (one non-square), and changes α live through parameters.
"""
import json
import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from std_msgs.msg import String  # noqa: E402
import torch  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node import LATCHED_QOS  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), 'data', 'pi05_ref')
JOINTS = tuple(f'j{i}' for i in range(7))
OUT = '/arm_controller/joint_trajectory'
CAMERAS = ('cam/base', 'cam/wrist')


def _seven_joint_state(out):
    """Cut the fixture's 8-dim state to the 7 joints of its actions (the node needs one joint
    list for state and actions; π0.5's weights do not depend on the state width)."""
    from safetensors.numpy import load_file as load_np
    from safetensors.numpy import save_file as save_np

    cfg = json.loads((out / 'config.json').read_text())
    cfg['input_features']['observation.state']['shape'] = [7]
    (out / 'config.json').write_text(json.dumps(cfg))
    name = 'policy_preprocessor_step_2_normalizer_processor.safetensors'
    stats = load_np(str(out / name))
    save_np({k: v[:7] if k.startswith('observation.state.') else v for k, v in stats.items()},
            str(out / name))


def write_pair(root):
    """``(pretrained, finetuned)``: the fixture and a copy with every float tensor perturbed."""
    paths = []
    with safe_open(os.path.join(SRC, 'model.safetensors'), 'pt') as f:
        metadata = f.metadata()
    weights = load_file(os.path.join(SRC, 'model.safetensors'))
    gen = torch.Generator().manual_seed(7)
    for name, scale in (('pretrained', 0.0), ('finetuned', 0.5)):
        out = root / name
        shutil.copytree(SRC, out, ignore=shutil.ignore_patterns('reference*', 'model.safetensors'))
        shutil.copytree(out / 'tiny_paligemma_tokenizer', out / 'tokenizer')
        state = {k: v + scale * v.float().std().clamp(min=1e-3) * torch.randn(v.shape,
                                                                              generator=gen)
                 for k, v in weights.items()}
        save_file(state, str(out / 'model.safetensors'), metadata=metadata)
        _seven_joint_state(out)
        for path in out.rglob('*'):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        paths.append(str(out))
    return paths


def test_pi05_pair_merges_and_acts_with_live_alpha(tmp_path):
    pre, ft = write_pair(tmp_path)
    h = RosHarness()
    try:
        traj = h.subscribe(JointTrajectory, OUT)
        merge = h.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        node = h.start_node(pre, ft, camera_topics=list(CAMERAS), joint_names=list(JOINTS),
                            alpha=0.5, control_period=0.1, replan_steps=5)
        assert node.policy.name == 'pi05'
        state = json.loads(merge.wait(1, timeout=60)[-1].data)
        assert state['alpha']['language'] == 0.5 and state['fingerprint']
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        wrist = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
        joints = np.linspace(-0.5, 0.5, 7)

        def chunk_after(count, timeout=60.0):
            traj.clear()
            deadline = time.monotonic() + timeout
            while len(traj) < count:
                assert time.monotonic() < deadline, f'no chunk in {timeout} s: {node.hold_reason}'
                h.publish_image(CAMERAS[0], rgb=base)
                h.publish_image(CAMERAS[1], rgb=wrist)
                h.publish_joints(joints, names=JOINTS)
                time.sleep(0.1)
            return np.array([list(p.positions) for p in traj.items[count - 1][1].points])

        mid = chunk_after(2)
        assert mid.shape == (10, 7) and np.all(np.isfinite(mid))
        assert list(traj.items[0][1].joint_names) == list(JOINTS)
        assert h.set_params(alpha=1.0)[0].successful
        assert json.loads(merge.wait(2, timeout=30)[-1].data)['alpha']['action'] == 1.0
        at_one = chunk_after(3)       # the first chunk after the set may predate it
        assert not np.allclose(mid, at_one), 'alpha change not visible in the actions'
        assert h.set_params(alpha_language=0.0)[0].successful
        state = json.loads(merge.wait(3, timeout=30)[-1].data)
        assert state['alpha'] == {'vision': 1.0, 'language': 0.0, 'action': 1.0, 'other': 1.0}
    finally:
        h.shutdown()
