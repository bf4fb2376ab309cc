"""Checkpoint sources: layouts, pi0 dialects, LoRA, refused and broken files."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors.torch import save_file
import torch

from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.errors import CheckpointError
from helpers.tiny_checkpoints import LEROBOT_PI0
from helpers.tiny_checkpoints import save_lerobot
from helpers.tiny_checkpoints import save_transformers
from helpers.tiny_checkpoints import tiny_pi0
from helpers.tiny_checkpoints import write_lora


@pytest.fixture(scope='module')
def pi0_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp('pi0')
    model = tiny_pi0(seed=1)
    state = model.state_dict()
    return {
        'state': state,
        'lerobot': save_lerobot(state, str(root / 'lerobot')),
        'openpi': save_lerobot(state, str(root / 'openpi'), openpi=True),
        'transformers': save_transformers(model, str(root / 'transformers')),
    }


def test_lerobot_fixture_maps_to_runtime_names():
    src = open_checkpoint(LEROBOT_PI0)
    assert (src.family, src.dialect) == ('pi0', 'lerobot')
    assert src.keys() == sorted(tiny_pi0().state_dict().keys())
    assert src.file_key('model.vlm.language_model.embed_tokens.weight') == \
        'model.paligemma_with_expert.paligemma.lm_head.weight'
    assert src.metadata['model.paligemma_with_expert.paligemma.model.language_model.'
                        'embed_tokens.weight'] == \
        'model.paligemma_with_expert.paligemma.lm_head.weight'
    assert [os.path.basename(p) for p in src.aux_files()] == ['config.json']
    assert src.config['type'] == 'pi0'


@pytest.mark.parametrize('dialect', ['lerobot', 'openpi', 'transformers'])
def test_every_pi0_dialect_gives_the_runtime_state_dict(pi0_dirs, dialect):
    src = open_checkpoint(pi0_dirs[dialect])
    assert src.family == 'pi0'
    assert src.dialect == dialect
    state = pi0_dirs['state']
    assert src.keys() == sorted(state)
    for k, v in state.items():
        assert torch.equal(src.get(k), v), k


def test_transformers_save_stores_embed_tokens_and_expert_lm_head(pi0_dirs):
    src = open_checkpoint(pi0_dirs['transformers'])
    assert src.file_key('model.vlm.language_model.embed_tokens.weight') == \
        'paligemma_with_expert.paligemma.model.language_model.model.embed_tokens.weight'
    assert src.file_key('model.dit.embed_tokens.weight') == \
        'paligemma_with_expert.gemma_expert.lm_head.weight'


def test_sharded_checkpoint_dir_and_index(tmp_path, pi0_dirs):
    state = pi0_dirs['state']
    keys = sorted(state)
    shards = {'model-00001-of-00002.safetensors': keys[:40],
              'model-00002-of-00002.safetensors': keys[40:]}
    weight_map = {}
    for name, part in shards.items():
        save_file({k: state[k].contiguous() for k in part}, str(tmp_path / name))
        weight_map.update({k: name for k in part})
    with open(tmp_path / 'model.safetensors.index.json', 'w') as fh:
        json.dump({'metadata': {}, 'weight_map': weight_map}, fh)
    for path in (tmp_path, tmp_path / 'model.safetensors.index.json'):
        src = open_checkpoint(str(path))
        assert src.keys() == keys
        assert src.dialect == 'canonical'
        assert torch.equal(src.get(keys[-1]), state[keys[-1]])
        assert len(src.layout()) == 2
    os.remove(tmp_path / 'model-00002-of-00002.safetensors')
    with pytest.raises(CheckpointError, match='shard model-00002-of-00002.safetensors is missing'):
        open_checkpoint(str(tmp_path))


@pytest.mark.parametrize('suffix', ['.bin', '.pt', '.ckpt'])
def test_pickle_refused(tmp_path, suffix):
    path = tmp_path / ('pytorch_model' + suffix)
    path.write_bytes(b'not even read')
    with pytest.raises(CheckpointError, match='executes'):
        open_checkpoint(str(path))
    with pytest.raises(CheckpointError, match='pickle'):
        open_checkpoint(str(tmp_path))


def test_truncated_and_corrupted_files_named(tmp_path):
    good = tmp_path / 'good.safetensors'
    save_file({'a': torch.ones(8, 8), 'b': torch.ones(4)}, str(good))
    raw = good.read_bytes()
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match=r'truncated.safetensors: truncated file: tensor'):
        open_checkpoint(str(truncated))
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(raw[:8] + b'{not json' + raw[17:])
    with pytest.raises(CheckpointError, match='garbage.safetensors: corrupted safetensors header'):
        open_checkpoint(str(garbage))
    tiny = tmp_path / 'tiny.safetensors'
    tiny.write_bytes(b'\x01\x02')
    with pytest.raises(CheckpointError, match='tiny.safetensors: truncated'):
        open_checkpoint(str(tiny))
    huge = tmp_path / 'huge.safetensors'
    huge.write_bytes((10 ** 9).to_bytes(8, 'little') + b'{}')
    with pytest.raises(CheckpointError, match='header claims'):
        open_checkpoint(str(huge))
    with pytest.raises(CheckpointError, match='no such checkpoint'):
        open_checkpoint(str(tmp_path / 'missing'))


def test_bf16_and_int_tensors_read_back_exactly(tmp_path):
    t = {'w': torch.randn(3, 5).to(torch.bfloat16), 'i': torch.arange(7), 'b': torch.ones(2) > 0}
    save_file(t, str(tmp_path / 'x.safetensors'))
    src = open_checkpoint(str(tmp_path / 'x.safetensors'))
    assert src.family == 'unknown' and src.dialect == 'plain'
    for k, v in t.items():
        assert src.get(k).dtype == v.dtype and torch.equal(src.get(k), v)
    assert len(src.digest()) == 64


def test_lora_adapter_is_base_plus_delta(tmp_path, pi0_dirs):
    state = pi0_dirs['state']
    targets = ['model.vlm.language_model.layers.0.self_attn.q_proj.weight',
               'model.dit.layers.1.mlp.up_proj.weight']
    deltas = write_lora(str(tmp_path / 'lora'), state, targets,
                        base_path=pi0_dirs['transformers'])
    src = open_checkpoint(str(tmp_path / 'lora'))
    assert src.is_lora and src.keys() == sorted(state)
    for k in targets:
        want = state[k].double() + deltas[k]
        assert torch.allclose(src.get(k).double(), want, atol=1e-5)
    untouched = 'model.vlm.language_model.layers.1.self_attn.q_proj.weight'
    assert torch.equal(src.get(untouched), state[untouched])
    assert src.digest() != src.base.digest()


def test_lora_on_wrong_base_refused(tmp_path, pi0_dirs):
    state = dict(pi0_dirs['state'])
    key = 'model.vlm.language_model.layers.0.self_attn.q_proj.weight'
    state[key] = torch.zeros(32, 64)  # trained on a base with another width
    write_lora(str(tmp_path / 'lora'), state, [key])
    with pytest.raises(CheckpointError, match='does not match this base'):
        open_checkpoint(str(tmp_path / 'lora'), base=pi0_dirs['lerobot'])
    bad = tmp_path / 'lora2'
    bad.mkdir()
    save_file({'base_model.model.not.a.module.lora_A.weight': torch.zeros(2, 4),
               'base_model.model.not.a.module.lora_B.weight': torch.zeros(4, 2)},
              str(bad / 'adapter_model.safetensors'))
    (bad / 'adapter_config.json').write_text(json.dumps({'r': 2, 'lora_alpha': 2}))
    with pytest.raises(CheckpointError, match="targets 'not.a.module.weight'"):
        open_checkpoint(str(bad), base=pi0_dirs['lerobot'])
    with pytest.raises(CheckpointError, match='pass the base'):
        open_checkpoint(str(bad))


def test_aux_files_skip_weights(tmp_path, pi0_dirs):
    d = tmp_path / 'ck'
    shutil.copytree(pi0_dirs['lerobot'], d)
    (d / 'tokenizer').mkdir()
    (d / 'tokenizer' / 'tokenizer.json').write_text('{}')
    src = open_checkpoint(str(d))
    rel = sorted(os.path.relpath(p, str(d)) for p in src.aux_files())
    assert rel == ['config.json', 'policy_preprocessor.json', 'tokenizer/tokenizer.json']


def test_lora_finetune_in_disk_mode_is_read_once_per_tensor(tmp_path, pi0_dirs, monkeypatch):
    """Disk mode with a LoRA finetune: the same weights as device mode, each LoRA tensor
    materialized once per merge even when it would span several chunks."""
    from retain_ros.merging import live_inputs
    from retain_ros.merging.lora_source import LoraSource
    from retain_ros.merging.live import LiveMerger
    from retain_ros.merging.spec import MergeSpec

    state = pi0_dirs['state']
    targets = ['model.vlm.language_model.layers.0.self_attn.q_proj.weight',
               'model.dit.layers.1.mlp.up_proj.weight']
    write_lora(str(tmp_path / 'lora'), state, targets, base_path=pi0_dirs['transformers'])
    want = tiny_pi0(seed=5)
    LiveMerger(want, pi0_dirs['lerobot'], [str(tmp_path / 'lora')], MergeSpec(alpha=0.7),
               keep_sources='device')
    monkeypatch.setattr(live_inputs, 'CHUNK_ELEMS', 100)   # the LoRA targets span several chunks
    calls = []
    original = LoraSource.read
    monkeypatch.setattr(LoraSource, 'read',
                        lambda self, key, out=None: calls.append(key) or original(self, key, out))
    model = tiny_pi0(seed=5)
    LiveMerger(model, pi0_dirs['lerobot'], [str(tmp_path / 'lora')], MergeSpec(alpha=0.7),
               keep_sources='disk')
    got, ref = model.state_dict(), want.state_dict()
    assert all(torch.allclose(got[k], ref[k], atol=1e-6) for k in ref)
    assert sorted(k for k in calls if k in targets) == sorted(targets)   # once each
