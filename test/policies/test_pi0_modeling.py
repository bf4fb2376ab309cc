"""Pi0Policy: predict, determinism, batching, training loss, save/load round trips."""
import json
import os

import numpy as np
import pytest
from safetensors import safe_open
import torch

from retain_ros.merging.dialects import canonical_pi0_key
from retain_ros.merging.dialects import lerobot_pi0_key
from retain_ros.policies.base import Observation
from retain_ros.policies.pi0 import NormStats
from retain_ros.policies.pi0 import Pi0Policy
from retain_ros.policies.pi0 import save_pi0_checkpoint
from retain_ros.policies.pi0 import tiny_pi0_config
from retain_ros.policies.pi0.checkpoint_pi0 import read_pi0_state_dict

from helpers.pi0_layout import FIXTURE
from helpers.pi0_layout import write_layout_weights

STATS = NormStats(np.zeros(4), np.ones(4), np.array([0.5, -0.5, 1.0]), np.array([2.0, 1.0, 0.5]),
                  source='test')


def make_obs(cams=('base',), size=64, seed=0, instruction='put the gripper on the red block'):
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cams}
    return Observation(images=images, instruction=instruction, state=rng.normal(size=4))


@pytest.fixture(scope='module')
def policy():
    cfg = tiny_pi0_config(4, 3, chunk_size=8, camera_names=('front', 'wrist'), image_size=32,
                          num_inference_steps=3)
    return Pi0Policy.from_config(cfg, stats=STATS, init_seed=0)


def test_predict_shape_finite_deterministic(policy):
    obs = make_obs(('front', 'wrist'), size=48)
    chunk = policy.predict(obs)
    assert chunk.actions.shape == (8, 3) and chunk.horizon == 8
    assert chunk.actions.dtype == np.float64
    assert np.all(np.isfinite(chunk.actions))
    assert chunk.dt == pytest.approx(0.1)
    assert chunk.info['model_ms'] > 0
    np.testing.assert_array_equal(policy.predict(obs).actions, chunk.actions)
    assert not policy.module.training
    assert policy.camera_names == ['front', 'wrist']
    assert (policy.state_dim, policy.action_dim, policy.chunk_size) == (4, 3, 8)
    # the instruction and the images reach the model
    other = make_obs(('front', 'wrist'), size=48, instruction='open the drawer')
    assert not np.allclose(policy.predict(other).actions, chunk.actions)
    other = make_obs(('front', 'wrist'), size=48, seed=1)
    assert not np.allclose(policy.predict(other).actions, chunk.actions)


def test_predict_batch_matches_predict(policy):
    a = make_obs(('front', 'wrist'), seed=2)
    b = make_obs(('front', 'wrist'), seed=3, instruction='x')
    chunks = policy.predict_batch([a, b])
    np.testing.assert_allclose(chunks[0].actions, policy.predict(a).actions, atol=1e-5)
    assert chunks[1].actions.shape == (8, 3)


def test_noise_seed_changes_sample(policy):
    obs = make_obs(('front', 'wrist'))
    other = Pi0Policy(policy.spec, policy.module, policy.processor, noise_seed=7)
    assert not np.allclose(other.predict(obs).actions, policy.predict(obs).actions)


def test_bad_observations(policy):
    good = make_obs(('front', 'wrist'))
    with pytest.raises(ValueError, match='missing camera'):
        policy.predict(Observation({'front': good.images['front']}, 'go', good.state))
    with pytest.raises(ValueError, match='uint8'):
        policy.predict(Observation({'front': good.images['front'],
                                    'wrist': good.images['wrist'].astype(np.float32)},
                                   'go', good.state))
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        policy.predict(Observation({'front': good.images['front'],
                                    'wrist': good.images['wrist'][..., :2].copy()},
                                   'go', good.state))
    with pytest.raises(ValueError, match='4 values'):
        policy.predict(Observation(good.images, 'go', np.zeros(5)))
    with pytest.raises(ValueError, match='str'):
        policy.predict(Observation(good.images, None, good.state))


