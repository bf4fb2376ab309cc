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
from retain_ros.demo.rollout import load_pair
from retain_ros.demo.rollout import merge_spec
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


def test_offline_sweep_merges_like_the_node(trained):
    """The offline harness uses the merging library's LiveMerger on the checkpoints on disk."""
    policy, merger = load_pair(os.path.join(trained, 'generalist'),
                               os.path.join(trained, 'finetuned'))
    groups = merger.groups
    pre_source, (ft_source,) = merger.sources
    pre = {k: pre_source.get(k) for k in groups}
    ft = {k: ft_source.get(k) for k in groups}
    assert {'vision', 'language', 'action'} <= set(groups.values())
    live = policy.module.state_dict()
    changed = [k for k in pre if not torch.equal(pre[k], ft[k])]
    assert changed, 'the finetune changed nothing'
    for k in changed:
        torch.testing.assert_close(live[k], pre[k])
    merger.apply(merge_spec({'alpha': 1.0, 'language': 0.5}))
    live = policy.module.state_dict()
    for k in changed:
        want = torch.lerp(pre[k].float(), ft[k].float(), 0.5) if groups[k] == 'language' \
            else ft[k]
        torch.testing.assert_close(live[k], want)
    rows = train.offline_sweep(trained, 1, train.quick_settings(), progress=False,
                               sweep=({'alpha': 0.0}, {'alpha': 1.0, 'language': 0.5}))
    assert [(r['setting'], r['split'], r['episodes']) for r in rows][:3] == [
        ({'alpha': 0.0}, 'new_id', 1), ({'alpha': 0.0}, 'new_ood', 1),
        ({'alpha': 0.0}, 'generalist', 1)]
    assert 'alpha=1,language=0.5' in train.format_sweep(rows)


def test_default_sweep_has_the_demo_language_merge():
    assert {'alpha': 1.0, 'language': 0.5} in train.DEFAULT_SWEEP
    assert {'alpha': 0.0} in train.DEFAULT_SWEEP and {'alpha': 1.0} in train.DEFAULT_SWEEP


def test_set_overrides_any_setting():
    args = train._parser().parse_args(['--quick', '--set', 'generalist_lr=0.002',
                                       '--set', 'model-image-size=32'])
    settings = train.settings_from_args(args)
    assert settings.generalist_lr == 0.002 and settings.model_image_size == 32
    with pytest.raises(SystemExit):
        train.settings_from_args(train._parser().parse_args(['--set', 'nope=1']))


def test_all_targets_demonstrates_every_block_of_a_scene():
    one = generate_demos(['reach_red', 'reach_blue'], 'generalist', 2, horizon=4, dt=0.1,
                         steps=2)
    every = generate_demos(['reach_red', 'reach_blue'], 'generalist', 2, horizon=4, dt=0.1,
                           steps=2, all_targets=True)
    assert one.episodes == 4 and one.images.shape[1:] == (96, 96, 3)
    assert every.episodes > one.episodes and len(every) == 2 * every.episodes
    # a scene demonstrated for another instruction starts from the same image and state
    for start in range(0, len(every), 2):
        same = [s for s in range(0, len(every), 2)
                if np.array_equal(every.images[s], every.images[start])]
        if len(same) > 1:
            assert len({int(every.instruction_index[s]) for s in same}) == len(same)
            np.testing.assert_array_equal(every.states[same[0]], every.states[same[1]])
            break
    else:
        raise AssertionError('no scene was demonstrated twice')
