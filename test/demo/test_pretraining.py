"""Training the pretrained model: the VLM pointing stage, then the actions with the VLM frozen."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retain_ros.demo.data import generate_demos
from retain_ros.demo.model import LOCATION_BINS
from retain_ros.demo.objectives import image_grid
from retain_ros.demo.objectives import pointing_labels
from retain_ros.demo.objectives import pointing_objective
from retain_ros.demo.pretraining import pretrain_vlm
from retain_ros.demo.pretraining import train_pretrained
from retain_ros.demo.settings import quick_settings


@pytest.mark.slow
def test_pretrain_vlm_learns_pointing(fresh_policy):
    """The pointing objective marks the image token that holds the instructed block.

    It does so at a layer the action expert reads; its accuracy is the share of samples marked
    right.
    """
    settings = quick_settings()
    settings.vlm_steps = 150
    settings.vlm_lr = 3e-3
    settings.pointing_layer = 1
    data = generate_demos(['reach_red', 'reach_blue'], 'generalist', 4, horizon=10, dt=0.1,
                          steps=1, all_targets=True)
    policy, dataset = fresh_policy(settings, data)
    grid = image_grid(policy.module)
    bins = torch.tensor([[0, 0], [LOCATION_BINS - 1, 0], [0, LOCATION_BINS - 1]])
    assert pointing_labels(policy.module, bins).tolist() == [0, grid - 1, grid * (grid - 1)]
    accuracy = pointing_objective(policy.processor.tokenizer, settings.pointing_layer)[1]
    before = accuracy(policy.module, dataset)
    torch.manual_seed(0)
    curve = pretrain_vlm(policy, dataset, settings, dataset, check_every=150, progress=False)
    assert curve[-1]['val_grounding'] > max(0.6, before + 0.3)
    assert curve[-1]['grounding_loss'] < np.log(grid * grid)


def test_freeze_vlm_trains_the_action_expert_only(tmp_path):
    from retain_ros.policies.pi0.checkpoint_pi0 import read_pi0_state_dict

    runs = {'init': dict(pretrained_lr=0.0), 'frozen': dict(freeze_vlm=True),
            'free': dict(freeze_vlm=False)}
    weights = {}
    for name, changes in runs.items():
        settings = quick_settings()
        settings.vlm_steps = 0
        settings.pretrained_steps = 4
        for key, value in changes.items():
            setattr(settings, key, value)
        train_pretrained(settings, str(tmp_path / name), progress=False, validation_episodes=1)
        weights[name] = read_pi0_state_dict(str(tmp_path / name / 'model.safetensors'))

    def changed(name):
        return {k for k, v in weights[name].items() if not torch.equal(v, weights['init'][k])}

    vlm = {k for k in weights['init'] if k.startswith('model.vlm.')}
    assert vlm and changed('frozen') and not changed('frozen') & vlm
    assert changed('free') & vlm
