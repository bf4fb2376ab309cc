"""A transformers-native π0 directory (``save_pretrained`` of the model and of PI0Processor) runs.

The directory is written by transformers itself: ``PI0ForConditionalGeneration.save_pretrained``
(config.json with ``"model_type": "pi0"``, its own key names) and ``PI0Processor.save_pretrained``
(``processor_config.json`` with ``state_mean/std``, ``actions_mean/std``; tokenizer files at the
checkpoint root). PI0's own image processor needs torchvision, which this project never installs,
so the processor is given transformers' SigLIP image processor (only its config is saved).
"""
import logging

import numpy as np
import pytest
import torch

from retain_ros.policies.base import Observation
from retain_ros.policies.loader import detect_family
from retain_ros.policies.loader import load_policy
from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer


def _tiny_config():
    from transformers import PI0Config

    gemma = dict(model_type='gemma', hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                 hidden_activation='gelu_pytorch_tanh', vocab_size=260)
    vision = dict(model_type='siglip_vision_model', hidden_size=32, intermediate_size=64,
                  num_hidden_layers=1, num_attention_heads=2, patch_size=8, image_size=32,
                  vision_use_head=False)
    vlm = dict(model_type='paligemma', text_config=gemma, vision_config=vision,
               projection_dim=32, image_token_id=260)
    return PI0Config(vlm_config=vlm, dit_config=dict(gemma), chunk_size=5, max_state_dim=8,
                     max_action_dim=8, num_inference_steps=2)


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    from transformers import PI0ForConditionalGeneration
    from transformers import PI0Processor
    from transformers import PreTrainedTokenizerFast
    from transformers import SiglipImageProcessor

    root = tmp_path_factory.mktemp('hf_pi0')
    torch.manual_seed(0)
    model = PI0ForConditionalGeneration(_tiny_config())
    model.save_pretrained(str(root))
    tok = PreTrainedTokenizerFast.from_pretrained(save_byte_tokenizer(str(root / '_tok')))
    images = SiglipImageProcessor(size={'height': 32, 'width': 32})
    images.image_seq_length = 16
    PI0Processor(image_processor=images, tokenizer=tok, state_mean=[0.5, -0.5, 1.0],
                 state_std=[2.0, 1.0, 0.5], actions_mean=[1.0, 2.0],
                 actions_std=[0.5, 0.25]).save_pretrained(str(root))
    return str(root), model


def test_transformers_native_directory_runs(hf_dir, caplog):
    path, model = hf_dir
    assert detect_family(path) == 'pi0'
    caplog.set_level(logging.INFO)
    policy = load_policy(path, device='cpu', warmup=False)
    assert 'at the checkpoint root' in caplog.text           # the tokenizer lookup is logged
    assert policy.stats.source.endswith('processor_config.json')
    assert (policy.state_dim, policy.action_dim) == (3, 2)  # widths of the processor's stats
    assert policy.spec.image_pad_order == 'openpi'
    for name, tensor in model.state_dict().items():
        assert torch.equal(policy.module.state_dict()[name], tensor), name
    obs = Observation({'base': np.full((24, 40, 3), 120, np.uint8)}, 'pick', np.ones(3))
    chunk = policy.predict(obs, noise=np.zeros((5, 8)))
    assert chunk.actions.shape == (5, 2) and np.all(np.isfinite(chunk.actions))
    # the actions are unnormalized with the processor's statistics (x * std + mean)
    model_space = policy.normalize_actions(chunk.actions)
    np.testing.assert_allclose(model_space[:, :2].numpy() * [0.5, 0.25] + [1.0, 2.0],
                               chunk.actions, rtol=1e-5, atol=1e-5)


def test_tokenizer_path_wins_and_missing_is_explained(hf_dir, tmp_path, caplog):
    path, _ = hf_dir
    caplog.set_level(logging.INFO)
    load_policy(path, device='cpu', warmup=False, tokenizer_path=path + '/_tok')
    assert '(tokenizer_path)' in caplog.text
    with pytest.raises(FileNotFoundError, match='tokenizer_path'):
        load_policy(path, device='cpu', warmup=False, tokenizer_path=str(tmp_path / 'none'))