def test_training_loss_trains(policy):
    cfg = tiny_pi0_config(4, 3, chunk_size=8, image_size=32, num_inference_steps=2)
    pol = Pi0Policy.from_config(cfg, stats=STATS, init_seed=1)
    obs = [make_obs(seed=i) for i in range(2)]
    target = np.random.default_rng(0).normal(size=(2, 8, 3))
    loss = pol.training_loss(obs, target, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss2 = pol.training_loss(obs, target, generator=torch.Generator().manual_seed(0))
    assert float(loss.detach()) == pytest.approx(float(loss2.detach()))
    opt = torch.optim.Adam(pol.module.parameters(), lr=5e-3)
    pol.module.train()
    gen = torch.Generator().manual_seed(1)
    for _ in range(8):
        step_loss = pol.training_loss(obs, target, generator=gen)
        opt.zero_grad()
        step_loss.backward()
        opt.step()
    with torch.no_grad():
        final = pol.training_loss(obs, target, generator=torch.Generator().manual_seed(0))
    assert float(final) < float(loss.detach())
    with pytest.raises(ValueError, match='action chunks'):
        pol.training_loss(obs, np.zeros((2, 7, 3)))


def test_key_maps_are_inverse(policy):
    for key in policy.module.state_dict():
        assert canonical_pi0_key(lerobot_pi0_key(key)) == key
    # openpi (no leading model.) and transformers-saved names
    assert canonical_pi0_key('paligemma_with_expert.paligemma.lm_head.weight') == \
        'model.vlm.language_model.embed_tokens.weight'
    assert canonical_pi0_key('state_proj.weight') == 'embed_action_time.state_proj.weight'
    assert canonical_pi0_key('paligemma_with_expert.paligemma.model.vision_tower.encoder.'
                             'layers.0.mlp.fc1.bias') == \
        'model.vlm.vision_tower.encoder.layers.0.mlp.fc1.bias'
    assert canonical_pi0_key('paligemma_with_expert.paligemma.model.language_model.model.'
                             'norm.weight') == 'model.vlm.language_model.norm.weight'


def test_save_layout_matches_lerobot(tmp_path):
    cfg = json.load(open(os.path.join(FIXTURE, 'config.json'), encoding='utf-8'))
    layout = json.load(open(os.path.join(FIXTURE, 'layout.json'), encoding='utf-8'))
    ref = write_layout_weights(str(tmp_path / 'ref'), num_inference_steps=2)
    pol = Pi0Policy.build(ref, tokenizer_path=_tok(tmp_path), stats=NormStats.identity(8, 7))
    pol.load_weights(ref)
    out = save_pi0_checkpoint(pol, str(tmp_path / 'saved'))
    with safe_open(os.path.join(out, 'model.safetensors'), 'pt') as f:
        assert f.metadata() == layout['metadata']
        assert sorted(f.keys()) == sorted(layout['tensors'])
        for key in f.keys():
            assert list(f.get_slice(key).get_shape()) == layout['tensors'][key]['shape']
    saved_cfg = json.load(open(os.path.join(out, 'config.json'), encoding='utf-8'))
    assert saved_cfg['type'] == 'pi0' and saved_cfg['input_features'] == cfg['input_features']
    for name in ('policy_preprocessor.json', 'policy_postprocessor.json',
                 'policy_preprocessor_step_5_normalizer_processor.safetensors',
                 'policy_postprocessor_step_0_unnormalizer_processor.safetensors',
                 'tokenizer/tokenizer.json'):
        assert os.path.isfile(os.path.join(out, name)), name
    a = read_pi0_state_dict(ref)
    b = read_pi0_state_dict(out)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    obs = Observation({'base': np.zeros((224, 224, 3), np.uint8)}, 'go', np.zeros(8))
    again = Pi0Policy.build(out)
    again.load_weights(out)
    np.testing.assert_array_equal(again.predict(obs).actions, pol.predict(obs).actions)


def _tok(tmp_path):
    from retain_ros.policies.pi0 import save_byte_tokenizer
    return save_byte_tokenizer(str(tmp_path / 'tok'))


def test_round_trip_own_loader_and_transformers(tmp_path, policy):
    out = save_pi0_checkpoint(policy, str(tmp_path / 'ck'))
    obs = make_obs(('front', 'wrist'), seed=4)
    expected = policy.predict(obs).actions
    loaded = Pi0Policy.build(out)
    assert loaded.stats.source.endswith('normalizer_processor.safetensors')
    np.testing.assert_array_equal(loaded.stats.action_std, STATS.action_std)
    loaded.load_weights(out)
    np.testing.assert_array_equal(loaded.predict(obs).actions, expected)
    # transformers' own pi0 conversion reads the LeRobot file with 0 missing / unexpected keys
    from transformers import PI0ForConditionalGeneration
    hf_dir = tmp_path / 'hf'
    hf_dir.mkdir()
    policy.spec.hf_config.save_pretrained(str(hf_dir))
    os.symlink(os.path.join(out, 'model.safetensors'), str(hf_dir / 'model.safetensors'))
    model, info = PI0ForConditionalGeneration.from_pretrained(
        str(hf_dir), output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys']
    assert not info['mismatched_keys']
    hf_policy = Pi0Policy(policy.spec, model.eval(), policy.processor)
    np.testing.assert_allclose(hf_policy.predict(obs).actions, expected, atol=1e-5)
    # a transformers-dialect config.json builds the same model
    cfg = json.load(open(hf_dir / 'config.json', encoding='utf-8'))
    cfg.update(camera_names=['front', 'wrist'], state_dim=4, action_dim=3)
    (hf_dir / 'config.json').write_text(json.dumps(cfg))
    hf_built = Pi0Policy.build(str(hf_dir), tokenizer_path=os.path.join(out, 'tokenizer'),
                               stats_dir=out)
    hf_built.load_weights(out)
    assert hf_built.spec.image_pad_order == 'openpi'    # not a LeRobot config: pads are -1
    np.testing.assert_allclose(hf_built.predict(obs).actions, expected, atol=1e-5)


def test_save_from_module_and_dict_stats(tmp_path, policy):
    out = save_pi0_checkpoint(policy.module, str(tmp_path / 'm'), spec=policy.spec,
                              stats={'observation.state': {'mean': [0] * 4, 'std': [1] * 4},
                                     'action': {'mean': [0] * 3, 'std': [1] * 3}})
    assert os.path.isfile(os.path.join(out, 'tokenizer', 'tokenizer.json'))
    with pytest.raises(ValueError, match='spec'):
        save_pi0_checkpoint(policy.module, str(tmp_path / 'x'), stats=STATS)


def test_load_weights_mismatch(tmp_path, policy):
    other = tiny_pi0_config(4, 3, chunk_size=8, camera_names=('front', 'wrist'), image_size=32,
                            max_dim=6)
    pol = Pi0Policy.from_config(other, stats=STATS)
    out = save_pi0_checkpoint(policy, str(tmp_path / 'ck'))
    with pytest.raises(ValueError, match='shape mismatch'):
        pol.load_weights(out)


def test_build_without_tokenizer_or_stats(tmp_path, policy):
    out = save_pi0_checkpoint(policy, str(tmp_path / 'ck'))
    import shutil
    shutil.rmtree(os.path.join(out, 'tokenizer'))
    with pytest.raises(FileNotFoundError, match='tokenizer_path'):
        Pi0Policy.build(out)
    for name in os.listdir(out):
        if 'processor' in name:
            os.remove(os.path.join(out, name))
    with pytest.raises(FileNotFoundError, match='normalization statistics'):
        Pi0Policy.build(out, tokenizer_path=_tok(tmp_path))


def test_bfloat16_predict(policy, tmp_path):
    out = save_pi0_checkpoint(policy, str(tmp_path / 'ck'))
    pol = Pi0Policy.build(out, dtype='bfloat16')
    pol.load_weights(out)
    assert next(pol.module.parameters()).dtype == torch.bfloat16
    chunk = pol.predict(make_obs(('front', 'wrist')))
    assert chunk.actions.shape == (8, 3) and np.all(np.isfinite(chunk.actions))
