"""Offline closed-loop evaluation: SimWorld <-> policy, and an alpha sweep over merged weights.

No ROS here: this is the harness used to tune the demo (sim, data, training) and to check the
RETAIN shape quickly. The ROS demo (``retain-ros demo``) runs the same episodes through the sim
and policy nodes; the episode protocol is the same (see :func:`run_episode`).
"""
from __future__ import annotations

import logging
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np

from retain_ros.policies.base import Observation
from retain_ros.sim.tasks import tasks_for_split
from retain_ros.sim.world import SimWorld

LOG = logging.getLogger(__name__)

#: Episode protocol shared with the ROS demo: at most this many control steps ...
EPISODE_STEPS = 30
#: ... executing this many actions of each chunk before asking the policy again.
REPLAN_STEPS = 5
#: Camera slot of the sim's camera.
CAMERA = 'base'

#: The demo's merge settings, shared by the offline sweep and the ROS demo (alpha = weight on
#: the FINETUNED model): global alphas ...
SWEEP_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: ... the language-only merge (RETAIN's: language at this alpha, vision and action finetuned) ...
SWEEP_LANGUAGE_ONLY = 0.5
#: ... and per-group settings: the merge that keeps the pretrained action expert (vision and
#: language half way, action 0; where this demo's finetune overfits: README, "What the demo
#: shows").
SWEEP_GROUP_SETTINGS = ({'alpha': 0.5, 'action': 0.0},)


def run_episode(policy, world: SimWorld, task: str, split: str, seed: int,
                steps: int = EPISODE_STEPS, replan_steps: int = REPLAN_STEPS,
                camera: str = CAMERA) -> Dict[str, object]:
    """One closed-loop episode: reset, then observe -> predict -> execute ``replan_steps``.

    :param policy: a :class:`~retain_ros.policies.base.Policy` (``predict`` and
        ``control_period``), or any object with those two.
    :param world: the world (reset here).
    :param task: task name.
    :param split: split name.
    :param seed: scene seed.
    :param steps: maximum control steps.
    :param replan_steps: actions executed per chunk.
    :param camera: camera slot name for the observation.
    :return: ``{'task', 'split', 'seed', 'variation', 'success', 'steps', 'chunks'}``.
    """
    info = world.reset(task, split, seed)
    if hasattr(policy, 'reset'):
        policy.reset()
    dt = float(policy.control_period)
    done, chunks = 0, 0
    while done < steps and not world.success():
        obs = Observation(images={camera: world.render()}, instruction=info.instruction,
                          state=world.joint_positions())
        chunk = policy.predict(obs)
        chunks += 1
        for action in np.asarray(chunk.actions)[:max(1, int(replan_steps))]:
            world.set_joint_targets(action)
            world.step(dt)
            done += 1
            if world.success() or done >= steps:
                break
    return {'task': info.task, 'split': split, 'seed': int(seed),
            'variation': info.variation_tag, 'success': bool(world.success()),
            'steps': done, 'chunks': chunks}


def evaluate_split(policy, split: str, episodes: int, seed_offset: int = 0,
                   image_size: int = 96, progress: Optional[Callable[[int], None]] = None,
                   **kwargs) -> List[Dict[str, object]]:
    """Run ``episodes`` episodes of ``split``, cycling over its tasks.

    Episode ``i`` runs scene seed ``seed_offset + i``.

    :return: the episode dicts of :func:`run_episode`.
    """
    world = SimWorld(image_size=image_size)
    tasks = tasks_for_split(split)
    results = []
    for i in range(int(episodes)):
        results.append(run_episode(policy, world, tasks[i % len(tasks)], split,
                                   seed_offset + i, **kwargs))
        if progress is not None:
            progress(1)
    return results


def load_pair(pretrained_dir: str, finetuned_dir: str, alpha: float = 0.0,
              noise_seed: int = 0):
    """Return the policy and its live merger, exactly as the policy node builds them.

    :func:`retain_ros.policies.loader.load_merged_policy`: the model, its normalization
    statistics and tokenizer come from the FINETUNED checkpoint; a
    :class:`~retain_ros.merging.live.LiveMerger` writes ``(1 - a) * pretrained + a * finetuned``
    into its parameters in place (``a`` is the weight on the FINETUNED model; parameter groups
    from :mod:`retain_ros.merging.groups`).

    :return: ``(policy, merger)``.
    """
    from retain_ros.merging.spec import MergeSpec
    from retain_ros.policies.loader import load_merged_policy

    return load_merged_policy(pretrained_dir, [finetuned_dir], MergeSpec(alpha=float(alpha)),
                              device='cpu', dtype='float32', keep_sources='device',
                              noise_seed=noise_seed, warmup=False)


def merge_spec(setting: Dict[str, float]):
    """Return the :class:`~retain_ros.merging.spec.MergeSpec` of a sweep setting.

    :param setting: ``{'alpha': a}`` plus optional per-group overrides, e.g.
        ``{'alpha': 1.0, 'language': 0.5}``.
    """
    from retain_ros.merging.spec import MergeSpec

    return MergeSpec.parse(setting)


def alpha_sweep(policy, merger, settings: Sequence[Dict[str, float]], episodes: Dict[str, int],
                seed_offset: int = 0, progress: Optional[Callable[[int], None]] = None,
                **kwargs) -> List[Dict[str, object]]:
    """Success rate per merge setting and split.

    :param policy: the policy whose module ``merger`` rewrites.
    :param merger: a :class:`~retain_ros.merging.live.LiveMerger` (``apply(MergeSpec)``), e.g.
        from :func:`load_pair`.
    :param settings: e.g. ``[{'alpha': 0.0}, {'alpha': 1.0, 'language': 0.8}]``.
    :param episodes: split -> episodes per setting.
    :param seed_offset: first evaluation scene seed (keep it apart from training seeds).
    :param progress: optional callable ``progress(n)`` per episode.
    :return: one row per (setting, split): ``{'setting', 'split', 'successes', 'episodes',
        'rate'}``.
    """
    rows = []
    for setting in settings:
        merger.apply(merge_spec(setting))
        for split, n in episodes.items():
            results = evaluate_split(policy, split, n, seed_offset, progress=progress, **kwargs)
            wins = sum(r['success'] for r in results)
            rows.append({'setting': dict(setting), 'split': split,
                         'successes': wins, 'episodes': len(results),
                         'rate': wins / max(1, len(results))})
    return rows
