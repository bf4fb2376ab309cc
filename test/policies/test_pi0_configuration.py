"""π0 config translation, byte tokenizer, processor maths and normalization-stat loaders."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from retain_ros.policies.base import Observation
from retain_ros.policies.norm_stats_files import load_norm_stats
from retain_ros.policies.normalize import as_norm_stats
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.pi0.checkpoint_config_pi0 import load_pi0_config
from retain_ros.policies.pi0.checkpoint_config_pi0 import widths_from_weights
from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config
from retain_ros.policies.pi0.processor_pi0 import Pi0Processor
from retain_ros.policies.pi0.processor_pi0 import resize_image
from retain_ros.policies.pi0.tokenizer_pi0 import BYTE_VOCAB_SIZE
from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer

from helpers.pi0_layout import DATA  # noqa: E402
from helpers.pi0_layout import write_layout_weights  # noqa: E402


def test_tiny_config_translation():
    cfg = tiny_pi0_config(5, 3, chunk_size=7, camera_names=('front', 'wrist'), image_size=32,
                          num_inference_steps=3, control_period=0.05)
    json.dumps(cfg)
    spec = pi0_config_from_dict(cfg)
    hf = spec.hf_config
    assert spec.camera_names == ['front', 'wrist']
    assert (spec.state_dim, spec.action_dim, spec.chunk_size) == (5, 3, 7)
    assert spec.max_state_dim == spec.max_action_dim == 5
    assert spec.control_period == 0.05
    assert spec.image_size == (32, 32) and spec.image_seq_length == 16
    assert hf.vlm_config.text_config.vocab_size == BYTE_VOCAB_SIZE
    assert hf.vlm_config.image_token_id == BYTE_VOCAB_SIZE
    assert hf.dit_config.hidden_size == 64 and hf.num_inference_steps == 3
    assert hf.vlm_config.vision_config.patch_size == 8


def test_real_variants_and_default_period():
    cfg = {'type': 'pi0', 'paligemma_variant': 'gemma_2b', 'action_expert_variant': 'gemma_300m',
           'input_features': {'observation.images.top': {'type': 'VISUAL', 'shape': [3, 224, 224]},
                              'observation.state': {'type': 'STATE', 'shape': [14]}},
           'output_features': {'action': {'type': 'ACTION', 'shape': [14]}}}
    spec = pi0_config_from_dict(cfg)
    hf = spec.hf_config
    assert hf.vlm_config.text_config.hidden_size == 2048
    assert hf.vlm_config.text_config.intermediate_size == 16384
    assert hf.dit_config.hidden_size == 1024 and hf.dit_config.head_dim == 256
    assert hf.vlm_config.vision_config.hidden_size == 1152
    assert hf.vlm_config.image_token_id == 257152
    assert spec.image_seq_length == 256
    assert spec.control_period == 0.1
    assert spec.camera_names == ['top']


def test_transformers_dialect_round_trip():
    spec = pi0_config_from_dict(tiny_pi0_config(4, 4))
    hf_dict = spec.hf_config.to_dict()
    hf_dict.update(camera_names=['a', 'b'], state_dim=3, action_dim=2, control_period=0.2)
    spec2 = pi0_config_from_dict(hf_dict)
    assert spec2.camera_names == ['a', 'b'] and spec2.state_dim == 3
    assert spec2.control_period == 0.2
    # its LeRobot-style policy config (explicit widths) translates back to the same model
    spec3 = pi0_config_from_dict(spec2.policy_config)
    assert spec3.hf_config.vlm_config.text_config.hidden_size == 64
    assert spec3.hf_config.vlm_config.vision_config.patch_size == 8
    assert spec3.camera_names == ['a', 'b']


def test_bad_configs():
    with pytest.raises(ValueError, match='neither'):
        pi0_config_from_dict({'type': 'act'})
    cfg = tiny_pi0_config(4, 4)
    cfg['paligemma_variant'] = 'gemma_7b'
    with pytest.raises(ValueError, match='gemma_7b'):
        pi0_config_from_dict(cfg)
    cfg = tiny_pi0_config(4, 4)
    cfg['input_features'].pop('observation.images.base')
    with pytest.raises(ValueError, match='observation.images'):
        pi0_config_from_dict(cfg)
    cfg = tiny_pi0_config(4, 4)
    cfg['max_state_dim'] = 2
    with pytest.raises(ValueError, match='max_state_dim'):
        pi0_config_from_dict(cfg)
    with pytest.raises(FileNotFoundError):
        load_pi0_config('/nonexistent/dir')


def test_fixture_widths_from_weights(tmp_path):
    ck = write_layout_weights(str(tmp_path / 'lerobot'))
    widths = widths_from_weights(os.path.join(ck, 'model.safetensors'))
    assert widths['text'] == dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    assert widths['vision']['patch_size'] == 14 and widths['image_resolution'] == 224
    assert widths['vocab_size'] == 1024
    spec = load_pi0_config(ck)   # config says gemma_2b; the weights are tiny
    hf = spec.hf_config
    assert hf.vlm_config.text_config.hidden_size == 64
    assert hf.vlm_config.image_token_id == 1024
    assert (spec.state_dim, spec.action_dim, spec.chunk_size) == (8, 7, 50)


def test_byte_tokenizer(tmp_path):
    tok = load_tokenizer(save_byte_tokenizer(str(tmp_path / 'tok')))
    text = 'pick the red block ü\n'
    ids = tok.encode(text)
    assert ids == [4 + b for b in text.encode('utf-8')]
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert max(ids) < BYTE_VOCAB_SIZE
    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / 'tok'))
    assert fast('ab', add_special_tokens=False).input_ids == [4 + 97, 4 + 98]
    assert fast.bos_token_id == 2 and fast.pad_token_id == 0
    with pytest.raises(FileNotFoundError, match='tokenizer_path'):
        load_tokenizer(str(tmp_path / 'missing'))


@pytest.fixture()
def processor(tmp_path):
    spec = pi0_config_from_dict(tiny_pi0_config(3, 2, camera_names=('a', 'b'), image_size=32,
                                                tokenizer_max_length=8))
    tok = load_tokenizer(save_byte_tokenizer(str(tmp_path / 'tok')))
    stats = NormStats(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 4.0]),
                      np.array([10.0, -10.0]), np.array([0.5, 2.0]), source='test')
    return Pi0Processor(spec, tok, stats)


def obs(images, instruction='go', state=(1.0, 2.0, 3.0)):
    return Observation(images=images, instruction=instruction, state=np.asarray(state))


def test_processor_prompt_layout(processor):
    img = np.zeros((32, 32, 3), np.uint8)
    inputs = processor([obs({'a': img, 'b': img}, 'hi'),
                        obs({'a': img, 'b': img}, 'a much longer instruction')])
    n_img = 2 * 16
    ids, mask = inputs['input_ids'], inputs['attention_mask']
    assert ids.shape == mask.shape == (2, n_img + 8)
    assert (ids[:, :n_img] == processor.spec.image_token_id).all()
    # bos + 'hi' + '\n', then right padding
    assert ids[0, n_img:].tolist() == [2, 4 + ord('h'), 4 + ord('i'), 4 + 10, 0, 0, 0, 0]
    assert mask[0].tolist() == [1] * (n_img + 4) + [0] * 4
    assert mask[1].sum() == n_img + 8       # truncated to tokenizer_max_length
    assert ids[1, n_img] == 2
    assert inputs['pixel_attention_mask'].tolist() == [[True, True]] * 2


def test_processor_images_state_actions(processor):
    a = np.full((64, 64, 3), 255, np.uint8)
    b = np.zeros((16, 32, 3), np.uint8)     # other aspect: 16x32 kept, padded top and bottom
    inputs = processor([obs({'a': a, 'b': b, 'extra': a})])
    pix = inputs['pixel_values']
    assert pix.shape == (1, 2, 3, 32, 32)
    assert np.allclose(pix[0, 0].numpy(), 1.0)
    # LeRobot 0.4.4 pads with -1 before x * 2 - 1: pads reach the tower as -3
    assert np.allclose(pix[0, 1, :, 8:24].numpy(), -1.0)
    assert np.allclose(pix[0, 1, :, :8].numpy(), -3.0) and np.allclose(pix[0, 1, :, 24:], -3.0)
    state = inputs['state'].numpy()
    assert state.shape == (1, 3)
    np.testing.assert_allclose(state[0], [0.0, 0.0, 0.0], atol=1e-6)
    chunk = np.random.default_rng(0).normal(size=(1, 10, 2))
    norm = processor.normalize_actions(chunk)
    assert norm.shape == (1, 10, 3) and float(norm[..., 2].abs().max()) == 0.0
    np.testing.assert_allclose(norm[0, :, 0].numpy(), (chunk[0, :, 0] - 10.0) / 0.5, rtol=1e-5)
    back = processor.unnormalize_actions(norm)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, chunk, rtol=1e-5, atol=1e-5)
    resized = resize_image(np.zeros((10, 20, 3), np.uint8) + 7, 32, 32)
    assert resized.shape == (32, 32, 3) and resized[0, 0, 0] == 7 and resized[-1, 0, 0] == 0


def test_processor_bad_inputs(processor):
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="missing camera.*'b'"):
        processor([obs({'a': img})])
    with pytest.raises(ValueError, match='uint8'):
        processor([obs({'a': img, 'b': img.astype(np.float32)})])
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        processor([obs({'a': img, 'b': np.zeros((32, 32), np.uint8)})])
    with pytest.raises(ValueError, match='3 values'):
        processor([obs({'a': img, 'b': img}, state=(1.0, 2.0))])
    with pytest.raises(ValueError, match='non-finite'):
        processor([obs({'a': img, 'b': img}, state=(1.0, np.nan, 2.0))])
    with pytest.raises(ValueError, match='action chunks'):
        processor.normalize_actions(np.zeros((1, 3, 2)))


def test_lerobot_stats_loader(tmp_path):
    stats = load_norm_stats(os.path.join(DATA, 'lerobot_smolvla_tiny_processor'), 8, 7)
    assert 'policy_preprocessor_step_5_normalizer_processor.safetensors' in stats.source
    assert stats.source.endswith('policy_postprocessor_step_0_unnormalizer_processor.safetensors')
    np.testing.assert_array_equal(stats.state_std, np.ones(8))
    assert stats.action_mean.shape == (7,)
    d = tmp_path / 'only_post'
    d.mkdir()
    save_file({'observation.state.mean': np.zeros(2, np.float32),
               'observation.state.std': np.ones(2, np.float32),
               'action.mean': np.full(2, 3.0, np.float32),
               'action.std': np.ones(2, np.float32)},
              str(d / 'policy_preprocessor_step_3_normalizer_processor.safetensors'))
    assert load_norm_stats(str(d)).action_mean.tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match='width 2, the model expects 3'):
        load_norm_stats(str(d), 3, 2)


def test_openpi_stats_loader(tmp_path):
    asset = tmp_path / 'ck' / 'assets' / 'my_robot'
    asset.mkdir(parents=True)
    data = {'norm_stats': {'state': {'mean': [1, 2, 0, 0], 'std': [1, 1, 1, 1],
                                     'q01': [0] * 4, 'q99': [1] * 4},
                           'actions': {'mean': [5, 6, 0, 0], 'std': [2, 2, 1, 1]}}}
    (asset / 'norm_stats.json').write_text(json.dumps(data))
    stats = load_norm_stats(str(tmp_path / 'ck'), 2, 2)   # openpi pads: cut to the model sizes
    assert stats.source == str(asset / 'norm_stats.json')
    assert stats.state_mean.tolist() == [1, 2] and stats.action_std.tolist() == [2, 2]
    (asset / 'norm_stats.json').write_text(json.dumps({'norm_stats': {'state': {}}}))
    with pytest.raises(ValueError, match='openpi'):
        load_norm_stats(str(tmp_path / 'ck'))


def test_missing_stats_and_coercion(tmp_path):
    with pytest.raises(FileNotFoundError, match='normalization statistics'):
        load_norm_stats(str(tmp_path))
    s = as_norm_stats({'observation.state': {'mean': [0, 1], 'std': [1, 1]},
                       'action': {'mean': [2], 'std': [3]}}, 2, 1)
    assert s.action_std.tolist() == [3]
    assert as_norm_stats(None, 2, 1).source == 'identity'
    with pytest.raises(ValueError):
        as_norm_stats({'foo': 1}, 2, 1)
    with pytest.raises(ValueError, match='not finite'):
        as_norm_stats(NormStats(np.zeros(1), np.full(1, np.inf), np.zeros(1), np.ones(1)), 1, 1)
