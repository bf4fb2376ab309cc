"""Normalization modes read from checkpoints (retain_ros.policies.normalize)."""
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file
from safetensors.torch import load_file
import torch

from retain_ros.policies.norm_stats_files import load_norm_stats
from retain_ros.policies.normalize import as_norm_stats
from retain_ros.policies.normalize import FeatureNorm
from retain_ros.policies.normalize import NormStats

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')


@pytest.mark.parametrize('name, mode', [('pi0_ref', 'MEAN_STD'), ('pi05_ref', 'QUANTILES')])
def test_lerobot_reference_stats_match_lerobot(name, mode):
    """State normalization and action unnormalization equal LeRobot 0.4.4's own outputs."""
    directory = os.path.join(DATA, name)
    ref = load_file(os.path.join(directory, 'reference.safetensors'))
    stats = load_norm_stats(directory, 8, 7)
    assert stats.state.mode == stats.action.mode == mode
    assert 'policy_postprocessor_step_0_unnormalizer_processor.safetensors' in stats.source
    state = stats.normalize_state(ref['state_raw'])
    assert float((state - ref['state_normalized']).abs().max()) <= 1e-6
    actions = stats.unnormalize_actions(ref['actions_normalized'])
    assert float((actions - ref['actions_final']).abs().max()) <= 1e-6
    back = stats.normalize_actions(actions)
    assert float((back - ref['actions_normalized']).abs().max()) <= 1e-5


