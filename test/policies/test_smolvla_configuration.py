"""SmolVLA configuration, tokenizer / VLM lookup, refusals and config variants (real files)."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file
import torch

from retain_ros.policies.smolvla import build_policy
from retain_ros.policies.smolvla import load_smolvla_config
from retain_ros.policies.smolvla.processor_smolvla import resolve_tokenizer_path
from helpers.smolvla_reference import ACTION_TOL
from helpers.smolvla_reference import observations
from helpers.smolvla_reference import REF_DIR


@pytest.fixture(scope='module')
def ref():
    with open(os.path.join(REF_DIR, 'reference.json'), encoding='utf-8') as f:
        meta = json.load(f)
    return load_file(os.path.join(REF_DIR, 'reference.safetensors')), meta


def _copy(tmp_path, name='ckpt'):
    out = str(tmp_path / name)
    shutil.copytree(REF_DIR, out)
    return out


def _edit(path, fn):
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    fn(data)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f)


def _actions(ckpt, ref, dtype='float32'):
    arrays, _ = ref
    policy = build_policy(ckpt, dtype=dtype)
    policy.load_weights(ckpt)
    chunks = policy.predict_batch(observations(ref), noise=arrays['noise'].numpy())
    return policy, np.stack([c.actions for c in chunks])


def test_unknown_normalization_mode_is_refused(tmp_path):
    ckpt = _copy(tmp_path)

    def bad_mode(data):
        for step in data['steps']:
            if step['registry_name'] == 'normalizer_processor':
                step['config']['norm_map']['STATE'] = 'ROBUST_SCALE'

    _edit(os.path.join(ckpt, 'policy_preprocessor.json'), bad_mode)
    with pytest.raises(ValueError, match=r"policy_preprocessor\.json.*'ROBUST_SCALE'"):
        build_policy(ckpt, dtype='float32')


def test_missing_vlm_config_names_where_it_looked(tmp_path):
    ckpt = _copy(tmp_path)
    shutil.rmtree(os.path.join(ckpt, 'tiny_smolvlm'))
    _edit(os.path.join(ckpt, 'config.json'),
          lambda d: d.update(vlm_model_name='HuggingFaceTB/SmolVLM2-500M-Video-Instruct'))
    with pytest.raises(FileNotFoundError, match=r'SmolVLM2-500M-Video-Instruct.*no local '
                                                r'config\.json.*vlm'):
        build_policy(ckpt, dtype='float32')
    # a copy of the VLM folder at <ckpt>/vlm is found
    shutil.copytree(os.path.join(REF_DIR, 'tiny_smolvlm'), os.path.join(ckpt, 'vlm'))
    assert load_smolvla_config(ckpt).vlm_dir == os.path.join(ckpt, 'vlm')


def test_tokenizer_lookup_order(tmp_path, caplog):
    ckpt = _copy(tmp_path)
    spec = load_smolvla_config(ckpt)
    vlm = os.path.join(ckpt, 'tiny_smolvlm')
    assert resolve_tokenizer_path(ckpt, spec) == (vlm, "policy_preprocessor.json "
                                                       "tokenizer_name 'tiny_smolvlm'")
    assert resolve_tokenizer_path(ckpt, spec, REF_DIR + '/tiny_smolvlm')[1] == 'tokenizer_path'
    # tokenizer files only under <ckpt>/tokenizer (the VLM folder keeps just its config)
    os.makedirs(os.path.join(ckpt, 'tokenizer'))
    for name in os.listdir(vlm):
        if name != 'config.json':
            shutil.move(os.path.join(vlm, name), os.path.join(ckpt, 'tokenizer', name))
    assert resolve_tokenizer_path(ckpt, spec) == (os.path.join(ckpt, 'tokenizer'),
                                                  '<checkpoint>/tokenizer')
    with caplog.at_level(logging.INFO):
        build_policy(ckpt, dtype='float32')
    assert any('tokenizer from' in r.message and '<checkpoint>/tokenizer' in r.message
               for r in caplog.records)
    shutil.rmtree(os.path.join(ckpt, 'tokenizer'))
    with pytest.raises(FileNotFoundError, match='no SmolVLA tokenizer'):
        resolve_tokenizer_path(ckpt, spec)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        resolve_tokenizer_path(ckpt, spec, str(tmp_path / 'nope'))


def test_sizes_come_from_the_weights(tmp_path, ref, caplog):
    arrays, _ = ref
    ckpt = _copy(tmp_path)

    def wrong_sizes(data):
        data['text_config'].update(intermediate_size=999, num_hidden_layers=6)
        data['vision_config'].update(intermediate_size=77, num_hidden_layers=3, image_size=512)

    _edit(os.path.join(ckpt, 'tiny_smolvlm', 'config.json'), wrong_sizes)
    _edit(os.path.join(ckpt, 'config.json'), lambda d: d.update(num_vlm_layers=-1))
    with caplog.at_level(logging.WARNING):
        spec = load_smolvla_config(ckpt)
    text, vision = spec.vlm_config.text_config, spec.vlm_config.vision_config
    assert (text.intermediate_size, text.num_hidden_layers) == (128, 2)
    assert (vision.intermediate_size, vision.num_hidden_layers, vision.image_size) == (64, 1, 64)
    assert (spec.expert_config.hidden_size, spec.expert_config.intermediate_size) == (48, 256)
    assert any('using the weights' in r.message for r in caplog.records)
    _, got = _actions(ckpt, ref)
    assert np.abs(got - arrays['actions_final'].numpy()).max() <= ACTION_TOL


def test_attention_layout_must_match_the_weights(tmp_path):
    ckpt = _copy(tmp_path)
    _edit(os.path.join(ckpt, 'config.json'), lambda d: d.update(self_attn_every_n_layers=1))
    with pytest.raises(ValueError, match=r'expert layer 1 \(self-attention.*k_proj input '
                                         r'width 32, expected 48'):
        load_smolvla_config(ckpt)


def test_not_a_smolvla_config(tmp_path):
    ckpt = _copy(tmp_path)
    _edit(os.path.join(ckpt, 'config.json'), lambda d: d.update(type='pi0'))
    with pytest.raises(ValueError, match="not a SmolVLA config"):
        load_smolvla_config(ckpt)


def test_empty_camera_slot_and_prefix_padding_are_invisible(tmp_path, ref):
    """Masked prefix tokens (an empty camera, padding to prefix_length) change nothing."""
    arrays, _ = ref
    ckpt = _copy(tmp_path)

    def variant(data):
        data['input_features']['observation.images.empty_camera_0'] = {
            'type': 'VISUAL', 'shape': [3, 64, 64]}
        data['empty_cameras'] = 1
        data['prefix_length'] = 40

    _edit(os.path.join(ckpt, 'config.json'), variant)
    policy, got = _actions(ckpt, ref)
    assert policy.camera_names == ['base', 'wrist'] and policy.spec.empty_cameras == 1
    inputs = policy.inputs(observations(ref))
    assert len(inputs['images']) == 3 and not inputs['img_masks'][2].any()
    assert torch.all(inputs['images'][2] == -1)
    emb, pad, _ = policy.module.model.embed_prefix(
        inputs['images'], inputs['img_masks'], inputs['lang_tokens'], inputs['lang_masks'],
        inputs['state'])
    assert emb.shape[1] == 40 and not pad[:, 25:].any()
    assert np.abs(got - arrays['actions_final'].numpy()).max() <= 1e-5


def test_image_special_tokens(tmp_path, ref):
    arrays, _ = ref
    ckpt = _copy(tmp_path)
    _edit(os.path.join(ckpt, 'config.json'), lambda d: d.update(add_image_special_tokens=True))
    policy, got = _actions(ckpt, ref)
    assert policy._special_ids == (3, 5)  # <fake_token_around_image>, <global-img>
    inputs = policy.inputs(observations(ref))
    emb, pad, att = policy.module.model.embed_prefix(
        inputs['images'], inputs['img_masks'], inputs['lang_tokens'], inputs['lang_masks'],
        inputs['state'], policy._special_ids)
    assert emb.shape[1] == 2 * (2 + 4 + 1) + 12 + 1
    table = policy.module.model.vlm_with_expert.embed_tokens(torch.tensor([3, 5]))
    torch.testing.assert_close(emb[0, :2], table)  # not scaled by sqrt(d)
    assert np.all(np.isfinite(got))
    assert np.abs(got - arrays['actions_final'].numpy()).max() > 1e-3


def test_bfloat16_runs_close_to_float32(tmp_path, ref):
    arrays, _ = ref
    policy, got = _actions(REF_DIR, ref, dtype='bfloat16')
    assert next(policy.module.parameters()).dtype == torch.bfloat16
    assert np.all(np.isfinite(got))
    # bf16 rounding, and in bf16 transformers 4.57's patch positions are 0..n-1 (see
    # legacy_patch_positions): close to float32, not equal
    assert np.abs(got - arrays['actions_final'].numpy()).max() < 0.25
