"""Scripted expert: inverse kinematics to the target block, then a synchronized joint-space move.

The expert produces the same thing a policy does -- a chunk of absolute joint targets, one per
control period -- so its demonstrations train a policy directly.
"""
from __future__ import annotations

import logging
from typing import Dict
from typing import List

import numpy as np

from retain_ros.sim.world import inverse_kinematics
from retain_ros.sim.world import MAX_VELOCITY
from retain_ros.sim.world import SimWorld

LOG = logging.getLogger(__name__)

#: The expert moves a little slower than the controller allows, so the sim tracks it exactly.
EXPERT_VELOCITY = 0.9 * MAX_VELOCITY


def goal_joints(world: SimWorld) -> np.ndarray:
    """Joint positions that put the gripper on the current task's target block."""
    return inverse_kinematics(world.target_position())


def expert_chunk(world: SimWorld, horizon: int, dt: float,
                 start: np.ndarray = None) -> np.ndarray:
    """Return the expert's next ``horizon`` joint targets from ``start`` (default: current joints).

    All joints move together along a straight line in joint space, the fastest joint at
    :data:`EXPERT_VELOCITY`; once at the goal the targets stay there.

    :param world: the world (its target block and joint positions are read).
    :param horizon: number of actions.
    :param dt: control period (s).
    :param start: joint positions to plan from.
    :return: ``(horizon, 3)`` float64 array; row ``i`` is the target for time ``(i + 1) * dt``.
    """
    goal = goal_joints(world)
    q = world.joint_positions() if start is None else np.asarray(start, np.float64).copy()
    step = EXPERT_VELOCITY * float(dt)
    out = np.empty((int(horizon), q.shape[0]))
    for i in range(int(horizon)):
        delta = goal - q
        biggest = float(np.max(np.abs(delta)))
        if biggest > step:
            delta = delta * (step / biggest)
        q = q + delta
        out[i] = q
    return out


def run_expert_episode(world: SimWorld, task: str, split: str, seed: int, horizon: int,
                       dt: float, max_steps: int, replan_steps: int = 0,
                       image_every: int = 1) -> Dict[str, object]:
    """Roll out the expert in ``world`` and record (image, state, action chunk) samples.

    :param world: the world to use (it is reset).
    :param task: task name.
    :param split: split name.
    :param seed: scene seed.
    :param horizon: actions per chunk.
    :param dt: control period (s).
    :param max_steps: control steps in the episode.
    :param replan_steps: unused by the expert itself (it replans every step); kept for symmetry.
    :param image_every: record one sample every this many steps.
    :return: ``{'info', 'images', 'states', 'actions', 'success'}``; ``images`` ``(N, S, S, 3)``
        uint8, ``states`` ``(N, 3)``, ``actions`` ``(N, horizon, 3)``.
    """
    info = world.reset(task, split, seed)
    images: List[np.ndarray] = []
    states: List[np.ndarray] = []
    actions: List[np.ndarray] = []
    for t in range(int(max_steps)):
        chunk = expert_chunk(world, horizon, dt)
        if t % max(1, int(image_every)) == 0:
            images.append(world.render())
            states.append(world.joint_positions())
            actions.append(chunk)
        world.set_joint_targets(chunk[0])
        world.step(dt)
    return {'info': info, 'images': np.stack(images), 'states': np.stack(states),
            'actions': np.stack(actions), 'success': world.success()}
