"""Simulated robot: determinism, kinematics, limits, success test, scripted expert."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.sim import SimWorld
from retain_ros.sim import SPLITS
from retain_ros.sim import TASKS
from retain_ros.sim import tasks_for_split
from retain_ros.sim.expert import expert_chunk
from retain_ros.sim.expert import run_expert_episode
from retain_ros.sim.world import end_effector
from retain_ros.sim.world import HOLD_TIME
from retain_ros.sim.world import inverse_kinematics
from retain_ros.sim.world import jacobian
from retain_ros.sim.world import LOWER_LIMITS
from retain_ros.sim.world import MAX_VELOCITY
from retain_ros.sim.world import OOD_EXCLUDED_ANGLES
from retain_ros.sim.world import UPPER_LIMITS


def _rollout(world, task, split, seed, steps=12):
    info = world.reset(task, split, seed)
    images, states = [world.render()], [world.joint_positions()]
    for _ in range(steps):
        world.set_joint_targets(expert_chunk(world, 5, 0.1)[0])
        world.step(0.1)
        images.append(world.render())
        states.append(world.joint_positions())
    return info, np.stack(images), np.stack(states)


def test_api_shapes():
    world = SimWorld(image_size=64)
    assert world.joint_names == ['shoulder_joint', 'elbow_joint', 'wrist_joint']
    assert world.lower_limits.shape == world.upper_limits.shape == (3,)
    assert np.all(world.lower_limits < world.upper_limits)
    image = world.render()
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    info = world.reset('reach_yellow', 'new_id', 1)
    assert info.instruction == world.instruction == TASKS['reach_yellow'].instruction
    assert info.split == 'new_id' and info.seed == 1 and info.task == 'reach_yellow'
    assert ';' not in info.variation_tag and '=' not in info.variation_tag
    # an instruction names its task too
    assert world.reset(TASKS['reach_red'].instruction, None, 0).task == 'reach_red'


def test_new_tasks_use_the_generalist_phrasing():
    # only the colour word is new: the finetune has a new object to learn, not a new sentence
    template = TASKS['reach_red'].instruction.replace('red', '{}')
    for name in ('reach_yellow', 'reach_cyan'):
        task = TASKS[name]
        assert task.instruction == template.format(task.colour)


def test_splits_and_errors():
    assert set(SPLITS) == {'generalist', 'new_id', 'new_ood'}
    assert 'reach_yellow' not in tasks_for_split('generalist')
    assert tasks_for_split('new_id') == tasks_for_split('new_ood') == ['reach_yellow']
    world = SimWorld()
    with pytest.raises(ValueError):
        world.reset('reach_red', 'new_ood', 0)
    with pytest.raises(ValueError):
        world.reset('fly to the moon', 'generalist', 0)
    with pytest.raises(ValueError):
        world.set_joint_targets([0.0, float('nan'), 0.0])
    with pytest.raises(ValueError):
        world.set_joint_targets([0.0, 0.0])


@pytest.mark.parametrize('split', SPLITS)
def test_determinism(split):
    task = tasks_for_split(split)[-1]
    a = _rollout(SimWorld(), task, split, 7)
    b = _rollout(SimWorld(), task, split, 7)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    c = _rollout(SimWorld(), task, split, 8)
    assert not np.array_equal(a[1][0], c[1][0])


def test_ood_variations_differ_from_narrow_setting():
    world = SimWorld()
    sides = []
    for seed in range(20):
        world.reset('reach_yellow', 'new_id', seed)
        assert world.info.variation_tag.startswith('pos:narrow,bg:default,light:1.00')
        target, distractor = world.blocks
        # one band, the target and the distractor on its two sides in random order
        assert target.x * distractor.x < 0
        sides.append(target.x < 0)
        world.reset('reach_yellow', 'new_ood', seed)
        x, y = world.target_position()
        angle = abs(np.arctan2(-x, y))
        assert not OOD_EXCLUDED_ANGLES[0] <= angle <= OOD_EXCLUDED_ANGLES[1]
        assert 'pos:broad' in world.info.variation_tag
    assert 5 <= sum(sides) <= 15


def test_kinematics_and_limits():
    rng = np.random.default_rng(0)
    for _ in range(50):
        radius, angle = rng.uniform(0.45, 0.95), rng.uniform(-1.1, 1.1)
        target = np.array([-radius * np.sin(angle), radius * np.cos(angle)])
        q = inverse_kinematics(target)
        assert np.linalg.norm(end_effector(q) - target) < 1e-6
    world = SimWorld()
    world.set_joint_targets([10.0, -10.0, 10.0])
    np.testing.assert_array_equal(world.joint_targets(),
                                  [world.upper_limits[0], world.lower_limits[1],
                                   world.upper_limits[2]])
    before = world.joint_positions()
    world.step(0.1)
    assert np.all(np.abs(world.joint_positions() - before) <= MAX_VELOCITY * 0.1 + 1e-12)
    for _ in range(100):
        world.step(0.1)
    np.testing.assert_allclose(world.joint_positions(), world.joint_targets())


def test_success_needs_hold_on_target_block():
    world = SimWorld()
    world.reset('reach_blue', 'generalist', 3)
    goal = inverse_kinematics(world.target_position())
    world.set_joint_targets(goal)
    for _ in range(100):
        world.step(0.05)
        if world.on_target():
            break
    assert world.on_target() and not world.success()
    world.step(HOLD_TIME + 0.01)
    assert world.success()
    # the wrong block does not count
    world.reset('reach_blue', 'generalist', 3)
    wrong = world.blocks[1]
    world.set_joint_targets(inverse_kinematics(np.array([wrong.x, wrong.y])))
    for _ in range(60):
        world.step(0.1)
    assert not world.success()


@pytest.mark.parametrize('split', SPLITS)
def test_expert_solves_every_task(split):
    world = SimWorld()
    for task in tasks_for_split(split):
        for seed in range(3):
            episode = run_expert_episode(world, task, split, seed, horizon=10, dt=0.1,
                                         max_steps=40)
            assert episode['success'], (task, split, seed)
            assert episode['actions'].shape == (40, 10, 3)
            assert episode['images'].shape == (40, 96, 96, 3)


def test_retarget_keeps_the_scene_and_changes_the_target():
    world = SimWorld()
    info = world.reset('reach_red', 'generalist', 5)
    image, q = world.render(), world.joint_positions()
    colours = sorted(b.colour for b in world.blocks)
    other = world.blocks[1]
    new = world.retarget(f'reach_{other.colour}')
    assert new.task == f'reach_{other.colour}' and new.instruction == world.instruction
    assert (new.split, new.seed, new.variation_tag) == (info.split, info.seed,
                                                        info.variation_tag)
    np.testing.assert_array_equal(world.target_position(), [other.x, other.y])
    np.testing.assert_array_equal(world.render(), image)
    np.testing.assert_array_equal(world.joint_positions(), q)
    assert sorted(b.colour for b in world.blocks) == colours
    with pytest.raises(ValueError, match='no yellow block'):
        world.retarget('reach_yellow')


def _finite_difference_jacobian(q, eps=1e-6):
    columns = []
    for j in range(3):
        step = np.zeros(3)
        step[j] = eps
        columns.append((end_effector(q + step) - end_effector(q - step)) / (2.0 * eps))
    return np.stack(columns, axis=1)


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    poses = [np.zeros(3), np.array([0.0, 2.6, -1.0]), LOWER_LIMITS, UPPER_LIMITS]
    poses += [rng.uniform(LOWER_LIMITS, UPPER_LIMITS) for _ in range(50)]
    for q in poses:
        jac = jacobian(q)
        assert jac.shape == (2, 3)
        np.testing.assert_allclose(jac, _finite_difference_jacobian(q), atol=1e-8)
    # straight arm along +y: every joint swings the gripper toward -x, by its lever arm
    np.testing.assert_allclose(jacobian(np.zeros(3)), [[-1.02, -0.6, -0.24], [0.0, 0.0, 0.0]],
                               atol=1e-12)
