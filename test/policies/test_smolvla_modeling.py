"""SmolVLA adapter against LeRobot 0.4.4's own outputs (test/data/smolvla_ref), stage by stage.

The reference folder is a tiny random ``SmolVLAPolicy`` written by LeRobot's ``save_pretrained``
plus ``reference.safetensors``: raw inputs and what LeRobot computed from them (float32, CPU).
Each stage is its own test and is fed the REFERENCE's inputs of that stage, so a failure names
the stage that diverged.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.torch import load_file
import torch

from retain_ros.policies.base import Observation
from retain_ros.policies.base import Policy
from retain_ros.policies.flow import euler_sample
from retain_ros.policies.prompts import newline_terminated
from retain_ros.policies.smolvla import build_policy
from retain_ros.policies.smolvla import resize_with_pad_left_top
from retain_ros.policies.smolvla.layers_smolvla import legacy_patch_positions

from helpers.smolvla_reference import ACTION_TOL  # noqa: E402
from helpers.smolvla_reference import observations  # noqa: E402
from helpers.smolvla_reference import REF_DIR  # noqa: E402


@pytest.fixture(scope='module')
def ref():
    arrays = load_file(os.path.join(REF_DIR, 'reference.safetensors'))
    with open(os.path.join(REF_DIR, 'reference.json'), encoding='utf-8') as f:
        meta = json.load(f)
    return arrays, meta


@pytest.fixture(scope='module')
def policy():
    pol = build_policy(REF_DIR, device='cpu', dtype='float32')
    pol.load_weights(REF_DIR)
    return pol


def reference_inputs(ref):
    """The model inputs exactly as LeRobot fed them (isolates the model from preprocessing)."""
    arrays, _ = ref
    return {'images': [arrays['model_input_image_base'], arrays['model_input_image_wrist']],
            'img_masks': [torch.ones(2, dtype=torch.bool)] * 2,
            'lang_tokens': arrays['lang_tokens'], 'lang_masks': arrays['lang_attention_mask'],
            'state': arrays['state_padded_normalized']}


def test_policy_contract(policy):
    assert isinstance(policy, Policy) and policy.name == 'smolvla'
    assert policy.camera_names == ['base', 'wrist']
    assert (policy.state_dim, policy.action_dim, policy.chunk_size) == (8, 7, 10)
    assert policy.control_period == pytest.approx(0.1)
    assert 'normalizer_processor' in policy.stats.source
    assert policy.stats.state.mode == 'MEAN_STD' and policy.stats.action.mode == 'MEAN_STD'
    assert policy.spec.cross_attn_layers == (1,)


def test_stage_token_ids(policy, ref):
    arrays, meta = ref
    out = policy.processor.tokenize(meta['instructions'])
    assert out['lang_tokens'].dtype == torch.long
    assert torch.equal(out['lang_tokens'], arrays['lang_tokens'])
    assert torch.equal(out['lang_masks'], arrays['lang_attention_mask'])
    # no BOS, newline appended, padded to the longest prompt only
    assert newline_terminated('open the drawer') == 'open the drawer\n'
    assert newline_terminated('open\n') == 'open\n'
    assert out['lang_tokens'].shape[1] == int(arrays['lang_attention_mask'].sum(1).max())


def test_stage_vision_tower_inputs(policy, ref):
    arrays, _ = ref
    images, masks = policy.processor.vision_inputs([o.images for o in observations(ref)])
    assert len(images) == 2 and all(bool(m.all()) for m in masks)
    for got, key in zip(images, ('model_input_image_base', 'model_input_image_wrist')):
        assert got.shape == arrays[key].shape
        assert (got - arrays[key]).abs().max().item() <= 1e-6, key
    # wrist 48x80 -> 38x64 after resize; the 26 padded rows are on TOP and are -1
    wrist = images[1]
    assert torch.all(wrist[:, :, :26] == -1.0)
    assert not torch.all(wrist[:, :, 26] == -1.0)


def test_resize_with_pad_pads_left_and_top():
    img = torch.ones(1, 3, 20, 10)
    out = resize_with_pad_left_top(img, 16, 16, pad_value=0.0)
    assert out.shape == (1, 3, 16, 16)
    assert torch.all(out[..., :, :8] == 0) and torch.all(out[..., :, 8:] == 1)


def test_stage_normalized_state(policy, ref):
    arrays, _ = ref
    state = policy.processor.state([o.state for o in observations(ref)])
    assert state.shape == (2, 32)
    assert (state - arrays['state_padded_normalized']).abs().max().item() <= 1e-6
    assert torch.all(state[:, 8:] == 0)


def test_vision_positions_follow_transformers_457():
    ids = legacy_patch_positions(4, 4, 4, torch.float32, torch.device('cpu'))
    assert ids.tolist()[:4] == [0, 0, 1, 2]
    assert ids.tolist()[4:8] == [0, 0, 1, 2]


def test_stage_first_velocity(policy, ref):
    arrays, _ = ref
    velocity = policy.velocity_fn(reference_inputs(ref))
    with torch.no_grad():
        v = velocity(arrays['noise'], 1.0)
    assert v.shape == (2, 10, 32) and v.dtype == torch.float32
    assert (v - arrays['v_t_steps'][0]).abs().max().item() <= 1e-5


def test_stage_every_velocity_and_sampler_output(policy, ref):
    arrays, _ = ref
    velocity = policy.velocity_fn(reference_inputs(ref))
    with torch.no_grad():
        x0, vs = euler_sample(velocity, arrays['noise'], policy.spec.num_steps,
                              keep_velocities=True)
    assert len(vs) == arrays['v_t_steps'].shape[0] == 4
    for i, v in enumerate(vs):
        assert (v - arrays['v_t_steps'][i]).abs().max().item() <= 1e-5, f'step {i}'
    assert (x0 - arrays['actions_model_padded']).abs().max().item() <= 1e-5


def test_stage_final_actions(policy, ref):
    """The whole pipeline from raw uint8 images, text and robot-unit state."""
    arrays, _ = ref
    chunks = policy.predict_batch(observations(ref), noise=arrays['noise'].numpy())
    got = np.stack([c.actions for c in chunks])
    assert got.shape == (2, 10, 7)
    assert np.abs(got - arrays['actions_final'].numpy()).max() <= ACTION_TOL
    assert all(c.dt == pytest.approx(0.1) and c.info['model_ms'] > 0 for c in chunks)


def test_predict_single_matches_batch_row(policy, ref):
    arrays, _ = ref
    obs = observations(ref)
    one = policy.predict(obs[1], noise=arrays['noise'][1].numpy())
    assert np.abs(one.actions - arrays['actions_final'][1].numpy()).max() <= ACTION_TOL


def test_normalize_actions_inverts_postprocessor(policy, ref):
    arrays, _ = ref
    model = policy.normalize_actions(arrays['actions_final'][0].numpy())
    assert model.shape == (10, 32)
    assert (model[:, :7] - arrays['actions_normalized'][0]).abs().max().item() <= 1e-5
    assert torch.all(model[:, 7:] == 0)


def test_default_noise_is_seeded_and_guidance_hook(policy, ref):
    obs = observations(ref)[:1]
    a = policy.predict(obs[0]).actions
    b = policy.predict(obs[0]).actions
    np.testing.assert_array_equal(a, b)
    calls = []

    def guidance(x_t, t, velocity_fn):
        calls.append(t)
        return velocity_fn(x_t, t)

    c = policy.predict(obs[0], guidance=guidance).actions
    assert calls == [1.0, 0.75, 0.5, 0.25]
    np.testing.assert_allclose(c, a, atol=1e-6)


def test_bad_inputs_are_refused_with_names(policy, ref):
    obs = observations(ref)[0]
    with pytest.raises(ValueError, match='noise must have shape'):
        policy.predict_batch([obs], noise=np.zeros((1, 10, 7)))
    with pytest.raises(ValueError, match="missing camera image.*wrist"):
        policy.predict(Observation(images={'base': obs.images['base']},
                                   instruction='x', state=obs.state))
    with pytest.raises(ValueError, match='state must have 8 values'):
        policy.predict(Observation(images=obs.images, instruction='x', state=np.zeros(3)))
    with pytest.raises(ValueError, match="camera 'base'.*uint8"):
        policy.predict(Observation(images={'base': obs.images['base'].astype(np.float32),
                                           'wrist': obs.images['wrist']},
                                   instruction='x', state=obs.state))
