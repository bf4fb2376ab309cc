"""The JTC-exact trajectory follower of the sim robot (pure Python, no ROS).

Each case mirrors a rule of ros2_control's joint_trajectory_controller (Jazzy):
``validate_trajectory_msg`` on receipt, ``Trajectory::sample`` and the update's
``command_next_`` (sampled one period ahead).
"""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.sim.trajectory_follower import TrajectoryError
from retain_ros.sim.trajectory_follower import TrajectoryFollower

NAMES = ['a', 'b', 'c']
ZERO = [0.0, 0.0, 0.0]


def test_holds_initial_until_commanded():
    f = TrajectoryFollower(NAMES, [1.0, 2.0, 3.0])
    assert not f.active and f.done(0.0)
    np.testing.assert_allclose(f.update(123.0, ZERO, 0.02), [1, 2, 3])


def test_stamp_zero_starts_at_the_first_update_from_the_measured_state():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 2.0, 3.0]), (3.0, [3.0, 2.0, 1.0])], stamp=0.0,
                     now=10.0)
    assert f.active and f.start_time is None          # pending until the controller updates
    np.testing.assert_allclose(f.update(10.5, [0.5, 0.5, 0.5]), [0.5, 0.5, 0.5])
    assert f.start_time == 10.5 and f.end_time == 13.5
    # from the state at 10.5 towards the first point at 11.5, linearly
    np.testing.assert_allclose(f.sample(11.0), [0.75, 1.25, 1.75])
    np.testing.assert_allclose(f.sample(11.5), [1, 2, 3])
    np.testing.assert_allclose(f.sample(12.5), [2, 2, 2])
    np.testing.assert_allclose(f.sample(99.0), [3, 2, 1])     # after the end: hold the last
    assert not f.done(13.4) and f.done(13.5)
    f.settle(14.0)
    assert not f.active
    np.testing.assert_allclose(f.update(15.0, ZERO), [3, 2, 1])


def test_future_stamp_interpolates_from_current_state_towards_first_point():
    # not a hold until the stamp: JTC moves from the state at the first update straight to the
    # first point's absolute time
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [3.0, 3.0, 3.0]), (2.0, [4.0, 4.0, 4.0])], stamp=12.0,
                     now=10.0)
    np.testing.assert_allclose(f.update(10.0, ZERO), ZERO)
    np.testing.assert_allclose(f.sample(11.0), [1.0, 1.0, 1.0])       # 1/3 of the way at 11
    np.testing.assert_allclose(f.sample(12.0), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(f.sample(13.0), [3.0, 3.0, 3.0])
    np.testing.assert_allclose(f.sample(13.5), [3.5, 3.5, 3.5])


def test_points_already_in_the_past_are_skipped():
    f = TrajectoryFollower(NAMES)
    pts = [(0.1 * (i + 1), [float(i + 1)] * 3) for i in range(10)]   # 1 .. 10 at 0.1 .. 1.0 s
    f.set_trajectory(NAMES, pts, stamp=100.0, now=100.55)
    # the first update at 100.55 samples between points 5 (100.5) and 6 (100.6): 5.5, not the
    # current state (0) and not point 1
    np.testing.assert_allclose(f.update(100.55, ZERO), [5.5, 5.5, 5.5])
    np.testing.assert_allclose(f.update(100.6, ZERO), [6, 6, 6])


def test_command_is_sampled_one_period_ahead():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 1.0, 1.0])], stamp=0.0, now=0.0)
    np.testing.assert_allclose(f.update(0.0, ZERO, period=0.1), [0.1] * 3)
    np.testing.assert_allclose(f.update(0.1, ZERO, period=0.1), [0.2] * 3)
    np.testing.assert_allclose(f.update(0.5, ZERO, period=0.0), [0.5] * 3)  # Humble


def test_trajectory_ending_in_the_past_is_rejected_and_active_one_kept():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 1.0, 1.0])], stamp=0.0, now=0.0)
    f.update(0.0, ZERO)
    with pytest.raises(TrajectoryError, match='ends in the past'):
        f.set_trajectory(NAMES, [(0.5, [9.0, 9.0, 9.0])], stamp=5.0, now=5.6)
    np.testing.assert_allclose(f.update(0.5, ZERO), [0.5] * 3)
    # ending exactly now is still accepted; stamp 0 is never late
    assert f.set_trajectory(NAMES, [(0.5, [2.0, 2.0, 2.0])], stamp=5.0, now=5.5) == 1
    assert f.set_trajectory(NAMES, [(0.5, [2.0, 2.0, 2.0])], stamp=0.0, now=1e9) == 1


