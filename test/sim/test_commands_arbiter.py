"""Which command interface drives each sim joint: the arbiter, its maths (pure Python, no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.sim.commands import CommandArbiter
from retain_ros.sim.commands import damped_least_squares
from retain_ros.sim.commands import FOLLOW
from retain_ros.sim.commands import POSITION
from retain_ros.sim.commands import scale_to_limit
from retain_ros.sim.commands import TWIST
from retain_ros.sim.commands import VELOCITY
from retain_ros.sim.world import end_effector
from retain_ros.sim.world import jacobian
from retain_ros.sim.world import LOWER_LIMITS
from retain_ros.sim.world import MAX_VELOCITY
from retain_ros.sim.world import UPPER_LIMITS


def test_damped_least_squares_and_scaling():
    q = np.array([0.2, 1.5, -0.8])
    jac = jacobian(q)
    twist = np.array([0.1, -0.05])
    qdot = damped_least_squares(jac, twist)
    np.testing.assert_allclose(jac @ qdot, twist, rtol=5e-3, atol=1e-6)
    # minimum norm: no component in the Jacobian's null space
    null = np.linalg.svd(jac)[2][-1]
    assert abs(float(null @ qdot)) < 1e-9
    # at the singularity (stretched out, pulling outward) the joint speeds stay bounded
    stretched = damped_least_squares(jacobian(np.zeros(3)), np.array([0.0, 1.0]))
    assert np.all(np.isfinite(stretched)) and np.linalg.norm(stretched) < 1e-9
    sideways = damped_least_squares(jacobian(np.zeros(3)), np.array([1.0, 0.0]))
    assert np.linalg.norm(sideways) < 10.0
    np.testing.assert_allclose(scale_to_limit(np.array([3.0, -1.0, 0.5]), 1.5),
                               [1.5, -0.5, 0.25])
    np.testing.assert_array_equal(scale_to_limit(np.array([0.3, -1.0]), 1.5), [0.3, -1.0])


def _arbiter():
    return CommandArbiter(3, LOWER_LIMITS, UPPER_LIMITS, MAX_VELOCITY)


def test_arbiter_passes_the_follower_command_through_untouched():
    arbiter = _arbiter()
    command = np.array([0.1, 0.2, 0.3])
    assert arbiter.command(command, np.zeros(3), 1.0, 0.02) is command
    assert arbiter.sources == [FOLLOW] * 3


def test_arbiter_integrates_velocities_with_timeout_and_limits():
    arbiter = _arbiter()
    q0 = np.array([0.0, 2.6, -1.0])
    follower = np.array([9.0, 9.0, 9.0])  # ignored while the velocity interface owns the joints
    arbiter.set_velocities([0.5, -0.25, 5.0], now=10.0)   # joint 2 beyond the speed limit
    assert arbiter.sources == [VELOCITY] * 3
    q, now = q0.copy(), 10.0
    for _ in range(10):
        now += 0.02
        q = arbiter.command(follower, q, now, 0.02)   # the world tracks its target exactly
    np.testing.assert_allclose(q, q0 + 0.2 * np.array([0.5, -0.25, MAX_VELOCITY]))
    # no timeout: the command persists
    q = arbiter.command(follower, q, now + 100.0, 0.02)
    np.testing.assert_allclose(q, q0 + 0.2 * np.array([0.5, -0.25, MAX_VELOCITY]) +
                               0.02 * np.array([0.5, -0.25, MAX_VELOCITY]))
    # with a timeout the velocities go to zero
    arbiter.velocity_timeout = 0.5
    held = arbiter.command(follower, q, now + 100.0, 0.02)
    np.testing.assert_array_equal(held, q)
    # integrated targets stop at the joint limits (no wind-up)
    arbiter.velocity_timeout = 0.0
    for _ in range(1500):
        q = arbiter.command(follower, q, now, 0.02)
    assert q[2] == UPPER_LIMITS[2] and q[1] == LOWER_LIMITS[1]
    arbiter.set_velocities([0.0, 0.0, -1.0], now)
    q = arbiter.command(follower, q, now, 0.02)
    assert q[2] == pytest.approx(UPPER_LIMITS[2] - 0.02)


def test_arbiter_most_recent_command_wins_per_joint():
    arbiter = _arbiter()
    follower = np.array([0.5, 0.6, 0.7])
    measured = np.array([0.1, 0.2, 0.3])
    arbiter.set_positions([1], [1.25])
    assert arbiter.sources == [FOLLOW, POSITION, FOLLOW]
    np.testing.assert_allclose(arbiter.command(follower, measured, 0.0, 0.02), [0.5, 1.25, 0.7])
    # a velocity command takes every joint, starting from the measured positions
    arbiter.set_velocities([1.0, 1.0, 1.0], 0.0)
    np.testing.assert_allclose(arbiter.command(follower, measured, 0.01, 0.1),
                               measured + 0.1)
    # a by-name target takes only its joints; the others keep integrating
    arbiter.set_positions([0], [-0.5])
    np.testing.assert_allclose(arbiter.command(follower, measured + 0.1, 0.02, 0.1),
                               [-0.5, 0.4, 0.5])
    assert arbiter.sources == [POSITION, VELOCITY, VELOCITY]
    # out-of-range targets are clipped
    arbiter.set_positions([0], [10.0])
    assert arbiter.command(follower, measured, 0.03, 0.1)[0] == UPPER_LIMITS[0]
    # a trajectory / forward position command (follow) takes everything back
    arbiter.follow()
    assert arbiter.sources == [FOLLOW] * 3
    assert arbiter.command(follower, measured, 0.04, 0.1) is follower


def test_arbiter_twist_moves_the_gripper_and_times_out():
    arbiter = _arbiter()
    arbiter.twist_timeout = 0.1
    q = np.array([0.0, 2.6, -1.0])
    start = end_effector(q)
    twist = np.array([0.1, 0.05])
    now = 0.0
    for _ in range(25):   # 0.5 s, the twist re-sent every step
        arbiter.set_twist(twist, now)
        now += 0.02
        q = arbiter.command(q, q, now, 0.02)
    moved = end_effector(q) - start
    np.testing.assert_allclose(moved, 0.5 * twist, rtol=0.02)
    assert arbiter.sources == [TWIST] * 3
    # one more step inside the timeout moves, then it stops
    q = arbiter.command(q, q, now + 0.05, 0.02)
    stop = q.copy()
    for i in range(10):
        q = arbiter.command(q, q, now + 0.11 + 0.02 * i, 0.02)
    np.testing.assert_array_equal(q, stop)
    # a fast twist is scaled to the joint speed limit, keeping its direction
    arbiter.set_twist([-5.0, 0.0], now)
    before = end_effector(q)
    after = arbiter.command(q, q, now, 0.02)
    assert np.max(np.abs(after - q)) <= MAX_VELOCITY * 0.02 + 1e-12
    direction = end_effector(after) - before
    assert direction[0] < 0.0 and abs(direction[1]) < 0.1 * abs(direction[0])
