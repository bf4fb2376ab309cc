"""π0 against LeRobot 0.4.4 (test/data/pi0_ref: tiny random checkpoint + LeRobot's outputs).

One test per stage, so a failure says where the pipeline diverged: token ids, vision-tower
input, normalized state, first velocity (from LeRobot's own model inputs, so preprocessing
errors do not leak into it), every velocity, sampler output, final actions (end to end from raw
uint8 images and raw state).
"""
import os

import numpy as np
import pytest
import torch

from retain_ros.policies.flow import euler_sample
from retain_ros.policies.loader import load_policy

from helpers.parity import ACTION_TOL
from helpers.parity import ARRAY_TOL
from helpers.parity import max_abs
from helpers.parity import observations
from helpers.parity import reference

DIR, REF, META = reference('pi0_ref')
N_IMG = 2 * 16


@pytest.fixture(scope='module')
def policy():
    pol = load_policy(DIR, device='cpu', dtype='float32', warmup=False,
                      tokenizer_path=os.path.join(DIR, 'tiny_paligemma_tokenizer'))
    assert pol.name == 'pi0'
    return pol


@pytest.fixture(scope='module')
def inputs(policy):
    return policy._inputs(observations(REF, META))


@pytest.fixture(scope='module')
def velocities(policy):
    """Sampler run on LeRobot's own model inputs (images, ids, state) and noise."""
    ids = torch.cat([torch.full((2, N_IMG), policy.spec.image_token_id), REF['lang_tokens']], 1)
    mask = torch.cat([torch.ones(2, N_IMG, dtype=torch.long),
                      REF['lang_attention_mask'].long()], 1)
    pix = torch.stack([REF['model_input_image_base'], REF['model_input_image_wrist']], 1)
    own = {'input_ids': ids, 'attention_mask': mask, 'pixel_values': pix,
           'pixel_attention_mask': torch.ones(2, 2, dtype=torch.bool),
           'state': REF['state_padded_normalized']}
    with torch.no_grad():
        x, vs = euler_sample(policy._velocity_fn(own), REF['noise'], 4, keep_velocities=True)
    return x, torch.stack(vs)


def test_config_sizes_from_weights(policy):
    cfg = policy.spec.hf_config
    assert cfg.vlm_config.vision_config.patch_size == 16     # config.json says gemma_2b (14)
    assert cfg.vlm_config.text_config.hidden_size == 64 and cfg.dit_config.hidden_size == 32
    assert policy.spec.tokenizer_max_length == 48 and policy.spec.image_pad_order == 'lerobot'
    assert policy.stats.state.mode == 'MEAN_STD'


def test_stage_token_ids(inputs):
    assert torch.equal(inputs['input_ids'][:, N_IMG:], REF['lang_tokens'])
    assert torch.equal(inputs['attention_mask'][:, N_IMG:].bool(), REF['lang_attention_mask'])
    assert (inputs['attention_mask'][:, :N_IMG] == 1).all()


def test_stage_vision_input(inputs):
    pix = inputs['pixel_values']
    assert max_abs(pix[:, 0], REF['model_input_image_base']) <= ARRAY_TOL
    # the non-square wrist camera goes through resize-with-pad; LeRobot's pads are -3.0
    assert max_abs(pix[:, 1], REF['model_input_image_wrist']) <= ARRAY_TOL
    assert float(pix[:, 1].min()) == -3.0


def test_stage_state(inputs):
    assert max_abs(inputs['state'], REF['state_padded_normalized']) <= ARRAY_TOL


def test_stage_first_velocity(velocities):
    assert max_abs(velocities[1][0], REF['v_t_steps'][0]) <= ARRAY_TOL


def test_stage_every_velocity_and_sampler_output(velocities):
    assert max_abs(velocities[1], REF['v_t_steps']) <= ARRAY_TOL
    assert max_abs(velocities[0], REF['actions_model_padded']) <= ARRAY_TOL


def test_final_actions_end_to_end(policy):
    chunks = policy.predict_batch(observations(REF, META), noise=REF['noise'].numpy())
    actions = np.stack([c.actions for c in chunks])
    assert max_abs(actions, REF['actions_final']) <= ACTION_TOL


def test_normalize_actions_inverts_the_postprocessor(policy):
    model = policy.normalize_actions(REF['actions_final'][0].numpy())
    assert model.shape == (10, 32) and float(model[:, 7:].abs().max()) == 0.0
    assert max_abs(model[:, :7], REF['actions_normalized'][0]) <= ARRAY_TOL
