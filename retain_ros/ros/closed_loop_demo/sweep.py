"""The demo sweep: which alpha settings, scenes and episodes ``retain-ros demo`` runs, in order.

The demo sweep runs every alpha setting on the same scenes (paired comparison) through the real
ROS graph; its episode order is shuffled with a fixed seed so that drift over the run does not
favour one setting. It uses the same settings and episode protocol as the offline sweep of
:mod:`retain_ros.demo.rollout` (which runs the policy in-process, without ROS). No rclpy here.
"""
from __future__ import annotations

from dataclasses import dataclass
import random
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.demo import rollout
from retain_ros.evaluation.schedule import describe
from retain_ros.evaluation.schedule import parse_settings
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.sim.tasks import SPLITS
from retain_ros.sim.tasks import tasks_for_split
from retain_ros.sim.world import JOINT_NAMES
from retain_ros.sim.world import LOWER_LIMITS
from retain_ros.sim.world import UPPER_LIMITS

#: Alpha settings of the default demo sweep (the offline sweep's): global alphas, the
#: language-only merge, per-group settings (``;``-separated).
DEFAULT_ALPHAS = ','.join(f'{a:g}' for a in rollout.SWEEP_ALPHAS)
DEFAULT_LANGUAGE_ONLY = rollout.SWEEP_LANGUAGE_ONLY
DEFAULT_GROUP_SETTINGS = ';'.join(','.join(f'{k}={v:g}' for k, v in setting.items())
                                  for setting in rollout.SWEEP_GROUP_SETTINGS)
#: the splits the demo runs by default (the report's three columns)
DEFAULT_SPLITS = SPLITS
#: Episode protocol (the offline sweep's): control period, replanning, episode length.
CONTROL_PERIOD = 0.1
REPLAN_STEPS = rollout.REPLAN_STEPS
EPISODE_TIMEOUT = rollout.EPISODE_STEPS * CONTROL_PERIOD
#: the sim robot's camera topic (raw images)
CAMERA_TOPIC = 'camera/image_raw'


class DemoError(RuntimeError):
    """The demo could not run (a node failed to start, a service did not answer, ...)."""


@dataclass(frozen=True)
class EpisodePlan:
    """One planned episode: the alpha setting, the scene and its seed."""

    params: Dict[str, float]
    split: str
    task: str
    seed: int

    @property
    def label(self) -> str:
        return describe(self.params)


def build_settings(alphas: str, language_only: Optional[float],
                   group_settings: str = '') -> List[Dict[str, float]]:
    """Return the alpha settings of the demo sweep as node parameters (``alpha``, ...).

    :param alphas: comma-separated global alphas, e.g. ``'0,0.5,1'``.
    :param language_only: alpha of the language group with the others finetuned (RETAIN's
        'merge only the language model'); None or a negative value to leave it out.
    :param group_settings: more settings, ``;``-separated, each in the syntax of
        :func:`~retain_ros.evaluation.schedule.parse_setting` (``'alpha=0.5,action=0'``).
    :raises DemoError: a setting is malformed or repeats another's weights.
    """
    settings = [a for a in alphas.split(',') if a.strip()]
    if language_only is not None and language_only >= 0:
        settings.append(f'alpha=1,language={language_only:g}')
    settings += [g for g in group_settings.split(';') if g.strip()]
    try:
        return parse_settings(settings)
    except ScheduleError as exc:
        raise DemoError(str(exc)) from exc


def parse_splits(text: str) -> List[str]:
    """Return the splits of ``--splits`` (comma-separated), in the order given.

    :raises DemoError: an unknown split, a repeated one, or none.
    """
    splits = [s.strip() for s in text.split(',') if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits or len(set(splits)) != len(splits):
        raise DemoError(f'--splits {text!r}: give distinct splits out of {",".join(SPLITS)}')
    return splits


def split_scenes(split: str, episodes: int, seed: int) -> List[Tuple[str, str, int]]:
    """Return the demo's scenes of one split: ``(split, task, scene seed)``, seeds ``seed*1000+k``.

    Generalist episodes cycle through the generalist tasks. The fixed sweep and the adaptive
    one (:mod:`.adaptive`) draw their scenes from here, so they run the same scenes.

    :param split: one of :data:`~retain_ros.sim.tasks.SPLITS`.
    :param episodes: how many scenes.
    :param seed: the demo's ``--seed``.
    """
    tasks = tasks_for_split(split)
    return [(split, tasks[k % len(tasks)], seed * 1000 + k) for k in range(episodes)]


def build_plan(settings: Sequence[Dict[str, float]], episodes: int, seed: int,
               splits: Sequence[str] = SPLITS) -> List[EpisodePlan]:
    """Return every setting x split x episode, the same scenes for every setting, shuffled."""
    scenes = [scene for split in splits for scene in split_scenes(split, episodes, seed)]
    plan = [EpisodePlan(dict(p), split, task, scene_seed)
            for p in settings for split, task, scene_seed in scenes]
    random.Random(seed).shuffle(plan)
    return plan


def policy_params(pretrained: str, finetuned: str, episode_log: str,
                  camera_topic: str = CAMERA_TOPIC, **more) -> Dict[str, object]:
    """Return the policy node's parameters for the sim robot and the demo's episode protocol.

    :param pretrained: pretrained checkpoint path.
    :param finetuned: finetuned checkpoint path.
    :param episode_log: the node's episode log (JSON lines).
    :param camera_topic: the camera topic the node subscribes to.
    :param more: further parameters (``device``, ``embodiment``, ``record``, ...).
    """
    params = {
        'pretrained_path': pretrained, 'finetuned_paths': [finetuned],
        'camera_topics': [camera_topic], 'joint_names': list(JOINT_NAMES),
        'joint_lower_limits': [float(v) for v in LOWER_LIMITS],
        'joint_upper_limits': [float(v) for v in UPPER_LIMITS],
        'control_period': CONTROL_PERIOD, 'replan_steps': REPLAN_STEPS,
        'episode_log': episode_log, 'alpha': 1.0}
    params.update(more)
    return params