def test_new_trajectory_replaces_the_active_one_at_the_next_update():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(10.0, [10.0, 10.0, 10.0])], stamp=0.0, now=0.0)
    f.update(0.0, ZERO)
    f.set_trajectory(NAMES, [(1.0, [-1.0, -1.0, -1.0])], stamp=0.0, now=4.9)
    np.testing.assert_allclose(f.sample(4.9), [4.9] * 3)       # still the old one
    np.testing.assert_allclose(f.update(5.0, [4.0, 4.0, 4.0]), [4, 4, 4])
    np.testing.assert_allclose(f.sample(5.5), [1.5, 1.5, 1.5])
    np.testing.assert_allclose(f.sample(50.0), [-1, -1, -1])


def test_interpolate_from_desired_state_uses_last_command():
    f = TrajectoryFollower(NAMES, interpolate_from_desired_state=True)
    f.set_target([1.0, 1.0, 1.0])
    f.set_trajectory(NAMES, [(1.0, [3.0, 3.0, 3.0])], stamp=0.0, now=0.0)
    np.testing.assert_allclose(f.update(0.0, [9.0, 9.0, 9.0]), [1, 1, 1])
    np.testing.assert_allclose(f.sample(0.5), [2, 2, 2])


def test_point_at_time_zero_is_reached_at_once():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(0.0, [1.0, 1.0, 1.0]), (1.0, [2.0, 2.0, 2.0])], stamp=0.0,
                     now=0.0)
    np.testing.assert_allclose(f.update(0.0, ZERO), [1, 1, 1])
    np.testing.assert_allclose(f.sample(0.5), [1.5, 1.5, 1.5])


def test_reorders_joints_and_partial_goals():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(['c', 'b', 'a'], [(2.0, [30.0, 20.0, 10.0])], stamp=0.0, now=0.0)
    f.update(0.0, [4.0, 4.0, 4.0])
    np.testing.assert_allclose(f.sample(1.0), [7.0, 12.0, 17.0])
    with pytest.raises(TrajectoryError, match='partial goals are not allowed'):
        f.set_trajectory(['c', 'a'], [(2.0, [30.0, 10.0])], stamp=0.0, now=0.0)
    p = TrajectoryFollower(NAMES, [5.0, 5.0, 5.0], allow_partial_joints_goal=True)
    p.set_trajectory(['c', 'a'], [(2.0, [30.0, 10.0])], stamp=0.0, now=0.0)
    p.update(0.0, [4.0, 4.0, 4.0])
    # named joints start where they are (4); the omitted one holds its command (5)
    np.testing.assert_allclose(p.sample(0.0), [4.0, 4.0, 4.0])
    np.testing.assert_allclose(p.sample(2.0), [10.0, 5.0, 30.0])


def test_direct_command_cancels_trajectory():
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 1.0, 1.0])], stamp=0.0, now=0.0)
    f.update(0.0, ZERO)
    f.set_target([0.5, 0.25, 0.0])
    assert not f.active
    np.testing.assert_allclose(f.update(0.5, ZERO), [0.5, 0.25, 0.0])


@pytest.mark.parametrize('names,points,match', [
    (['a', 'b', 'x'], [(1.0, [0, 0, 0])], 'unknown joint'),
    (['a', 'a', 'b'], [(1.0, [0, 0, 0])], 'repeated'),
    ([], [(1.0, [])], 'empty joint names'),
    (NAMES, [], 'empty trajectory'),
    (NAMES, [(1.0, [0, 0])], '2 positions for 3'),
    (NAMES, [(1.0, [0, float('nan'), 0])], 'non-finite'),
    (NAMES, [(-1.0, [0, 0, 0])], 'negative'),
    (NAMES, [(1.0, [0, 0, 0]), (1.0, [1, 1, 1])], 'not after'),
])
def test_rejects_bad_trajectories_and_keeps_active(names, points, match):
    f = TrajectoryFollower(NAMES)
    f.set_trajectory(NAMES, [(1.0, [1.0, 1.0, 1.0])], stamp=0.0, now=0.0)
    f.update(0.0, ZERO)
    with pytest.raises(TrajectoryError, match=match):
        f.set_trajectory(names, points, stamp=0.0, now=0.0)
    np.testing.assert_allclose(f.update(1.0, ZERO), [1, 1, 1])


def test_rejects_bad_commands():
    f = TrajectoryFollower(NAMES)
    with pytest.raises(TrajectoryError):
        f.set_target([1.0, 2.0])
    with pytest.raises(TrajectoryError):
        f.set_target([1.0, 2.0, float('inf')])
    with pytest.raises(ValueError):
        TrajectoryFollower(['a', 'a'])
