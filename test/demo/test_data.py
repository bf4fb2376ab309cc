"""Scripted demonstrations of the demo (:mod:`retain_ros.demo.data`) and the scenes they use."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.demo.data import generate_demos
from retain_ros.sim import SimWorld


def test_demos_are_seeded():
    a = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=3)
    b = generate_demos(['reach_red'], 'generalist', 1, horizon=4, dt=0.1, steps=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.actions.shape == (3, 4, 3) and a.instructions == ['touch the red block']


def test_all_targets_demonstrates_every_block_of_a_scene():
    one = generate_demos(['reach_red', 'reach_blue'], 'generalist', 2, horizon=4, dt=0.1,
                         steps=2)
    every = generate_demos(['reach_red', 'reach_blue'], 'generalist', 2, horizon=4, dt=0.1,
                           steps=2, all_targets=True)
    assert one.episodes == 4 and one.images.shape[1:] == (96, 96, 3)
    assert every.episodes > one.episodes and len(every) == 2 * every.episodes
    # a scene demonstrated for another instruction starts from the same image and state
    for start in range(0, len(every), 2):
        same = [s for s in range(0, len(every), 2)
                if np.array_equal(every.images[s], every.images[start])]
        if len(same) > 1:
            assert len({int(every.instruction_index[s]) for s in same}) == len(same)
            np.testing.assert_array_equal(every.states[same[0]], every.states[same[1]])
            break
    else:
        raise AssertionError('no scene was demonstrated twice')


def test_start_spread_varies_the_start_pose_only():
    from retain_ros.sim.world import HOME

    near = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=2)
    wide = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=2,
                          start_spread=1.0)
    assert np.abs(near.states[::2] - HOME).max() <= 0.1 + 1e-6
    assert np.abs(wide.states[::2] - HOME).max() > 0.3
    np.testing.assert_array_equal(near.targets, wide.targets)   # same scenes
    again = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=2,
                           start_spread=1.0)
    np.testing.assert_array_equal(wide.states, again.states)


def test_samples_per_demo_spreads_samples_over_scenes():
    every = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=6)
    two = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=6,
                         samples_per_demo=2)
    assert len(every) == 18 and len(two) == 6 and two.episodes == every.episodes == 3
    # each kept sample is one of that demonstration's samples (same rollout, fewer records)
    for i in range(len(two)):
        demo = i // 2
        rows = every.states[6 * demo:6 * demo + 6]
        assert any(np.array_equal(two.states[i], row) for row in rows)
    again = generate_demos(['reach_red'], 'generalist', 3, horizon=4, dt=0.1, steps=6,
                           samples_per_demo=2)
    np.testing.assert_array_equal(two.states, again.states)


def test_motion_only_records_the_way_to_the_block():
    from retain_ros.sim.world import end_effector

    def distances(data):
        return np.array([np.linalg.norm(end_effector(q) - t)
                         for q, t in zip(data.states, data.targets)])

    common = dict(horizon=4, dt=0.1, steps=30, all_targets=True, start_spread=1.0)
    tasks = ['reach_red', 'reach_blue']
    # motion only: the samples come from the way to the block, not from holding on it
    every = generate_demos(tasks, 'generalist', 6, **common)
    moving = generate_demos(tasks, 'generalist', 6, motion_only=True, **common)
    assert len(moving) < len(every)
    assert np.mean(distances(moving) < 0.05) < 0.5 * np.mean(distances(every) < 0.05)


def test_place_arm_keeps_the_scene():
    w = SimWorld(image_size=32)
    w.reset('reach_red', 'generalist', 4)
    blocks = w.blocks
    w.place_arm([0.5, 1.0, 9.0])
    assert w.joint_positions().tolist() == [0.5, 1.0, 2.8]     # clipped to the limit
    assert w.joint_targets().tolist() == w.joint_positions().tolist()
    assert w.blocks == blocks and not w.success()
    with pytest.raises(ValueError, match='finite'):
        w.place_arm([0.0, float('nan'), 0.0])


def test_second_task_scenes():
    world = SimWorld()
    info = world.reset('touch the cyan block', 'second_id', 3)
    assert info.task == 'reach_cyan' and 'pos:narrow' in info.variation_tag
    assert 'pos:broad' in world.reset('reach_cyan', 'second_ood', 3).variation_tag
    with pytest.raises(ValueError, match='splits'):
        world.reset('reach_cyan', 'new_id', 0)
