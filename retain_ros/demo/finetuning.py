"""The demo's finetune: a full finetune of a checkpoint on a new task from a few demonstrations.

The new task (touch the yellow block: a colour the pretrained model never saw, in its own
phrasing) is demonstrated in its narrow split (``new_id``: one band in front of the arm, the
yellow block and one distractor on its two sides in random order, default table and lighting);
the finetune takes well under a minute.

Normalization: the finetuned checkpoint keeps the statistics of the checkpoint it starts from
(same robot, same joint ranges; the finetune data is a narrow subset of that range). The node
normalizes with the *finetuned* checkpoint's statistics at every alpha, as RETAIN does;
statistics of the few narrow finetune demos would make every alpha < 1 run the pretrained
weights with foreign statistics.
"""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from retain_ros.demo.checkpoints import read_info
from retain_ros.demo.checkpoints import write_atomically
from retain_ros.demo.checkpoints import write_info
from retain_ros.demo.dataset import data_digest
from retain_ros.demo.dataset import finetune_data
from retain_ros.demo.dataset import TensorDataset
from retain_ros.demo.settings import finetune_digest
from retain_ros.demo.settings import FORMAT_VERSION
from retain_ros.demo.settings import TrainSettings
from retain_ros.demo.trainer import seeded_torch
from retain_ros.demo.trainer import train_model
from retain_ros.sim.tasks import NEW_TASK


def train_finetune(settings: TrainSettings, start_dir: str, out_dir: str,
                   progress: bool = True, task: str = NEW_TASK) -> Dict:
    """Finetune the checkpoint ``start_dir`` on ``task`` and write the result to ``out_dir``.

    :param start_dir: the checkpoint to start from (the pretrained model, or a merge of it in
        the continual chain).
    :param task: the task, demonstrated ``finetune_episodes`` times in its narrow split.
    :return: the finetuned checkpoint's ``demo_info.json`` contents.
    """
    from retain_ros.policies.loader import load_policy
    from retain_ros.policies.pi0 import save_pi0_checkpoint

    t0 = time.perf_counter()
    with seeded_torch(settings.seed):
        policy = load_policy(start_dir, device='cpu', dtype='float32',
                             noise_seed=settings.seed, warmup=False)
        data = finetune_data(settings, task, progress)
        dataset = TensorDataset(data, policy.processor)
        losses = train_model(policy.module, dataset, settings.finetune_steps,
                             settings.finetune_lr, settings.finetune_batch, settings.seed + 1,
                             f'finetune {task}', progress)
    base = read_info(start_dir) or {}
    info = {'role': 'finetuned', 'task': task, 'settings': settings.recorded(),
            'hash': finetune_digest(settings, base.get('weights_sha256', ''), task),
            'format': FORMAT_VERSION, 'generalist': base.get('hash'),
            'generalist_weights_sha256': base.get('weights_sha256'),
            'data_digest': data_digest(data), 'samples': len(dataset),
            'final_loss': float(np.mean(losses[-50:])) if losses else None,
            'seconds': round(time.perf_counter() - t0, 1),
            'created': time.strftime('%Y-%m-%dT%H:%M:%S')}

    def write(staging: str) -> None:
        save_pi0_checkpoint(policy, staging, policy.processor.stats)
        write_info(staging, info)

    write_atomically(out_dir, write)
    return info
