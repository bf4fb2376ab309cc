"""Scripted demonstrations for the demo policies: (image, instruction, state, action chunk).

The expert (:mod:`retain_ros.sim.expert`) is rolled out in the simulated world; with a small
probability per step the *executed* command is perturbed (the recorded label stays the expert's
chunk from the state actually reached), so the data covers states off the expert's path and the
policy learns to recover from its own errors (DART-style noise injection).
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import List
from typing import Sequence

import numpy as np

from retain_ros.sim.expert import expert_chunk
from retain_ros.sim.expert import EXPERT_VELOCITY
from retain_ros.sim.expert import goal_joints
from retain_ros.sim.tasks import get_task
from retain_ros.sim.world import HOME
from retain_ros.sim.world import SimWorld

LOG = logging.getLogger(__name__)

#: Scene seeds of training demonstrations start here; evaluation uses seeds below it.
TRAIN_SEED_OFFSET = 100_000


@dataclass
class DemoData:
    """Demonstration samples, one per recorded control step.

    :param images: ``(N, S, S, 3)`` uint8 camera images.
    :param instructions: the distinct instruction strings.
    :param instruction_index: ``(N,)`` index into ``instructions``.
    :param states: ``(N, D)`` float32 joint positions.
    :param actions: ``(N, H, D)`` float32 expert joint-target chunks.
    :param episodes: number of episodes the samples came from.
    :param targets: ``(N, 2)`` float32 centre ``(x, y)`` (m) of the instructed block (the
        pointing labels, :func:`retain_ros.demo.dataset.location_bins`).
    """

    images: np.ndarray
    instructions: List[str]
    instruction_index: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    episodes: int
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.states.shape[0])


def generate_demos(tasks: Sequence[str], split: str, episodes_per_task: int, horizon: int,
                   dt: float, steps: int, image_size: int = 96, noise_prob: float = 0.3,
                   noise_std: float = 0.15, seed_offset: int = TRAIN_SEED_OFFSET,
                   progress=None, all_targets: bool = False,
                   start_spread: float = 0.0, samples_per_demo: int = 0,
                   motion_only: bool = False) -> DemoData:
    """Roll out the scripted expert and record training samples.

    :param tasks: task names (each must belong to ``split``).
    :param split: scene distribution to draw from.
    :param episodes_per_task: episodes (scenes) per task.
    :param horizon: actions per chunk.
    :param dt: control period (s).
    :param steps: control steps recorded per episode.
    :param image_size: camera image side (px).
    :param noise_prob: probability per step of perturbing the executed command.
    :param noise_std: standard deviation (rad) of that perturbation.
    :param seed_offset: first scene seed (episode ``i`` of a task uses ``seed_offset + i``).
    :param progress: optional callable ``progress(n)`` called after each scene.
    :param all_targets: demonstrate every block of each scene whose task is in ``tasks`` (the
        same scene with several instructions), not only the block of the task the scene was
        drawn for. Without it every training scene has one answer and a small policy learns to
        recognise the scene instead of reading the instruction.
    :param start_spread: start every demonstration from ``HOME`` plus a uniform offset of up
        to this many radians per joint (0: the scene's own start, near ``HOME``). From one
        start pose the joint positions along the expert's straight path give away where it is
        going, and a policy that learns that shortcut (the "copycat" problem of behaviour
        cloning with proprioception) stops looking at the image.
    :param samples_per_demo: record only this many control steps of each demonstration, drawn
        at random (0: every step). Samples of one demonstration share their scene and goal;
        for a fixed number of samples, fewer per demonstration spread them over more scenes,
        which is what teaches a small model to ground the instruction in the image rather than
        recognise its training scenes.
    :param motion_only: record only the steps on the way to the block (and 4 after), not the
        holding.
    :return: :class:`DemoData`.
    """
    world = SimWorld(image_size=image_size)
    images, states, actions, index, centres = [], [], [], [], []
    instructions: List[str] = []
    by_colour = {get_task(t).colour: get_task(t).name for t in tasks}
    episodes = 0
    for task in tasks:
        for episode in range(int(episodes_per_task)):
            seed = int(seed_offset) + episode
            world.reset(task, split, seed)
            targets = [task]
            if all_targets:
                targets += [by_colour[b.colour] for b in world.blocks[1:]
                            if b.colour in by_colour]
            for target in targets:
                info = world.reset(task, split, seed)
                if target != task:
                    info = world.retarget(target)
                if info.instruction not in instructions:
                    instructions.append(info.instruction)
                which = instructions.index(info.instruction)
                rng = np.random.default_rng([seed, which, 7])
                if start_spread > 0:
                    world.place_arm(HOME + rng.uniform(-start_spread, start_spread, HOME.shape))
                span = int(steps)
                if motion_only:
                    travel = np.max(np.abs(goal_joints(world) - world.joint_positions()))
                    span = min(span, int(np.ceil(travel / (EXPERT_VELOCITY * dt))) + 4)
                record = set(range(span))
                if 0 < samples_per_demo < span:
                    pick = np.random.default_rng([seed, which, 11])  # the rollout keeps rng
                    record = set(pick.choice(span, int(samples_per_demo), replace=False).tolist())
                for step in range(max(record) + 1):
                    chunk = expert_chunk(world, horizon, dt)
                    if step in record:
                        images.append(world.render())
                        states.append(world.joint_positions())
                        actions.append(chunk)
                        index.append(which)
                        centres.append(world.target_position())
                    command = chunk[0]
                    if rng.random() < noise_prob:
                        command = command + rng.normal(0.0, noise_std, size=command.shape)
                    world.set_joint_targets(command)
                    world.step(dt)
                episodes += 1
            if progress is not None:
                progress(1)
    return DemoData(images=np.stack(images), instructions=instructions,
                    instruction_index=np.asarray(index, np.int64),
                    states=np.asarray(states, np.float32),
                    actions=np.asarray(actions, np.float32),
                    episodes=episodes, targets=np.asarray(centres, np.float32))
