"""Offline closed-loop evaluation: SimWorld <-> policy, and an alpha sweep over merged weights.

No ROS here: this is the harness used to tune the demo (sim, data, training) and to check the
RETAIN shape quickly. The ROS demo (``retain-ros demo``) runs the same episodes through the sim
and policy nodes; the episode protocol is the same (see :func:`run_episode`).
"""
from __future__ import annotations

import logging
import re
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np
import torch

from retain_ros.policies.base import Observation
from retain_ros.sim.tasks import tasks_for_split
from retain_ros.sim.world import SimWorld

LOG = logging.getLogger(__name__)

#: Episode protocol shared with the ROS demo: at most this many control steps ...
EPISODE_STEPS = 40
#: ... executing this many actions of each chunk before asking the policy again.
REPLAN_STEPS = 5
#: Camera slot of the sim's camera.
CAMERA = 'base'

#: Parameter-name rules for the pi0 groups (runtime names of PI0ForConditionalGeneration).
_GROUP_RULES = (
    ('vision', re.compile(r'(^|\.)vlm\.(model\.)?(vision_tower|multi_modal_projector)\.')),
    ('language', re.compile(r'(^|\.)vlm\.(model\.)?language_model\.|(^|\.)vlm\.lm_head\.')),
)


def group_of(name: str) -> str:
    """Parameter group (vision / language / action) of a pi0 runtime parameter name."""
    for group, rule in _GROUP_RULES:
        if rule.search(name):
            return group
    return 'action'


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
    """Run ``episodes`` episodes of ``split``, cycling over its tasks (seeds from
    ``seed_offset``).

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


class StateDictInterpolator:
    """Write ``(1 - a_g) * pre + a_g * ft`` into a module's parameters, in place.

    A small stand-in for :class:`retain_ros.merging.live.LiveMerger` used by the offline harness
    (same alpha convention: ``a`` is the weight on the FINETUNED model; groups by
    :func:`group_of`).

    :param module: the module whose parameters are rewritten.
    :param pretrained: state dict of the pretrained model (runtime names).
    :param finetuned: state dict of the finetuned model (runtime names).
    """

    def __init__(self, module: torch.nn.Module, pretrained: Dict[str, torch.Tensor],
                 finetuned: Dict[str, torch.Tensor]):
        own = module.state_dict()
        missing = sorted(set(own) - set(pretrained)) + sorted(set(own) - set(finetuned))
        if missing:
            raise KeyError(f'state dicts lack {missing[:5]}')
        self.module = module
        self.pretrained = {k: pretrained[k].detach().float().clone() for k in own}
        self.finetuned = {k: finetuned[k].detach().float().clone() for k in own}

    @torch.no_grad()
    def apply(self, alpha: float, **group_alpha: Optional[float]) -> Dict[str, float]:
        """Set the merged weights.

        :param alpha: weight on the finetuned model.
        :param group_alpha: per-group overrides (``vision=``, ``language=``, ``action=``).
        :return: the effective alpha per group.
        """
        alphas = {g: float(alpha if group_alpha.get(g) is None else group_alpha[g])
                  for g in ('vision', 'language', 'action')}
        for name, tensor in self.module.state_dict(keep_vars=True).items():
            a = alphas[group_of(name)]
            pre, ft = self.pretrained[name], self.finetuned[name]
            if not torch.is_floating_point(tensor):
                tensor.copy_(ft.to(tensor.dtype))
                continue
            tensor.data.copy_(torch.lerp(pre, ft, a).to(tensor.dtype))
        return alphas


def alpha_sweep(policy, merger, settings: Sequence[Dict[str, float]], episodes: Dict[str, int],
                seed_offset: int = 0, progress: Optional[Callable[[int], None]] = None,
                **kwargs) -> List[Dict[str, object]]:
    """Success rate per merge setting and split.

    :param policy: the policy whose module ``merger`` rewrites.
    :param merger: object with ``apply(alpha, **group_alpha)``.
    :param settings: e.g. ``[{'alpha': 0.0}, {'alpha': 1.0, 'language': 0.8}]``.
    :param episodes: split -> episodes per setting.
    :param seed_offset: first evaluation scene seed (keep it apart from training seeds).
    :param progress: optional callable ``progress(n)`` per episode.
    :return: one row per (setting, split): ``{'setting', 'split', 'successes', 'episodes',
        'rate'}``.
    """
    rows = []
    for setting in settings:
        setting = dict(setting)
        alpha = setting.pop('alpha')
        merger.apply(alpha, **setting)
        for split, n in episodes.items():
            results = evaluate_split(policy, split, n, seed_offset, progress=progress, **kwargs)
            wins = sum(r['success'] for r in results)
            rows.append({'setting': dict(alpha=alpha, **setting), 'split': split,
                         'successes': wins, 'episodes': len(results),
                         'rate': wins / max(1, len(results))})
    return rows