def _lerobot_dir(tmp_path, norm_map):
    d = tmp_path / 'ck'
    shutil.copytree(os.path.join(DATA, 'pi05_ref'), d,
                    ignore=shutil.ignore_patterns('*.safetensors', 'tiny_*', 'reference*'))
    for name in ('policy_preprocessor.json', 'policy_postprocessor.json'):
        data = json.loads((d / name).read_text())
        data['steps'][0 if 'post' in name else 2]['config']['norm_map'] = norm_map
        (d / name).write_text(json.dumps(data))
    rng = np.random.default_rng(0)
    tensors = {}
    for key, dim in (('observation.state', 8), ('action', 7)):
        lo = rng.normal(size=dim).astype(np.float32)
        tensors.update({f'{key}.mean': lo + 1, f'{key}.std': np.full(dim, 2, np.float32),
                        f'{key}.min': lo, f'{key}.max': lo + 4, f'{key}.q01': lo + 0.5,
                        f'{key}.q99': lo + 3.5})
    save_file(tensors, str(d / 'policy_preprocessor_step_2_normalizer_processor.safetensors'))
    save_file({k: v for k, v in tensors.items() if k.startswith('action.')},
              str(d / 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'))
    return d, tensors


@pytest.mark.parametrize('mode', ['MEAN_STD', 'MIN_MAX', 'QUANTILES', 'IDENTITY'])
def test_each_mode_round_trips(tmp_path, mode):
    d, tensors = _lerobot_dir(tmp_path, {'VISUAL': 'IDENTITY', 'STATE': mode, 'ACTION': mode})
    stats = load_norm_stats(str(d), 8, 7)
    assert stats.norm_map()['STATE'] == mode
    x = torch.as_tensor(tensors['observation.state.min']) + 1.0
    y = stats.normalize_state(x)
    lo = tensors['observation.state.min']
    want = {'MEAN_STD': (x.numpy() - (lo + 1)) / (2 + 1e-8),
            'MIN_MAX': 2 * (x.numpy() - lo) / 4 - 1,
            'QUANTILES': 2 * (x.numpy() - lo - 0.5) / 3 - 1, 'IDENTITY': x.numpy()}[mode]
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)
    a = torch.randn(3, 10, 7)
    np.testing.assert_allclose(stats.normalize_actions(stats.unnormalize_actions(a)).numpy(),
                               a.numpy(), atol=1e-5)


def test_unknown_mode_is_refused_with_the_file(tmp_path):
    d, _ = _lerobot_dir(tmp_path, {'VISUAL': 'IDENTITY', 'STATE': 'ROBUST', 'ACTION': 'MEAN_STD'})
    with pytest.raises(ValueError, match=r"policy_preprocessor.json.*unknown normalization mode "
                                         r"'ROBUST'"):
        load_norm_stats(str(d))
    with pytest.raises(ValueError, match='unknown normalization mode'):
        FeatureNorm('robust', {'mean': [0.0], 'std': [1.0]})


def test_mode_without_its_statistics_is_refused(tmp_path):
    d, tensors = _lerobot_dir(tmp_path, {'STATE': 'QUANTILES', 'ACTION': 'QUANTILES'})
    save_file({k: v for k, v in tensors.items() if not k.endswith(('.q01', '.q99'))},
              str(d / 'policy_preprocessor_step_2_normalizer_processor.safetensors'))
    with pytest.raises(ValueError, match=r"QUANTILES.*\['q01', 'q99'\]"):
        load_norm_stats(str(d))


def test_openpi_mode_comes_from_the_family(tmp_path):
    asset = tmp_path / 'assets' / 'droid'
    asset.mkdir(parents=True)
    stats = {'mean': [1.0, 2.0, 0.0], 'std': [2.0, 2.0, 1.0], 'q01': [0.0, 0.0, 0.0],
             'q99': [2.0, 4.0, 1.0]}
    (asset / 'norm_stats.json').write_text(json.dumps({'norm_stats': {'state': stats,
                                                                      'actions': stats}}))
    quant = load_norm_stats(str(tmp_path), 2, 2, default_mode='QUANTILES')
    assert quant.state.mode == 'QUANTILES' and quant.state.convention == 'openpi'
    y = quant.normalize_state(torch.tensor([1.0, 1.0]))
    np.testing.assert_allclose(y.numpy(), [1 / (2 + 1e-6) * 2 - 1, 1 / (4 + 1e-6) * 2 - 1],
                               atol=1e-7)
    z = load_norm_stats(str(tmp_path), 2, 2)      # pi0 default: MEAN_STD
    np.testing.assert_allclose(z.normalize_state(torch.tensor([3.0, 2.0])).numpy(),
                               [2 / (2 + 1e-6), 0.0], rtol=1e-6)
    np.testing.assert_allclose(z.unnormalize_actions(torch.tensor([1.0, 0.0])).numpy(),
                               [3.0, 2.0], rtol=1e-6)


def test_transformers_processor_config_stats(tmp_path):
    (tmp_path / 'processor_config.json').write_text(json.dumps({
        'processor_class': 'PI0Processor', 'state_mean': [1.0, 2.0], 'state_std': [2.0, 4.0],
        'actions_mean': [0.5], 'actions_std': [0.25]}))
    stats = load_norm_stats(str(tmp_path), 2, 1)
    assert stats.source.endswith('processor_config.json') and stats.state.mode == 'MEAN_STD'
    np.testing.assert_allclose(stats.unnormalize_actions(torch.tensor([2.0])).numpy(), [1.0])
    (tmp_path / 'processor_config.json').write_text(json.dumps({'state_mean': [1.0]}))
    with pytest.raises(ValueError, match='incomplete'):
        load_norm_stats(str(tmp_path))


def test_tensors_round_trip_and_compat():
    stats = NormStats.from_data(np.random.default_rng(1).normal(size=(50, 3)),
                                np.random.default_rng(2).normal(size=(50, 4, 2)))
    assert stats.state_mean.shape == (3,) and stats.action_std.shape == (2,)
    flat = stats.tensors()
    assert {'observation.state.q01', 'action.max'} <= set(flat)
    again = as_norm_stats(flat, 3, 2)
    np.testing.assert_allclose(again.action_std, stats.action_std, rtol=1e-6)
    assert np.allclose(NormStats.identity(2, 1).typical_state(), 0.0)
