"""The demo's training data: which demonstrations, their digest, and their model tensors."""
from __future__ import annotations

import hashlib
import json
from typing import Dict

import numpy as np
import torch

from retain_ros.demo.data import DemoData
from retain_ros.demo.data import generate_demos
from retain_ros.demo.model import LOCATION_BINS
from retain_ros.demo.progress import progress_bar
from retain_ros.demo.settings import TrainSettings
from retain_ros.sim.tasks import GENERALIST_TASKS
from retain_ros.sim.tasks import get_task


class TensorDataset:
    """A demo data set turned into model-ready tensors once.

    Images go through the processor's own :meth:`pixel_values`, the function that prepares them
    at inference (LeRobot's resize-with-pad): the model trains on exactly what it will see.
    Training on OpenCV ``INTER_AREA`` thumbnails while serving bilinear ones (no antialias) was a
    train/serve skew (mean |difference| 0.016, up to 0.82 at block edges, in [-1, 1] units).

    :param data: the demonstrations (images at the sim's render size).
    :param processor: the processor (tokenizer, statistics, image size).
    :param block: images prepared per call of the processor.
    """

    def __init__(self, data: DemoData, processor, block: int = 1024):
        camera = processor.spec.camera_names[0]
        parts = [processor.pixel_values([{camera: img} for img in data.images[i:i + block]])
                 for i in range(0, len(data.images), block)]
        self.images = torch.cat(parts)
        self.states = processor.state(list(data.states))
        self.actions = processor.normalize_actions(data.actions)
        tokens = processor.tokenize(data.instructions)
        self.input_ids = tokens['input_ids']
        self.attention_mask = tokens['attention_mask']
        self.instruction_index = torch.from_numpy(data.instruction_index)
        self.target_location = location_bins(data.targets)

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def batch(self, index: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return the model inputs of the samples ``index``, with two labels.

        The labels are ``actions`` (flow matching) and ``target_location`` (the instructed
        block's :func:`location_bins`, pointing).
        """
        which = self.instruction_index[index]
        pixels = self.images[index]
        return {'state': self.states[index], 'input_ids': self.input_ids[which],
                'attention_mask': self.attention_mask[which], 'pixel_values': pixels,
                'pixel_attention_mask': torch.ones(len(index), 1, dtype=torch.bool),
                'actions': self.actions[index], 'target_location': self.target_location[index]}


def location_bins(targets: np.ndarray) -> torch.Tensor:
    """Return the ``(N, 2)`` image-space bins (column, row) of block centres ``(N, 2)`` in m."""
    from retain_ros.sim import world

    xy = np.asarray(targets, np.float64).reshape(-1, 2)
    u = (xy[:, 0] - world.VIEW_X[0]) / (world.VIEW_X[1] - world.VIEW_X[0])
    v = (world.VIEW_Y[1] - xy[:, 1]) / (world.VIEW_Y[1] - world.VIEW_Y[0])
    bins = np.clip(np.floor(np.stack([u, v], 1) * LOCATION_BINS), 0, LOCATION_BINS - 1)
    return torch.from_numpy(bins.astype(np.int64))


def demo_kwargs(settings: TrainSettings) -> Dict[str, object]:
    """Return the :func:`~retain_ros.demo.data.generate_demos` arguments every data set shares."""
    return dict(horizon=settings.chunk_size, dt=settings.control_period,
                steps=settings.demo_steps, image_size=settings.sim_image_size,
                noise_prob=settings.noise_prob, noise_std=settings.noise_std)


def pretrained_data(settings: TrainSettings, progress: bool = True) -> DemoData:
    """Return the pretrained model's training demonstrations (deterministic in the settings)."""
    total = settings.pretrained_episodes_per_task * len(GENERALIST_TASKS)
    with progress_bar(total, 'pretraining demos', progress) as bar:
        return generate_demos(GENERALIST_TASKS, 'generalist',
                              settings.pretrained_episodes_per_task, progress=bar.update,
                              all_targets=settings.pretrained_all_targets,
                              start_spread=settings.pretrained_start_spread,
                              samples_per_demo=settings.pretrained_samples_per_demo,
                              **demo_kwargs(settings))


def finetune_data(settings: TrainSettings, task: str, progress: bool = True) -> DemoData:
    """Return the finetune's demonstrations of ``task``, in its narrow split (the first)."""
    narrow = get_task(task).splits()[0]
    with progress_bar(settings.finetune_episodes, 'finetune demos', progress) as bar:
        return generate_demos([task], narrow, settings.finetune_episodes, progress=bar.update,
                              **demo_kwargs(settings))


def data_digest(data: DemoData) -> str:
    """Return the SHA-256 (first 16 hex digits) of a data set's arrays and instructions.

    Hashed block by block: the pretrained model's images alone are 2 GB.
    """
    h = hashlib.sha256()
    for arr in (data.images, data.states, data.actions, data.instruction_index):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(data.instructions).encode())
    return h.hexdigest()[:16]
