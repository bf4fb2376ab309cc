"""load_merged_policy / load_policy on real tiny π0 checkpoints written to tmp_path."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from retain_ros.merging import devices
from retain_ros.merging.spec import MergeSpec
from retain_ros.policies.base import Observation
from retain_ros.policies.loader import detect_family
from retain_ros.policies.loader import load_merged_policy
from retain_ros.policies.loader import load_policy
from retain_ros.policies.loader import single_checkpoint_dtype
from retain_ros.policies.pi0 import NormStats
from retain_ros.policies.pi0 import Pi0Policy
from retain_ros.policies.pi0 import save_pi0_checkpoint
from retain_ros.policies.pi0 import tiny_pi0_config

CFG = tiny_pi0_config(3, 3, chunk_size=6, image_size=32, num_inference_steps=2)
OBS = Observation({'base': np.full((40, 40, 3), 90, np.uint8)}, 'reach', np.array([0.1, 0, -0.1]))


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('ck')
    paths = []
    for seed, name in ((0, 'pre'), (1, 'ft')):
        stats = NormStats(np.zeros(3), np.ones(3), np.full(3, float(seed)), np.ones(3))
        pol = Pi0Policy.from_config(CFG, stats=stats, init_seed=seed)
        paths.append(save_pi0_checkpoint(pol, str(root / name)))
    return paths


def test_merged_endpoints_match_single_checkpoints(checkpoints, caplog):
    pre, ft = checkpoints
    caplog.set_level('INFO')
    policy, merger = load_merged_policy(pre, [ft], MergeSpec(alpha=1.0), device='cpu')
    assert 'normalization stats from the finetuned checkpoint' in caplog.text
    assert policy.stats.source.startswith(ft)
    finetuned = load_policy(ft, device='cpu', warmup=False)
    np.testing.assert_allclose(policy.predict(OBS).actions, finetuned.predict(OBS).actions,
                               atol=1e-6)
    # alpha = 0: pretrained weights, but the finetuned checkpoint's statistics (action mean +1)
    merger.apply(MergeSpec(alpha=0.0))
    pretrained = load_policy(pre, device='cpu', warmup=False)
    np.testing.assert_allclose(policy.predict(OBS).actions, pretrained.predict(OBS).actions + 1,
                               atol=1e-5)
    state = merger.state.to_dict()
    assert state['alpha']['language'] == 0.0


def test_merge_is_in_place_and_between(checkpoints):
    pre, ft = checkpoints
    policy, merger = load_merged_policy(pre, ft, MergeSpec(alpha=0.5), device='auto',
                                        dtype='auto', warmup=False)
    ptr = {k: v.data_ptr() for k, v in policy.module.state_dict().items()}
    mid = policy.predict(OBS).actions
    merger.apply(MergeSpec(alpha=0.75))
    assert {k: v.data_ptr() for k, v in policy.module.state_dict().items()} == ptr
    assert not np.allclose(policy.predict(OBS).actions, mid)
    a = load_policy(pre, warmup=False).module.state_dict()
    b = load_policy(ft, warmup=False).module.state_dict()
    key = 'model.vlm.language_model.layers.0.mlp.up_proj.weight'
    want = 0.25 * a[key] + 0.75 * b[key]
    assert torch.allclose(policy.module.state_dict()[key], want, atol=1e-6)


def test_tokenizer_default_and_errors(checkpoints, tmp_path):
    pre, ft = checkpoints
    bare = str(tmp_path / 'bare')
    shutil.copytree(ft, bare)
    shutil.rmtree(os.path.join(bare, 'tokenizer'))
    with pytest.raises(FileNotFoundError, match='tokenizer_path'):
        load_merged_policy(pre, [bare], MergeSpec(alpha=1.0), device='cpu')
    policy, _ = load_merged_policy(pre, [bare], MergeSpec(alpha=1.0), device='cpu',
                                   tokenizer_path=os.path.join(ft, 'tokenizer'), warmup=False)
    assert policy.predict(OBS).actions.shape == (6, 3)
    with pytest.raises(ValueError, match='no policy adapter'):
        detect_family(ft, 'act')
    cfg = json.load(open(os.path.join(bare, 'config.json'), encoding='utf-8'))
    cfg['type'] = 'act'
    with open(os.path.join(bare, 'config.json'), 'w', encoding='utf-8') as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match='act'):
        load_policy(bare)
    with pytest.raises(ValueError, match='at least one'):
        load_merged_policy(pre, [], MergeSpec(alpha=1.0))


def test_incompatible_checkpoints_fail_cleanly(checkpoints, tmp_path):
    pre, _ = checkpoints
    other = tiny_pi0_config(3, 3, chunk_size=6, image_size=32, max_dim=5)
    ft = save_pi0_checkpoint(Pi0Policy.from_config(other), str(tmp_path / 'wide'))
    from retain_ros.merging.errors import MergeError
    with pytest.raises(MergeError):
        load_merged_policy(pre, [ft], MergeSpec(alpha=0.5), device='cpu')


@pytest.mark.parametrize('native', [True, False])
def test_auto_dtype_of_one_checkpoint_follows_the_merge_rule(checkpoints, tmp_path, monkeypatch,
                                                             native):
    """``load_policy(dtype='auto')`` keeps the checkpoint's dtype, widened where it is slow."""
    pre, _ = checkpoints
    monkeypatch.setattr(devices, 'cpu_has_native_bf16', lambda: native)
    bf16 = save_pi0_checkpoint(Pi0Policy.from_config(CFG, dtype='bfloat16', init_seed=0),
                               str(tmp_path / 'bf16'))
    assert single_checkpoint_dtype(pre, 'pi0', 'cpu', 'auto') == 'float32'   # never narrowed
    assert single_checkpoint_dtype(bf16, 'pi0', 'cpu', 'auto') == ('bfloat16' if native
                                                                   else 'float32')
    assert single_checkpoint_dtype(bf16, 'pi0', 'cpu', 'float16') == 'float16'
    policy = load_policy(bf16, device='cpu', warmup=False)
    assert next(policy.module.parameters()).dtype == (torch.bfloat16 if native
                                                      else torch.float32)
