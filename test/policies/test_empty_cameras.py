"""Empty camera slots (``Observation.empty_cameras``) in π0, π0.5 and SmolVLA.

LeRobot (``_preprocess_images`` / ``prepare_images``) and openpi (``DroidInputs``) feed a slot with
no camera an all -1 image (after ``x * 2 - 1``) with image mask False; LeRobot puts such slots
after the present cameras, and SmolVLA keeps at most ``empty_cameras`` of them. The tiny LeRobot
reference checkpoints (test/data/*_ref, cameras ``base`` 64x64 and ``wrist`` 48x80) check that a
masked slot's content is ignored, that the chunk equals the one from inputs built the LeRobot
way by hand (LeRobot's own processed wrist image first, the -1 slot last, mask False) through
the same model, that unknown slot names are refused and that mixed batches work.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from retain_ros.policies.base import feature_names_from_config
from retain_ros.policies.base import Observation
from retain_ros.policies.flow import euler_sample
from retain_ros.policies.images import LEROBOT
from retain_ros.policies.images import OPENPI
from retain_ros.policies.images import pi_image
from retain_ros.policies.loader import load_policy
from retain_ros.policies.smolvla import build_policy as build_smolvla

from helpers.parity import DATA
from helpers.parity import observations
from helpers.parity import reference

FAMILIES = ('pi0', 'pi05', 'smolvla')
#: Same model, same noise, inputs arranged differently (masked tokens moved): float32 noise.
TOL = 1e-5
_CACHE = {}


def _load(family):
    if family not in _CACHE:
        directory, ref, meta = reference(f'{family}_ref')
        if family == 'smolvla':
            policy = build_smolvla(directory, device='cpu', dtype='float32')
            policy.load_weights(directory)
        else:
            policy = load_policy(directory, device='cpu', dtype='float32', warmup=False,
                                 tokenizer_path=os.path.join(directory,
                                                             'tiny_paligemma_tokenizer'))
        _CACHE[family] = (policy, ref, meta)
    return _CACHE[family]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def _with_empty(obs, empty, **images):
    """A copy of ``obs`` with ``empty_cameras`` and some images replaced (None: removed)."""
    imgs = dict(obs.images)
    for name, img in images.items():
        if img is None:
            imgs.pop(name, None)
        else:
            imgs[name] = img
    return Observation(images=imgs, instruction=obs.instruction, state=obs.state,
                       empty_cameras=empty if isinstance(empty, str) else tuple(empty))


def _chunks(policy, obs, noise):
    return np.stack([c.actions for c in policy.predict_batch(obs, noise=noise)])


def test_empty_image_is_minus_one_as_a_zero_uint8_image():
    zeros = np.zeros((64, 64, 3), dtype=np.uint8)
    for order in (LEROBOT, OPENPI):
        assert torch.all(pi_image(zeros, 64, 64, order) == -1.0)


@pytest.mark.parametrize('slot', ['base', 'wrist'])
def test_masked_slot_content_does_not_change_actions(family, slot):
    policy, ref, meta = _load(family)
    obs = observations(ref, meta)
    noise = ref['noise'].numpy()
    rng = np.random.default_rng(7)
    shape = obs[0].images[slot].shape
    a = _chunks(policy, [_with_empty(o, [slot]) for o in obs], noise)
    b = _chunks(policy, [_with_empty(o, [slot], **{slot: rng.integers(0, 256, shape, np.uint8)})
                         for o in obs], noise)
    c = _chunks(policy, [_with_empty(o, [slot], **{slot: None}) for o in obs], noise)
    zeros = np.zeros(policy.spec.image_size + (3,), dtype=np.uint8)
    d = _chunks(policy, [_with_empty(o, [slot], **{slot: zeros}) for o in obs], noise)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, d)
    full = _chunks(policy, obs, noise)
    assert np.abs(full - a).max() > TOL  # the slot really is hidden (the tiny π0.5 barely
    # looks at its images: ~1e-4)


def _pi0_lerobot_actions(policy, ref, pixels, image_masks):
    """π0 through transformers' full forward (no cache), LeRobot's model inputs by hand."""
    n_tok = policy.spec.image_seq_length
    n_cams = pixels.shape[1]
    ids = torch.cat([torch.full((2, n_tok * n_cams), policy.spec.image_token_id),
                     ref['lang_tokens']], 1)
    mask = torch.cat([image_masks.long().repeat_interleave(n_tok, 1),
                      ref['lang_attention_mask'].long()], 1)

    def velocity(x_t, t):
        time = torch.full((2,), t, dtype=torch.float32)
        return policy.model(state=ref['state_padded_normalized'], input_ids=ids,
                            pixel_values=pixels, attention_mask=mask,
                            pixel_attention_mask=torch.ones(2, n_cams, dtype=torch.bool),
                            noise=x_t, timestep=time).logits

    with torch.no_grad():
        x, _ = euler_sample(velocity, ref['noise'], int(policy.model.config.num_inference_steps))
    return x


def _pi05_lerobot_actions(policy, ref, pixels, image_masks):
    n_tok = policy.spec.image_seq_length
    mask = torch.cat([image_masks.long().repeat_interleave(n_tok, 1),
                      ref['lang_attention_mask'].long()], 1)
    model = policy.model
    with torch.no_grad():
        prefix = model.prefix_cache(pixels, ref['lang_tokens'], mask)
        x, _ = euler_sample(
            lambda x_t, t: model.velocity(x_t, torch.full((2,), t), prefix, mask),
            ref['noise'], int(model.config.num_inference_steps))
    return x


def _smolvla_lerobot_actions(policy, ref, images, img_masks, special_ids=None):
    inputs = {'images': images, 'img_masks': img_masks, 'lang_tokens': ref['lang_tokens'],
              'lang_masks': ref['lang_attention_mask'].bool(),
              'state': ref['state_padded_normalized']}
    model = policy.module.model
    with torch.no_grad():
        cache, pad = model.prefix(inputs, special_ids)
        x, _ = euler_sample(lambda x_t, t: model.velocity(x_t, torch.full((2,), t), cache, pad),
                            ref['noise'], policy.spec.num_steps)
    return x


def test_empty_slot_equals_lerobot_inputs_by_hand(family):
    """``base`` empty: LeRobot feeds [wrist, -1 image] with masks [True, False]."""
    policy, ref, meta = _load(family)
    obs = [_with_empty(o, ['base'], base=None) for o in observations(ref, meta)]
    got = _chunks(policy, obs, ref['noise'].numpy())
    wrist = ref['model_input_image_wrist']
    blank = torch.full_like(wrist, -1.0)
    if family == 'smolvla':
        # the checkpoint has empty_cameras = 0: LeRobot drops the missing camera altogether
        assert policy.spec.policy_config.get('empty_cameras', 0) == 0
        x = _smolvla_lerobot_actions(policy, ref, [wrist], [torch.ones(2, dtype=torch.bool)])
    else:
        pixels = torch.stack([wrist, blank], 1)
        masks = torch.tensor([[True, False]] * 2)
        if family == 'pi0':
            x = _pi0_lerobot_actions(policy, ref, pixels, masks)
        else:
            x = _pi05_lerobot_actions(policy, ref, pixels, masks)
    want = policy.processor.unnormalize_actions(x)
    assert np.abs(got - want).max() <= TOL


def test_processor_inputs_mark_the_slot(family):
    policy, ref, meta = _load(family)
    obs = [_with_empty(o, ['wrist']) for o in observations(ref, meta)]
    if family == 'smolvla':
        inputs = policy.inputs(obs)
        assert [m.tolist() for m in inputs['img_masks']] == [[True, True], [False, False]]
        assert torch.all(inputs['images'][1] == -1.0)
        return
    inputs = policy._inputs(obs)
    n_tok = policy.spec.image_seq_length
    assert inputs['image_masks'].tolist() == [[True, False]] * 2
    assert torch.all(inputs['pixel_values'][:, 1] == -1.0)
    assert inputs['attention_mask'][:, :n_tok].all()
    assert not inputs['attention_mask'][:, n_tok:2 * n_tok].any()
    if family == 'pi0':
        assert inputs['pixel_attention_mask'].all()  # every slot keeps its image tokens


def test_unknown_or_all_empty_slots_are_refused(family):
    policy, ref, meta = _load(family)
    obs = observations(ref, meta)
    with pytest.raises(ValueError, match='left_wrist'):
        policy.predict_batch([_with_empty(obs[0], ['wrist', 'left_wrist'])])
    with pytest.raises(ValueError, match='every camera slot'):
        policy.predict_batch([_with_empty(obs[0], ['base', 'wrist'])])
    with pytest.raises(ValueError, match='tuple of camera names'):
        policy.predict_batch([_with_empty(obs[0], 'wrist')])
    with pytest.raises(ValueError, match='missing camera'):
        policy.predict_batch([_with_empty(obs[0], [], wrist=None)])


def test_batch_mixing_empty_and_full_observations(family):
    policy, ref, meta = _load(family)
    obs = observations(ref, meta)
    noise = ref['noise'].numpy()
    mixed = [obs[0], _with_empty(obs[1], ['base'], base=None)]
    got = _chunks(policy, mixed, noise)
    alone0 = _chunks(policy, mixed[:1], noise[:1])
    alone1 = _chunks(policy, mixed[1:], noise[1:])
    assert np.abs(got[0] - alone0[0]).max() <= TOL
    assert np.abs(got[1] - alone1[0]).max() <= TOL
    full = _chunks(policy, obs, noise)
    assert np.abs(got[0] - full[0]).max() <= TOL
    assert np.abs(got[1] - full[1]).max() > TOL


def _smolvla_variant(tmp_path):
    """The SmolVLA reference with image special tokens and one ``empty_camera_0`` slot."""
    src = os.path.join(DATA, 'smolvla_ref')
    ckpt = str(tmp_path / 'smolvla_empty')
    shutil.copytree(src, ckpt)
    path = os.path.join(ckpt, 'config.json')
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    data['input_features']['observation.images.empty_camera_0'] = {
        'type': 'VISUAL', 'shape': [3, 64, 64]}
    data['empty_cameras'] = 1
    data['add_image_special_tokens'] = True
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f)
    policy = build_smolvla(ckpt, device='cpu', dtype='float32')
    policy.load_weights(ckpt)
    return policy


def test_smolvla_empty_named_slot_caps_at_empty_cameras(tmp_path):
    """``base`` empty + ``empty_camera_0``: LeRobot keeps min(2, empty_cameras=1) -1 slots,
    each wrapped in its (visible) image special tokens, after the present ``wrist``."""
    _, ref, meta = _load('smolvla')
    policy = _smolvla_variant(tmp_path)
    obs = observations(ref, meta)
    noise = ref['noise'].numpy()
    empty = [_with_empty(o, ['base', 'empty_camera_0'], base=None) for o in obs]
    got = _chunks(policy, empty, noise)
    wrist = ref['model_input_image_wrist']
    x = _smolvla_lerobot_actions(policy, ref, [wrist, torch.full_like(wrist, -1.0)],
                                 [torch.ones(2, dtype=torch.bool),
                                  torch.zeros(2, dtype=torch.bool)], policy._special_ids)
    assert np.abs(got - policy.processor.unnormalize_actions(x)).max() <= TOL
    inputs = policy.inputs(empty)
    assert [m.tolist() for m in inputs['slot_masks']] == [[True] * 2, [True] * 2, [False] * 2]
    # a mixed batch: row 0 has every camera (3 wrapped slots), row 1 the capped layout
    mixed = _chunks(policy, [obs[0], empty[1]], noise)
    assert np.abs(mixed[1] - got[1]).max() <= TOL
    assert np.abs(mixed[0] - _chunks(policy, obs[:1], noise[:1])[0]).max() <= TOL


def test_feature_names():
    for family in FAMILIES:
        policy, _, _ = _load(family)
        assert policy.feature_names is None  # LeRobot writes no per-dimension names
    config = {'input_features': {'observation.state': {'type': 'STATE', 'shape': [2],
                                                       'names': ['j0', 'j1']}},
              'output_features': {'action': {'type': 'ACTION', 'shape': [1],
                                             'names': {'motors': ['grip']}}}}
    assert feature_names_from_config(config, 2, 1) == {'state': ['j0', 'j1'],
                                                       'action': ['grip']}
    assert feature_names_from_config(config, 3, 1) is None
    assert feature_names_from_config({}) is None
