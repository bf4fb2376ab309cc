"""Validation during training: closed-loop success and samples on the validation scenes.

Validation scenes are used to pick settings and draw the training curves; the held-out scenes
of the reported tables (:data:`retain_ros.demo.offline_sweep.EVAL_SEED_OFFSET`) never are.
"""
from __future__ import annotations

import numpy as np
import torch

from retain_ros.demo.data import generate_demos
from retain_ros.demo.dataset import demo_kwargs
from retain_ros.demo.dataset import TensorDataset
from retain_ros.demo.settings import TrainSettings
from retain_ros.sim.tasks import GENERALIST_TASKS

#: Scene seeds used to pick settings (model size, steps, alpha grid) and the validation curve;
#: the held-out seeds of the reported tables start at 0, training scenes at
#: :data:`retain_ros.demo.data.TRAIN_SEED_OFFSET` (100000).
VALIDATION_SEED_OFFSET = 50_000


def validation_samples(settings: TrainSettings, processor, scenes_per_task: int,
                       motion_only: bool = False) -> TensorDataset:
    """Return one sample per generalist-task demonstration on validation scenes, as tensors.

    Every block of a scene is instructed in turn. Without ``motion_only`` these are the
    pointing checks; with it (a sample on the way to the block) the samples of
    :func:`retain_ros.demo.probe.probe_losses`.
    """
    data = generate_demos(GENERALIST_TASKS, 'generalist', scenes_per_task, all_targets=True,
                          start_spread=settings.pretrained_start_spread, samples_per_demo=1,
                          motion_only=motion_only, seed_offset=VALIDATION_SEED_OFFSET,
                          **demo_kwargs(settings))
    return TensorDataset(data, processor)


def validation_rate(policy, episodes: int, image_size: int) -> float:
    """Return the closed-loop success on ``episodes`` generalist-task validation scenes.

    The policy's module is left in training mode and torch's random state as it was.
    """
    from retain_ros.demo.rollout import evaluate_split

    with torch.random.fork_rng(devices=[]):
        policy.module.eval()
        with torch.no_grad():
            results = evaluate_split(policy, 'generalist', episodes,
                                     seed_offset=VALIDATION_SEED_OFFSET, image_size=image_size)
        policy.module.train()
    return float(np.mean([r['success'] for r in results])) if results else 0.0
