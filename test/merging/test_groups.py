"""Parameter groups (:mod:`retain_ros.merging.groups`): presets per family, one group otherwise."""
from __future__ import annotations

import logging

import pytest
from safetensors.torch import save_file
import torch

from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.groups import assign_groups
from retain_ros.merging.groups import GroupRules
from helpers.tiny_checkpoints import LEROBOT_PI0
from helpers.tiny_checkpoints import smolvla_keys


def test_pi0_groups_put_tied_lm_head_in_language():
    src = open_checkpoint(LEROBOT_PI0)
    groups = assign_groups(src.keys(), src.family)
    assert groups['model.vlm.language_model.embed_tokens.weight'] == 'language'
    assert groups['model.vlm.multi_modal_projector.linear.weight'] == 'vision'
    assert groups['model.vlm.vision_tower.embeddings.patch_embedding.weight'] == 'vision'
    assert groups['model.dit.layers.0.mlp.up_proj.weight'] == 'action'
    assert groups['embed_action_time.state_proj.weight'] == 'action'
    assert groups['action_out_proj.bias'] == 'action'
    assert 'other' not in groups.values()


def test_smolvla_and_openvla_presets_detected_from_keys(tmp_path):
    keys = smolvla_keys()
    groups = assign_groups(keys)
    assert groups['model.vlm_with_expert.vlm.model.connector.modality_projection.proj.weight'] \
        == 'vision'
    assert {groups[k] for k in keys if '.text_model.' in k} == {'language'}
    assert {groups[k] for k in keys if '.vision_model.' in k} == {'vision'}
    assert {groups[k] for k in keys if '.lm_expert.' in k} == {'action'}
    assert groups['model.action_time_mlp_in.weight'] == 'action'
    assert 'other' not in groups.values()
    path = tmp_path / 'smol.safetensors'
    save_file({k: torch.zeros(shape) for k, (_, shape) in keys.items() if 'lm_expert' in k},
              str(path))
    assert open_checkpoint(str(path)).family == 'smolvla'
    openvla = ['vision_backbone.featurizer.blocks.0.attn.qkv.weight',
               'vision_backbone.fused_featurizer.blocks.0.mlp.fc1.weight',
               'projector.fc1.weight', 'language_model.model.layers.0.mlp.up_proj.weight',
               'language_model.lm_head.weight']
    assert [assign_groups(openvla)[k] for k in openvla] == \
        ['vision', 'vision', 'vision', 'language', 'language']


def test_pi05_keys_detected_and_grouped():
    keys = ['paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight',
            'paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight',
            'time_mlp_in.weight', 'action_out_proj.weight']
    from retain_ros.merging.dialects import canonical_map
    from retain_ros.merging.dialects import detect_family
    assert detect_family(keys) == 'pi05'
    canon = canonical_map(keys, 'pi05', 'openpi')
    groups = assign_groups(canon.values(), 'pi05')
    assert groups[canon['time_mlp_in.weight']] == 'action'
    assert groups[canon[keys[0]]] == 'action'
    assert groups[canon[keys[1]]] == 'language'


def test_unknown_family_is_one_group_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        groups = assign_groups(['encoder.w', 'decoder.w'])
    assert set(groups.values()) == {'other'}
    assert 'ONE group' in caplog.text
    with pytest.raises(ValueError, match='unknown group'):
        GroupRules([('x', 'nope')])
