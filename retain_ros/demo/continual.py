"""RETAIN's continual recipe on the demo: a second new task on top of the first merge."""
from __future__ import annotations

import os
from typing import Dict
from typing import List

from retain_ros.demo.finetuning import train_finetune
from retain_ros.demo.offline_sweep import EVAL_SEED_OFFSET
from retain_ros.demo.offline_sweep import format_sweep
from retain_ros.demo.progress import progress_bar
from retain_ros.demo.settings import TrainSettings
from retain_ros.sim.tasks import CONTINUAL_SPLITS
from retain_ros.sim.tasks import SECOND_TASK
from retain_ros.sim.tasks import SPLITS

#: Checkpoint directories of the continual chain under the demo directory.
MERGED_1 = 'merged_1'
FINETUNED_2 = 'finetuned_2'


def continual_chain(root: str, settings: TrainSettings, alpha: float, episodes: int,
                    pretrained: str, finetuned: str, progress: bool = True) -> List[Dict]:
    """Run the continual chain and print its table.

    1. ``merged_1`` = (1 - alpha) * pretrained + alpha * finetuned (the first new task), written
       with :func:`retain_ros.merging.to_disk.merge_to_disk`;
    2. ``finetuned_2`` = a full finetune of ``merged_1`` on the second new task
       (:data:`~retain_ros.sim.tasks.SECOND_TASK`) from its narrow demos;
    3. the chain ``(1 - alpha) * merged_1 + alpha * finetuned_2``, evaluated (held-out seeds)
       next to ``merged_1`` (alpha 0) and ``finetuned_2`` (alpha 1) on the generalist tasks and
       both new tasks' in-distribution and OOD splits.

    :param root: the demo directory (``merged_1`` and ``finetuned_2`` go there).
    :param pretrained: the pretrained model (from
        :func:`~retain_ros.demo.pipeline.ensure_demo_checkpoints`).
    :param finetuned: its finetune on the first new task.
    :return: the sweep rows (setting ``alpha`` = weight on ``finetuned_2``).
    """
    from retain_ros.demo.rollout import alpha_sweep
    from retain_ros.demo.rollout import load_pair
    from retain_ros.merging.spec import MergeSpec
    from retain_ros.merging.to_disk import merge_to_disk

    merged = os.path.join(root, MERGED_1)
    merge_to_disk(pretrained, finetuned, MergeSpec(alpha=float(alpha)), merged, progress=False)
    second = os.path.join(root, FINETUNED_2)
    train_finetune(settings, merged, second, progress=progress, task=SECOND_TASK)
    policy, merger = load_pair(merged, second, noise_seed=settings.seed)
    splits = {s: episodes for s in SPLITS + CONTINUAL_SPLITS}
    sweep = ({'alpha': 0.0}, {'alpha': float(alpha)}, {'alpha': 1.0})
    with progress_bar(len(sweep) * len(splits) * episodes, 'continual chain', progress) as b:
        rows = alpha_sweep(policy, merger, sweep, splits, seed_offset=EVAL_SEED_OFFSET,
                           progress=b.update, image_size=settings.sim_image_size)
    print(f'continual chain: merged_1 = {alpha:g} on the first finetune; rows: alpha on '
          f'finetuned_2 (0 = merged_1, 1 = finetuned_2)')
    print(format_sweep(rows))
    return rows
