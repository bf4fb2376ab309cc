"""SmolVLA and the merging library: LiveMerger maps LeRobot checkpoint names onto the module.

The pair: the reference checkpoint as "pretrained" and a perturbed copy as "finetuned", both real
LeRobot-layout folders (config, processor files, VLM folder, model.safetensors) in tmp_path.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file
from safetensors.torch import save_file
import torch

from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.groups import assign_groups
from retain_ros.merging.live import LiveMerger
from retain_ros.merging.spec import MergeSpec
from retain_ros.policies.smolvla import build_policy
from helpers.smolvla_reference import observations
from helpers.smolvla_reference import REF_DIR


@pytest.fixture(scope='module')
def ref():
    import json

    with open(os.path.join(REF_DIR, 'reference.json'), encoding='utf-8') as f:
        meta = json.load(f)
    return load_file(os.path.join(REF_DIR, 'reference.safetensors')), meta


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp('smolvla_pair')
    pre = str(root / 'pre')
    ft = str(root / 'ft')
    shutil.copytree(REF_DIR, pre)
    shutil.copytree(REF_DIR, ft)
    gen = torch.Generator().manual_seed(7)
    tensors = load_file(os.path.join(REF_DIR, 'model.safetensors'))
    perturbed = {}
    for key, t in tensors.items():
        scale = 0.2 * (float(t.std()) if t.numel() > 1 else 1.0) + 1e-3
        perturbed[key] = (t + scale * torch.randn(t.shape, generator=gen)).contiguous()
    save_file(perturbed, os.path.join(ft, 'model.safetensors'))
    return {'pre': pre, 'ft': ft, 'pre_state': tensors, 'ft_state': perturbed}


def _actions(policy, ref):
    arrays, _ = ref
    chunks = policy.predict_batch(observations(ref), noise=arrays['noise'].numpy())
    return np.stack([c.actions for c in chunks])


@pytest.fixture(scope='module')
def endpoints(pair, ref):
    out = {}
    for name in ('pre', 'ft'):
        pol = build_policy(pair[name], dtype='float32')
        pol.load_weights(pair[name])
        out[name] = _actions(pol, ref)
    assert np.abs(out['pre'] - out['ft']).max() > 1e-2  # the perturbation matters
    return out


def test_groups_cover_every_smolvla_tensor(pair):
    src = open_checkpoint(pair['pre'])
    try:
        assert src.family == 'smolvla'
        groups = assign_groups(src.keys(), 'smolvla')
    finally:
        src.close()
    assert set(groups.values()) == {'vision', 'language', 'action'}
    assert groups['model.vlm_with_expert.vlm.model.connector.modality_projection.proj.weight'] \
        == 'vision'
    assert groups['model.vlm_with_expert.vlm.lm_head.weight'] == 'language'
    assert groups['model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight'] == 'action'
    assert groups['model.state_proj.weight'] == 'action'


def test_live_merge_alpha_endpoints_and_groups(pair, ref, endpoints):
    policy = build_policy(pair['ft'], dtype='float32')
    params = dict(policy.module.named_parameters())
    ptrs = {k: p.data_ptr() for k, p in params.items()}
    merger = LiveMerger(policy.module, pair['pre'], [pair['ft']], MergeSpec(alpha=0.0),
                        family='smolvla')
    assert set(merger.groups) == set(pair['pre_state'])
    np.testing.assert_allclose(_actions(policy, ref), endpoints['pre'], atol=1e-6)

    merger.apply(MergeSpec(alpha=1.0))
    np.testing.assert_allclose(_actions(policy, ref), endpoints['ft'], atol=1e-6)
    assert {k: p.data_ptr() for k, p in policy.module.named_parameters()} == ptrs  # in place

    merger.apply(MergeSpec(alpha=0.5))
    half = _actions(policy, ref)
    w = 'model.vlm_with_expert.lm_expert.layers.0.mlp.up_proj.weight'
    want = 0.5 * pair['pre_state'][w] + 0.5 * pair['ft_state'][w]
    torch.testing.assert_close(params[w].detach(), want, atol=1e-6, rtol=0)

    # per-group alpha: only the action expert / projections take the finetuned weights
    merger.apply(MergeSpec(alpha=0.0, group_alpha={'action': 1.0}))
    action_only = _actions(policy, ref)
    vision = 'model.vlm_with_expert.vlm.model.vision_model.encoder.layers.0.mlp.fc1.weight'
    text = 'model.vlm_with_expert.vlm.model.text_model.layers.1.self_attn.q_proj.weight'
    assert torch.equal(params[vision].detach(), pair['pre_state'][vision])
    assert torch.equal(params[text].detach(), pair['pre_state'][text])
    assert torch.equal(params[w].detach(), pair['ft_state'][w])
    assert torch.equal(params['model.state_proj.bias'].detach(),
                       pair['ft_state']['model.state_proj.bias'])
    for other in (endpoints['pre'], endpoints['ft'], half):
        assert np.abs(action_only - other).max() > 1e-3

    merger.apply(MergeSpec(alpha=0.0, group_alpha={'action': 1.0, 'vision': 1.0}))
    assert np.abs(_actions(policy, ref) - action_only).max() > 1e-4
    assert merger.state.alphas['language'] == 0.0


def test_load_weights_refuses_a_checkpoint_that_does_not_fit(pair, tmp_path):
    bad = str(tmp_path / 'bad')
    shutil.copytree(pair['pre'], bad)
    tensors = dict(pair['pre_state'])
    tensors['model.state_proj.weight'] = torch.zeros(64, 16)
    del tensors['model.action_out_proj.bias']
    save_file(tensors, os.path.join(bad, 'model.safetensors'))
    policy = build_policy(pair['pre'], dtype='float32')
    with pytest.raises(ValueError, match=r'missing \[.model\.action_out_proj\.bias.\].*'
                                         r'model\.state_proj\.weight \(64, 16\) != \(64, 32\)'):
        policy.load_weights(bad)
    with pytest.raises(FileNotFoundError, match='no SmolVLA weights'):
        policy.load_weights(str(tmp_path))
