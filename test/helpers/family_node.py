"""Shared parts of the family node tests (test/policies/test_{pi05,smolvla}_node.py).

- :func:`write_pair`: a LeRobot fixture in test/data as a pretrained / finetuned pair of real
  LeRobot-layout folders (the fixture, and a copy with every float tensor perturbed), cut to one
  7-joint list for state and actions (the node needs one joint list for both);
- :class:`FamilyNode`: a ``retain_policy`` node on a real rclpy graph (conftest's
  :class:`RosHarness`) fed the fixture's two cameras (one non-square), with the chunk and
  ``~/merge_state`` collectors the tests read.
"""
import glob
import json
import os
import shutil
import time

import numpy as np
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save_file
import torch

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
#: joints of the fixtures' 7-dim actions (the state is cut to the same 7)
JOINTS = tuple(f'j{i}' for i in range(7))
OUT = '/arm_controller/joint_trajectory'
CAMERAS = ('cam/base', 'cam/wrist')
MERGE_STATE = '/retain_policy/merge_state'
#: weight on the perturbation of the finetuned copy (times each tensor's std)
PERTURBATION = 0.5


def seven_joint_state(out):
    """Cut the fixture's 8-dim state to the 7 joints of its actions in ``out``.

    Both config.json and the preprocessor's normalizer statistics are cut; both families pad the
    state to ``max_state_dim`` before the model, so the weights do not depend on the state width.
    """
    from safetensors.numpy import load_file as load_np
    from safetensors.numpy import save_file as save_np

    cfg = json.loads((out / 'config.json').read_text())
    cfg['input_features']['observation.state']['shape'] = [len(JOINTS)]
    (out / 'config.json').write_text(json.dumps(cfg))
    found = glob.glob(str(out / 'policy_preprocessor_step_*_normalizer_processor.safetensors'))
    assert len(found) == 1, f'{out}: expected one preprocessor normalizer file, got {found}'
    stats = load_np(found[0])
    save_np({k: v[:len(JOINTS)] if k.startswith('observation.state.') else v
             for k, v in stats.items()}, found[0])


def write_pair(fixture, root, tokenizer_dir=''):
    """``(pretrained, finetuned)`` paths under ``root`` made from ``test/data/<fixture>``.

    :param tokenizer_dir: a folder of the fixture copied to ``<ckpt>/tokenizer`` (where the loader
        looks for a tokenizer); empty when the family finds its tokenizer itself.
    """
    src = os.path.join(DATA, fixture)
    weights_path = os.path.join(src, 'model.safetensors')
    with safe_open(weights_path, 'pt') as f:
        metadata = f.metadata()
    weights = load_file(weights_path)
    gen = torch.Generator().manual_seed(7)
    paths = []
    for name, scale in (('pretrained', 0.0), ('finetuned', PERTURBATION)):
        out = root / name
        shutil.copytree(src, out, ignore=shutil.ignore_patterns('reference*', 'model.safetensors'))
        if tokenizer_dir:
            shutil.copytree(out / tokenizer_dir, out / 'tokenizer')
        state = {k: v + scale * v.float().std().clamp(min=1e-3) * torch.randn(v.shape,
                                                                              generator=gen)
                 for k, v in weights.items()}
        save_file(state, str(out / 'model.safetensors'), metadata=metadata)
        seven_joint_state(out)
        for path in out.rglob('*'):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        paths.append(str(out))
    return paths


class FamilyNode:
    """A ``retain_policy`` node merging ``(pretrained, finetuned)`` on a real rclpy graph.

    Start parameters are the harness defaults plus the fixture's cameras and joints, α = 0.5, a
    0.1 s control period and replanning every 5 steps (overridable through ``params``). Use as a
    context manager: the harness is shut down on exit.
    """

    def __init__(self, pretrained, finetuned, **params):
        from conftest import RosHarness
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from retain_ros.ros.policy_node.node import LATCHED_QOS

        self.harness = RosHarness()
        try:
            self.traj = self.harness.subscribe(JointTrajectory, OUT)
            self.merge = self.harness.subscribe(String, MERGE_STATE, LATCHED_QOS)
            values = dict(camera_topics=list(CAMERAS), joint_names=list(JOINTS), alpha=0.5,
                          control_period=0.1, replan_steps=5)
            values.update(params)
            self.node = self.harness.start_node(pretrained, finetuned, **values)
        except BaseException:
            self.harness.shutdown()
            raise
        rng = np.random.default_rng(0)
        self.images = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                       rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
        self.joints = np.linspace(-0.5, 0.5, len(JOINTS))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.harness.shutdown()

    def merge_state(self, count, timeout=60.0):
        """Wait for the ``count``-th ``~/merge_state`` message; return it JSON-decoded."""
        return json.loads(self.merge.wait(count, timeout=timeout)[count - 1].data)

    def set_params(self, **values):
        """Set node parameters through its service; assert the node accepted them."""
        for result in self.harness.set_params(**values):
            assert result.successful, f'set {values} refused: {result.reason}'

    def chunk_after(self, count, timeout=60.0):
        """Feed the same images and joint state until ``count`` new chunks arrived.

        :return: the ``count``-th one's positions ``(steps, joints)`` (the first chunk after a
            parameter change may have been computed before it).
        """
        self.traj.clear()
        deadline = time.monotonic() + timeout
        while len(self.traj) < count:
            assert time.monotonic() < deadline, \
                f'no chunk in {timeout} s: {self.node.hold_reason}'
            for topic, image in zip(CAMERAS, self.images):
                self.harness.publish_image(topic, rgb=image)
            self.harness.publish_joints(self.joints, names=JOINTS)
            time.sleep(0.1)
        return self.positions(count - 1)

    def positions(self, index):
        """Return the positions ``(steps, joints)`` of the ``index``-th chunk.

        Chunks are counted from the last :meth:`chunk_after`.
        """
        return np.array([list(p.positions) for p in self.traj.items[index][1].points])

    def joint_names(self, index=0):
        return list(self.traj.items[index][1].joint_names)
