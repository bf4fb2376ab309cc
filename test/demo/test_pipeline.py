"""The demo checkpoints: a quick run writes loadable LeRobot-layout checkpoints; caching."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from retain_ros.demo import cli
from retain_ros.demo.checkpoints import read_info
from retain_ros.demo.paths import demo_checkpoints
from retain_ros.demo.paths import SHIPPED_PRETRAINED
from retain_ros.demo.pipeline import ensure_demo_checkpoints
from retain_ros.demo.pipeline import ensure_pretrained
from retain_ros.demo.rollout import run_episode
from retain_ros.demo.settings import finetune_digest
from retain_ros.demo.settings import pretrained_digest
from retain_ros.demo.settings import quick_settings
from retain_ros.demo.settings import TrainSettings
from retain_ros.merging.digests import file_sha256
from retain_ros.sim import SimWorld


@pytest.mark.slow
def test_checkpoints_in_lerobot_layout_and_loadable(trained, monkeypatch):
    from retain_ros.policies.pi0 import Pi0Policy

    monkeypatch.setenv('RETAIN_ROS_DEMO_DIR', trained)
    pretrained, finetuned = demo_checkpoints()
    for path in (pretrained, finetuned):
        names = set(os.listdir(path))
        assert {'config.json', 'model.safetensors', 'tokenizer'} <= names
        assert any(n.endswith('normalizer_processor.safetensors') for n in names)
        with open(os.path.join(path, 'config.json')) as f:
            assert json.load(f)['type'] == 'pi0'
    policy = Pi0Policy.build(pretrained, stats_dir=finetuned)
    policy.load_weights(finetuned)
    world = SimWorld()
    result = run_episode(policy, world, 'reach_yellow', 'new_ood', 0, steps=6, replan_steps=3)
    assert result['chunks'] == 2 and result['steps'] == 6
    settings = quick_settings()
    pre_info, ft_info = read_info(pretrained), read_info(finetuned)
    assert pre_info['hash'] == pretrained_digest(settings)
    assert pre_info['weights_sha256'] == file_sha256(os.path.join(pretrained, 'model.safetensors'))
    assert ft_info['generalist_weights_sha256'] == pre_info['weights_sha256']
    assert ft_info['hash'] == finetune_digest(settings, pre_info['weights_sha256'])
    # the demonstrations' text is part of the cache key: another task, another finetune
    assert ft_info['hash'] != finetune_digest(settings, pre_info['weights_sha256'], 'reach_cyan')
    assert [c['step'] for c in pre_info['curve']][-1] == settings.pretrained_steps
    assert 'val_success' in pre_info['curve'][-1]


@pytest.mark.slow
def test_cache_reuses_and_retrains_on_change(trained, tmp_path):
    root = str(tmp_path / 'demo')
    shutil.copytree(trained, root)
    pre_weights = os.path.join(root, 'generalist', 'model.safetensors')
    weights = os.path.join(root, 'finetuned', 'model.safetensors')
    pre_before, before = os.stat(pre_weights).st_mtime_ns, os.stat(weights).st_mtime_ns
    settings = quick_settings()
    ensure_demo_checkpoints(root, settings, progress=False)
    assert os.stat(weights).st_mtime_ns == before
    assert cli.main(['--quick', '--dir', root, '--no-progress']) == 0
    assert os.stat(weights).st_mtime_ns == before
    # a finetune setting retrains the finetune only
    settings.finetune_steps += 1
    ensure_demo_checkpoints(root, settings, progress=False)
    assert os.stat(weights).st_mtime_ns != before
    assert os.stat(pre_weights).st_mtime_ns == pre_before
    # a pretraining setting retrains both
    settings.pretrained_steps += 1
    ensure_demo_checkpoints(root, settings, progress=False)
    assert os.stat(pre_weights).st_mtime_ns != pre_before
    assert read_info(os.path.join(root, 'generalist'))['hash'] == pretrained_digest(settings)


def test_default_settings_use_the_shipped_pretrained_model(tmp_path):
    path, origin = ensure_pretrained(str(tmp_path), TrainSettings(), progress=False)
    assert origin == 'shipped'
    assert read_info(path)['weights_sha256'] == read_info(SHIPPED_PRETRAINED)['weights_sha256']
    assert ensure_pretrained(str(tmp_path), TrainSettings())[1] == 'shipped'
