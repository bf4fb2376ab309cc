"""The retain_policy node runs a π0.5 checkpoint pair on a real rclpy graph.

The pair is the LeRobot 0.4.4 π0.5 fixture (test/data/pi05_ref) as the pretrained model and a
perturbed copy as the finetune, both real safetensors files in tmp_path: the node merges them at
startup, publishes chunks for two cameras (one non-square), and changes α live through parameters.
"""
import numpy as np
import pytest

pytest.importorskip('rclpy')

from helpers.family_node import FamilyNode  # noqa: E402
from helpers.family_node import JOINTS  # noqa: E402
from helpers.family_node import write_pair  # noqa: E402


def test_pi05_pair_merges_and_acts_with_live_alpha(tmp_path):
    pre, ft = write_pair('pi05_ref', tmp_path, tokenizer_dir='tiny_paligemma_tokenizer')
    with FamilyNode(pre, ft) as run:
        assert run.node.policy.name == 'pi05'
        state = run.merge_state(1)
        assert state['alpha']['language'] == 0.5 and state['fingerprint']
        mid = run.chunk_after(2)
        assert mid.shape == (10, 7) and np.all(np.isfinite(mid))
        assert run.joint_names() == list(JOINTS)
        run.set_params(alpha=1.0)
        assert run.merge_state(2, timeout=30)['alpha']['action'] == 1.0
        at_one = run.chunk_after(3)       # the first chunk after the set may predate it
        assert not np.allclose(mid, at_one), 'alpha change not visible in the actions'
        run.set_params(alpha_language=0.0)
        state = run.merge_state(3, timeout=30)
        assert state['alpha'] == {'vision': 1.0, 'language': 0.0, 'action': 1.0, 'other': 1.0}
