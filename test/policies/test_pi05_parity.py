"""π0.5 against LeRobot 0.4.4 (test/data/pi05_ref: tiny random checkpoint + LeRobot's outputs).

One test per stage, so a failure says where the pipeline diverged: normalized state, discretized
state and full prompts, token ids, vision-tower input, first velocity (from LeRobot's own model
inputs, so preprocessing errors do not leak into it), every velocity, sampler output, final
actions (end to end from raw uint8 images and raw state).
"""
import os

import numpy as np
import pytest
import torch

from retain_ros.policies.flow import euler_sample
from retain_ros.policies.loader import detect_family
from retain_ros.policies.loader import load_policy

from helpers.parity import ACTION_TOL
from helpers.parity import ARRAY_TOL
from helpers.parity import max_abs
from helpers.parity import observations
from helpers.parity import reference

DIR, REF, META = reference('pi05_ref')
N_IMG = 2 * 16


@pytest.fixture(scope='module')
def policy():
    assert detect_family(DIR) == 'pi05'
    pol = load_policy(DIR, device='cpu', dtype='float32', warmup=False,
                      tokenizer_path=os.path.join(DIR, 'tiny_paligemma_tokenizer'))
    assert pol.name == 'pi05'
    return pol


@pytest.fixture(scope='module')
def inputs(policy):
    return policy._inputs(observations(REF, META))


@pytest.fixture(scope='module')
def velocities(policy):
    """Sampler run on LeRobot's own model inputs (images, token ids) and noise."""
    mask = torch.cat([torch.ones(2, N_IMG, dtype=torch.long),
                      REF['lang_attention_mask'].long()], 1)
    pix = torch.stack([REF['model_input_image_base'], REF['model_input_image_wrist']], 1)
    own = {'input_ids': REF['lang_tokens'], 'attention_mask': mask, 'pixel_values': pix}
    with torch.no_grad():
        x, vs = euler_sample(policy._velocity_fn(own), REF['noise'], 4, keep_velocities=True)
    return x, torch.stack(vs)


def test_config_sizes_from_weights(policy):
    cfg = policy.spec.hf_config
    assert cfg.vlm_config.vision_config.patch_size == 16     # config.json says gemma_2b (14)
    assert cfg.dit_config.hidden_size == 32 and cfg.vlm_config.text_config.hidden_size == 64
    assert policy.spec.tokenizer_max_length == 200
    assert policy.stats.state.mode == policy.stats.action.mode == 'QUANTILES'
    names = [n for n, _ in policy.module.named_parameters()]
    assert 'model.dit.layers.0.input_layernorm.dense.weight' in names
    assert 'embed_action_time.time_mlp_in.weight' in names
    assert not any('state_proj' in n for n in names)


def test_stage_state_normalized_and_discretized(inputs):
    assert max_abs(inputs['state'], REF['state_padded_normalized']) <= ARRAY_TOL
    assert torch.equal(inputs['state_bins'], REF['state_discretized'])


def test_stage_prompts(policy):
    assert policy.processor.prompts(observations(REF, META)) == META['full_prompts']


def test_stage_token_ids(inputs):
    assert torch.equal(inputs['input_ids'], REF['lang_tokens'])
    assert torch.equal(inputs['text_mask'].bool(), REF['lang_attention_mask'])


def test_stage_vision_input(inputs):
    pix = inputs['pixel_values']
    assert max_abs(pix[:, 0], REF['model_input_image_base']) <= ARRAY_TOL
    assert max_abs(pix[:, 1], REF['model_input_image_wrist']) <= ARRAY_TOL
    assert float(pix[:, 1].min()) == -3.0       # LeRobot 0.4.4 pads before x * 2 - 1


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
    model = policy.normalize_actions(REF['actions_final'][1].numpy())
    assert model.shape == (10, 32) and float(model[:, 7:].abs().max()) == 0.0
    assert max_abs(model[:, :7], REF['actions_normalized'][1]) <= ARRAY_TOL


def test_openpi_names_load_the_same(policy, tmp_path):
    """openpi PyTorch checkpoints: the LeRobot names without the leading ``model.``."""
    import shutil
    from safetensors.torch import load_file
    from safetensors.torch import save_file

    state = load_file(os.path.join(DIR, 'model.safetensors'))
    out = tmp_path / 'openpi'
    shutil.copytree(DIR, out, ignore=shutil.ignore_patterns('model.safetensors', 'reference*'))
    save_file({k[len('model.'):]: v for k, v in state.items()}, str(out / 'model.safetensors'))
    other = load_policy(str(out), device='cpu', warmup=False,
                        tokenizer_path=os.path.join(DIR, 'tiny_paligemma_tokenizer'))
    for (name, a), (_, b) in zip(policy.module.state_dict().items(),
                                 other.module.state_dict().items()):
        assert torch.equal(a, b), name
