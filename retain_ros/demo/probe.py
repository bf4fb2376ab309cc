"""The conditioning probe: which inputs (instruction, image, state) a policy's actions use."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from retain_ros.demo.dataset import TensorDataset
from retain_ros.demo.objectives import flow_matching_loss
from retain_ros.demo.settings import TrainSettings
from retain_ros.demo.trainer import seeded_torch
from retain_ros.demo.validation import validation_samples

#: Inputs :func:`probe_losses` shuffles across samples, and the batch keys of each.
PROBE_INPUTS = {'instruction': ('input_ids', 'attention_mask'), 'image': ('pixel_values',),
                'state': ('state',)}


def probe_losses(model, dataset: TensorDataset, seed: int, repeats: int = 5) -> Dict[str, float]:
    """Return a policy's flow-matching loss on ``dataset``, and with each input shuffled.

    A policy that follows the instruction loses accuracy when the instructions are shuffled
    across the samples; equal losses mean its actions do not depend on that input, whatever its
    success rate. Same noise and flow times for every variant; torch's random state and the
    module's training mode are left as they were.

    :return: ``{'samples', 'loss', 'shuffled_instruction', 'shuffled_image',
        'shuffled_state'}``.
    """
    batch = dataset.batch(torch.arange(len(dataset)))
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1))
    was_training = model.training
    model.eval()

    def loss(inputs: Dict[str, torch.Tensor]) -> float:
        with seeded_torch(seed), torch.no_grad():
            return float(np.mean([float(flow_matching_loss(model, inputs))
                                  for _ in range(repeats)]))

    out = {'samples': len(dataset), 'loss': loss(batch)}
    for name, keys in PROBE_INPUTS.items():
        out[f'shuffled_{name}'] = loss(dict(batch, **{k: batch[k][perm] for k in keys}))
    model.train(was_training)
    return out


def conditioning_probe(checkpoint: str, settings: TrainSettings,
                       scenes_per_task: int = 40) -> Dict[str, float]:
    """Return :func:`probe_losses` of a checkpoint on generalist-task validation scenes.

    The samples are :func:`~retain_ros.demo.validation.validation_samples` (one on the way to
    the block per demonstration) of ``scenes_per_task`` scenes per task.
    """
    from retain_ros.policies.loader import load_policy

    policy = load_policy(checkpoint, device='cpu', dtype='float32', noise_seed=settings.seed,
                         warmup=False)
    samples = validation_samples(settings, policy.processor, scenes_per_task, motion_only=True)
    return probe_losses(policy.module, samples, settings.seed)


def format_probe(name: str, probe: Dict[str, float]) -> str:
    """Return one line: the loss and each shuffled input's loss as a ratio to it."""
    ratios = ', '.join(f'{k[len("shuffled_"):]} shuffled x{probe[k] / probe["loss"]:.2f}'
                       for k in probe if k.startswith('shuffled_'))
    return f'{name}: flow loss {probe["loss"]:.4f} on {probe["samples"]} samples; {ratios}'
