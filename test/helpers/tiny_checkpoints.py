"""Helpers of the merging tests: tiny pi0 models written in each on-disk dialect, LoRA adapters.

The dialect writers here are written independently of retain_ros.merging.dialects (from the
LeRobot fixture's names and transformers' save_pretrained), so the tests check the library's
key normalization against the real formats rather than against itself.
"""
from __future__ import annotations

import json
import os
import shutil

from safetensors.torch import save_file
import torch

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                    'merging')
LEROBOT_PI0 = os.path.join(DATA, 'lerobot_pi0_tiny')
SMOLVLA_KEYS = os.path.join(DATA, 'lerobot_smolvla_tiny_keys.json')
_EMBED = 'model.vlm.language_model.embed_tokens.weight'
_LEROBOT_LM_HEAD = 'model.paligemma_with_expert.paligemma.lm_head.weight'


def tiny_pi0_config():
    """Return a transformers PI0Config matching the LeRobot fixture (``LEROBOT_PI0``)."""
    from transformers import PI0Config
    gemma = dict(model_type='gemma', hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                 hidden_activation='gelu_pytorch_tanh', vocab_size=1024)
    vision = dict(model_type='siglip_vision_model', hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=224,
                  vision_use_head=False)
    return PI0Config(vlm_config=dict(model_type='paligemma', text_config=gemma,
                                     vision_config=vision, projection_dim=64,
                                     image_token_id=1024),
                     dit_config=gemma)


def tiny_pi0(seed=0, dtype=torch.float32):
    """Build a tiny transformers PI0ForConditionalGeneration with seeded random weights."""
    from transformers import PI0ForConditionalGeneration
    torch.manual_seed(seed)
    model = PI0ForConditionalGeneration(tiny_pi0_config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.to(dtype)


def canonical_to_lerobot(key):
    """Independent inverse of the LeRobot dialect (names as in the LeRobot 0.4.4 fixture)."""
    pwe = 'model.paligemma_with_expert.'
    if key == _EMBED:
        return _LEROBOT_LM_HEAD
    if key == 'model.dit.embed_tokens.weight':
        return pwe + 'gemma_expert.lm_head.weight'
    if key.startswith('model.vlm.vision_tower.'):
        return pwe + 'paligemma.model.vision_tower.vision_model.' + key[23:]
    if key.startswith('model.vlm.'):
        return pwe + 'paligemma.model.' + key[10:]
    if key.startswith('model.dit.'):
        return pwe + 'gemma_expert.model.' + key[10:]
    if key.startswith('embed_action_time.'):
        return 'model.' + key[len('embed_action_time.'):]
    return 'model.' + key


def save_lerobot(state, out_dir, openpi=False):
    """Write ``state`` (canonical names) like LeRobot (or openpi: no leading ``model.``)."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for k, v in state.items():
        name = canonical_to_lerobot(k)
        if openpi:
            name = name[len('model.'):]
        tensors[name] = v.detach().contiguous().clone()
    lm_head = _LEROBOT_LM_HEAD[len('model.'):] if openpi else _LEROBOT_LM_HEAD
    embed = lm_head.replace('paligemma.lm_head', 'paligemma.model.language_model.embed_tokens')
    save_file(tensors, os.path.join(out_dir, 'model.safetensors'), metadata={embed: lm_head})
    shutil.copyfile(os.path.join(LEROBOT_PI0, 'config.json'), os.path.join(out_dir, 'config.json'))
    with open(os.path.join(out_dir, 'policy_preprocessor.json'), 'w') as fh:
        json.dump({'name': 'policy_preprocessor', 'steps': []}, fh)
    return out_dir


def save_transformers(model, out_dir):
    """``PI0ForConditionalGeneration.save_pretrained`` (transformers dialect)."""
    model.save_pretrained(out_dir)
    return out_dir


def smolvla_keys():
    with open(SMOLVLA_KEYS) as fh:
        return json.load(fh)


def write_lora(adapter_dir, base_state, targets, rank=2, alpha=4.0, base_path=None, seed=0):
    """Write a PEFT LoRA adapter for ``targets`` of ``base_state``; return the deltas it adds."""
    gen = torch.Generator().manual_seed(seed)
    os.makedirs(adapter_dir, exist_ok=True)
    tensors, deltas = {}, {}
    for key in targets:
        out_f, in_f = base_state[key].shape
        a = torch.randn(rank, in_f, generator=gen)
        b = torch.randn(out_f, rank, generator=gen)
        module = key[:-len('.weight')]
        tensors[f'base_model.model.{module}.lora_A.weight'] = a
        tensors[f'base_model.model.{module}.lora_B.weight'] = b
        deltas[key] = (alpha / rank) * (b.double() @ a.double())
    save_file(tensors, os.path.join(adapter_dir, 'adapter_model.safetensors'))
    with open(os.path.join(adapter_dir, 'adapter_config.json'), 'w') as fh:
        json.dump({'peft_type': 'LORA', 'r': rank, 'lora_alpha': alpha,
                   'base_model_name_or_path': base_path}, fh)
    return deltas
