"""The retain_policy node runs a SmolVLA checkpoint pair on a real rclpy graph.

The pair is the LeRobot 0.4.4 SmolVLA fixture (test/data/smolvla_ref; its tokenizer is in the
VLM folder ``tiny_smolvlm``) as the pretrained model and a perturbed copy as the finetune, both
real safetensors files in tmp_path. The node merges them at startup with SmolVLA's group preset,
publishes chunks for the fixture's two cameras (one non-square), and changes α live through
parameters, uniformly and per group; each change is checked in ``~/merge_state``, in the live
weights of the node's module against the two files, and in the published actions.
"""
import os

import numpy as np
import pytest

pytest.importorskip('rclpy')

from helpers.family_node import FamilyNode  # noqa: E402
from helpers.family_node import JOINTS  # noqa: E402
from helpers.family_node import write_pair  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import torch  # noqa: E402

from retain_ros.merging.groups import assign_groups  # noqa: E402

#: one tensor of each SmolVLA preset group (LeRobot checkpoint names = the module's names)
PROBES = {
    'vision': 'model.vlm_with_expert.vlm.model.vision_model.encoder.layers.0.mlp.fc1.weight',
    'language': 'model.vlm_with_expert.vlm.model.text_model.layers.1.self_attn.q_proj.weight',
    'action': 'model.vlm_with_expert.lm_expert.layers.0.mlp.up_proj.weight',
    'action_proj': 'model.state_proj.weight',
}
GROUP_OF_PROBE = {'vision': 'vision', 'language': 'language', 'action': 'action',
                  'action_proj': 'action'}


def assert_weights(node, pre, ft, alphas):
    """The node's live probe tensors are ``(1 - a) * pre + a * ft`` with their group's α."""
    params = dict(node.policy.module.named_parameters())
    for probe, key in PROBES.items():
        a = alphas[GROUP_OF_PROBE[probe]]
        want = (1.0 - a) * pre[key] + a * ft[key]
        torch.testing.assert_close(params[key].detach(), want, atol=1e-6, rtol=0,
                                   msg=lambda m, k=key, a=a: f'{k} at alpha {a}: {m}')


def test_smolvla_pair_merges_and_acts_with_live_alpha(tmp_path):
    pre_dir, ft_dir = write_pair('smolvla_ref', tmp_path)
    pre = load_file(os.path.join(pre_dir, 'model.safetensors'))
    ft = load_file(os.path.join(ft_dir, 'model.safetensors'))
    with FamilyNode(pre_dir, ft_dir) as run:
        # merged at startup, with SmolVLA's family preset for the groups
        assert run.node.policy.name == 'smolvla'
        merger = run.node.runtime.merger
        assert merger.groups == assign_groups(pre, 'smolvla')
        assert set(merger.groups.values()) == {'vision', 'language', 'action'}
        state = run.merge_state(1)
        assert state['alpha'] == {'vision': 0.5, 'language': 0.5, 'action': 0.5, 'other': 0.5}
        assert state['fingerprint'] and state['valid'] is True
        assert_weights(run.node, pre, ft, state['alpha'])

        # chunks for the fixture's cameras; the same inputs and weights give the same chunk
        mid = run.chunk_after(3)
        assert mid.shape == (10, len(JOINTS)) and np.all(np.isfinite(mid))
        assert run.joint_names() == list(JOINTS)
        np.testing.assert_allclose(run.positions(1), mid, atol=1e-6)

        # uniform α change: re-merged in place, new fingerprint, other actions
        run.set_params(alpha=1.0)
        state = run.merge_state(2, timeout=30)
        assert state['alpha'] == {'vision': 1.0, 'language': 1.0, 'action': 1.0, 'other': 1.0}
        assert state['fingerprint'] != run.merge_state(1)['fingerprint']
        assert_weights(run.node, pre, ft, state['alpha'])
        at_one = run.chunk_after(3)       # the first chunk after the set may predate it
        assert np.all(np.isfinite(at_one))
        assert np.abs(at_one - mid).max() > 1e-3, 'alpha change not visible in the actions'

        # per-group α (SmolVLA preset): only the action expert and projections finetuned
        # (SetParameters applies one parameter at a time: one re-merge each)
        run.set_params(alpha=0.0)
        state = run.merge_state(3, timeout=30)
        assert state['alpha'] == {'vision': 0.0, 'language': 0.0, 'action': 0.0, 'other': 0.0}
        assert_weights(run.node, pre, ft, state['alpha'])
        run.set_params(alpha_action=1.0)
        state = run.merge_state(4, timeout=30)
        assert state['alpha'] == {'vision': 0.0, 'language': 0.0, 'action': 1.0, 'other': 0.0}
        assert_weights(run.node, pre, ft, state['alpha'])
        action_only = run.chunk_after(3)
        assert np.all(np.isfinite(action_only))
        for other in (mid, at_one):
            assert np.abs(action_only - other).max() > 1e-3, 'group alpha not visible'
