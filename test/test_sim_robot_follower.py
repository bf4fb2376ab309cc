"""The joint-trajectory follower of the sim robot (pure Python, no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.control.trajectory_follower import TrajectoryError
from retain_ros.control.trajectory_follower import TrajectoryFollower

NAMES = ['a', 'b', 'c']


def test_holds_initial_until_commanded():
    f = TrajectoryFollower(NAMES, [1.0, 2.0, 3.0])
    assert not f.active and f.done(0.0)
    np.testing.assert_allclose(f.sample(123.0), [1, 2, 3])


def test_linear_interpolation_from_current_position():
    f = TrajectoryFollower(NAMES)
    n = f.set_trajectory(NAMES, [(1.0, [1.0, 2.0, 3.0]), (3.0, [3.0, 2.0, 1.0])], start=10.0,
                         current=[0.0, 0.0, 0.0])
    assert n == 2 and f.active and f.end_time == 13.0
    np.testing.assert_allclose(f.sample(9.0), [0, 0, 0])     # before start: hold
    np.testing.assert_allclose(f.sample(10.5), [0.5, 1.0, 1.5])
    np.testing.assert_allclose(f.sample(11.0), [1, 2, 3])
    np.testing.assert_allclose(f.sample(12.0), [2, 2, 2])
    np.testing.assert_allclose(f.sample(99.0), [3, 2, 1])     # after end: hold last
    assert not f.done(12.9) and f.done(13.0)
    f.settle(14.0)
    assert not f.active
    np.testing.assert_allclose(f.sample(15.0), [3, 2, 1])


def test_reorders_and_keeps_unnamed_joints():
    f = TrajectoryFollower(NAMES, [5.0, 5.0, 5.0])
    f.set_trajectory(['c', 'a'], [(2.0, [30.0, 10.0])], start=0.0, current=[4.0, 4.0, 4.0])
    # named joints start where they are (4), the unnamed one keeps its set-point (5)
    np.testing.assert_allclose(f.sample(0.0), [4.0, 5.0, 4.0])
    np.testing.assert_allclose(f.sample(2.0), [10.0, 5.0, 30.0])
    np.testing.assert_allclose(f.sample(1.0), [7.0, 5.0, 17.0])


def test_new_trajectory_replaces_active_one():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(10.0, [10.0, 10.0, 10.0])], start=0.0, current=[0, 0, 0])
    f.set_trajectory(NAMES, [(1.0, [-1.0, -1.0, -1.0])], start=5.0, current=[4.0, 4.0, 4.0])
    np.testing.assert_allclose(f.sample(5.0), [4, 4, 4])
    np.testing.assert_allclose(f.sample(5.5), [1.5, 1.5, 1.5])
    np.testing.assert_allclose(f.sample(50.0), [-1, -1, -1])


def test_point_at_time_zero_and_empty_trajectory():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(0.0, [1.0, 1.0, 1.0]), (1.0, [2.0, 2.0, 2.0])], start=0.0,
                     current=[0, 0, 0])
    np.testing.assert_allclose(f.sample(0.0), [1, 1, 1])
    np.testing.assert_allclose(f.sample(0.5), [1.5, 1.5, 1.5])
    assert f.set_trajectory(NAMES, [], start=0.2, current=[7.0, 7.0, 7.0]) == 0
    assert not f.active
    np.testing.assert_allclose(f.sample(3.0), [7, 7, 7])


def test_direct_command_cancels_trajectory():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 1.0, 1.0])], start=0.0, current=[0, 0, 0])
    f.set_target([0.5, 0.25, 0.0])
    assert not f.active
    np.testing.assert_allclose(f.sample(0.5), [0.5, 0.25, 0.0])


@pytest.mark.parametrize('names,points,match', [
    (['a', 'x'], [(1.0, [0, 0])], 'unknown joint'),
    (['a', 'a'], [(1.0, [0, 0])], 'repeated'),
    ([], [(1.0, [])], 'no joint_names'),
    (NAMES, [(1.0, [0, 0])], '2 positions for 3'),
    (NAMES, [(1.0, [0, float('nan'), 0])], 'non-finite'),
    (NAMES, [(-1.0, [0, 0, 0])], 'negative'),
    (NAMES, [(1.0, [0, 0, 0]), (1.0, [1, 1, 1])], 'not after'),
])
def test_rejects_bad_trajectories_and_keeps_active(names, points, match):
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 1.0, 1.0])], start=0.0, current=[0, 0, 0])
    with pytest.raises(TrajectoryError, match=match):
        f.set_trajectory(names, points, start=0.0, current=[0, 0, 0])
    np.testing.assert_allclose(f.sample(1.0), [1, 1, 1])


def test_rejects_bad_commands():
    f = TrajectoryFollower(NAMES)
    with pytest.raises(TrajectoryError):
        f.set_target([1.0, 2.0])
    with pytest.raises(TrajectoryError):
        f.set_target([1.0, 2.0, float('inf')])
    with pytest.raises(ValueError):
        TrajectoryFollower(['a', 'a'])
