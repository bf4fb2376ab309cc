"""The offline alpha sweep: closed-loop success per merge setting, without ROS.

``retain-ros demo-train --eval N`` runs it on the demo checkpoints; the ROS demo
(``retain-ros demo``, ``closed_loop_demo`` in the ros layer) runs the same settings and
episodes through the sim and policy nodes: the demo sweep.
"""
from __future__ import annotations

import os
import time
from typing import Dict
from typing import List

from retain_ros.demo.paths import FINETUNED
from retain_ros.demo.paths import PRETRAINED
from retain_ros.demo.progress import progress_bar
from retain_ros.demo.rollout import SWEEP_ALPHAS
from retain_ros.demo.rollout import SWEEP_GROUP_SETTINGS
from retain_ros.demo.rollout import SWEEP_LANGUAGE_ONLY
from retain_ros.demo.settings import TrainSettings

#: The offline sweep's settings: the ROS demo's (:data:`retain_ros.demo.rollout.SWEEP_ALPHAS`,
#: the language-only merge, the per-group settings).
DEFAULT_SWEEP = tuple({'alpha': a} for a in SWEEP_ALPHAS) + \
    ({'alpha': 1.0, 'language': SWEEP_LANGUAGE_ONLY},) + SWEEP_GROUP_SETTINGS
#: Scene seeds of the held-out evaluation start here (validation scenes use
#: :data:`retain_ros.demo.validation.VALIDATION_SEED_OFFSET`, training scenes
#: :data:`retain_ros.demo.data.TRAIN_SEED_OFFSET` and up).
EVAL_SEED_OFFSET = 0


def offline_sweep(root: str, episodes: int, settings: TrainSettings, progress: bool = True,
                  sweep=DEFAULT_SWEEP, seed_offset: int = EVAL_SEED_OFFSET) -> List[Dict]:
    """Run the closed-loop alpha sweep over the checkpoints in ``root``; print a table.

    The policy and merger are built exactly as the policy node builds them
    (:func:`retain_ros.demo.rollout.load_pair`: finetuned config / statistics / tokenizer, the
    merging library's LiveMerger), so the numbers are those of the same merged weights.

    :param episodes: episodes per split (new task in-distribution and OOD, generalist tasks)
        and setting.
    :return: the rows of :func:`retain_ros.demo.rollout.alpha_sweep`.
    """
    from retain_ros.demo.rollout import alpha_sweep
    from retain_ros.demo.rollout import load_pair

    policy, merger = load_pair(os.path.join(root, PRETRAINED), os.path.join(root, FINETUNED),
                               noise_seed=settings.seed)
    splits = {'new_id': episodes, 'new_ood': episodes, 'generalist': episodes}
    t0 = time.perf_counter()
    with progress_bar(len(sweep) * 3 * episodes, 'offline alpha sweep', progress) as b:
        rows = alpha_sweep(policy, merger, sweep, splits, seed_offset=seed_offset,
                           progress=b.update, image_size=settings.sim_image_size)
    print(format_sweep(rows))
    print(f'({episodes} episodes per cell; 95% Wilson interval in brackets; '
          f'{time.perf_counter() - t0:.0f} s)')
    return rows


def format_sweep(rows: List[Dict]) -> str:
    """Return a plain-text table: one line per setting, success (95% Wilson) per split."""
    from retain_ros.evaluation.stats import wilson_interval

    splits = []
    for row in rows:
        if row['split'] not in splits:
            splits.append(row['split'])
    width = 24
    lines = ['setting                 ' + ''.join(f'{s:>{width}}' for s in splits)]
    table: Dict[str, Dict[str, str]] = {}
    for row in rows:
        key = ','.join(f'{k}={v:g}' for k, v in row['setting'].items())
        low, high = wilson_interval(row['successes'], row['episodes'])
        table.setdefault(key, {})[row['split']] = \
            f'{row["successes"]}/{row["episodes"]} {row["rate"]:.2f} [{low:.2f},{high:.2f}]'
    for key, cells in table.items():
        lines.append(f'{key:<24}' + ''.join(f'{cells.get(s, ""):>{width}}' for s in splits))
    return '\n'.join(lines)
