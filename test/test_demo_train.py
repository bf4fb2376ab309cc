"""Demo training: quick run writes loadable LeRobot-layout checkpoints; caching; paths."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from retain_ros.demo import train
from retain_ros.demo.data import generate_demos
from retain_ros.demo.paths import demo_checkpoints
from retain_ros.demo.paths import demo_dir
from retain_ros.demo.paths import DemoCheckpointsMissing
from retain_ros.demo.rollout import run_episode
from retain_ros.demo.rollout import StateDictInterpolator
from retain_ros.sim import SimWorld


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    torch.set_num_threads(2)
    assert train.main(['--quick', '--dir', root, '--no-progress']) == 0
    return root


def test_paths(tmp_path, monkeypatch):
    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', str(tmp_path / 'x'))
    assert demo_dir() == str(tmp_path / 'x')
    with pytest.raises(DemoCheckpointsMissing, match='retain-ros demo-train'):
        demo_checkpoints()
    monkeypatch.delenv('RETAIN_ROS_DEMO_DIR')
    assert demo_dir().endswith(os.path.join('.cache', 'retain_ros', 'demo'))


def test_checkpoints_in_lerobot_layout_and_loadable(trained, monkeypatch):
    from retain_ros.policies.pi0 import Pi0Policy

    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', trained)
    generalist, finetuned = demo_checkpoints()
    for path in (generalist, finetuned):
        names = set(os.listdir(path))
        assert {'config.json', 'model.safetensors', 'tokenizer'} <= names
        assert any(n.endswith('normalizer_processor.safetensors') for n in names)
        with open(os.path.join(path, 'config.json')) as f:
            assert json.load(f)['type'] == 'pi0'
    policy = Pi0Policy.build(generalist, stats_dir=finetuned)
    policy.load_weights(finetuned)
    world = SimWorld()
    result = run_episode(policy, world, 'reach_yellow', 'new_ood', 0, steps=6, replan_steps=3)
    assert result['chunks'] == 2 and result['steps'] == 6
    with open(os.path.join(trained, 'settings.json')) as f:
        assert json.load(f)['hash'] == train.quick_settings().digest()


def test_cache_reuses_and_retrains_on_change(trained):
    weights = os.path.join(trained, 'finetuned', 'model.safetensors')
    before = os.stat(weights).st_mtime_ns
    settings = train.quick_settings()
    train.ensure_demo_checkpoints(trained, settings, progress=False)
    assert os.stat(weights).st_mtime_ns == before
    assert train.main(['--quick', '--dir', trained, '--no-progress']) == 0
    assert os.stat(weights).st_mtime_ns == before
    settings.finetune_steps += 1
    assert train.cached_summary(trained, settings) is None
    train.ensure_demo_checkpoints(trained, settings, progress=False)
    assert os.stat(weights).st_mtime_ns != before
    assert train.cached_summary(trained, settings) is not None


def test_demos_are_seeded():
    a = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=3)
    b = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.actions.shape == (3, 4, 3) and a.instructions == ['touch the red block']


def test_interpolator_endpoints():
    module = torch.nn.Linear(2, 2)
    pre = {k: torch.zeros_like(v) for k, v in module.state_dict().items()}
    ft = {k: torch.ones_like(v) for k, v in module.state_dict().items()}
    merger = StateDictInterpolator(module, pre, ft)
    merger.apply(0.25)
    assert torch.allclose(module.weight, torch.full((2, 2), 0.25))
    merger.apply(1.0, action=0.0)
    assert torch.allclose(module.weight, torch.zeros(2, 2))
