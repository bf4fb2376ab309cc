"""The sim's gripper joint: bounded speed, clipping, reset (pure Python, no ROS)."""
from __future__ import annotations

import pytest

from retain_ros.sim import SimWorld
from retain_ros.sim.gripper import GRIPPER_CLOSED
from retain_ros.sim.gripper import GRIPPER_JOINT
from retain_ros.sim.gripper import GRIPPER_OPEN
from retain_ros.sim.gripper import GRIPPER_SPEED
from retain_ros.sim.gripper import SimGripper


def test_gripper_moves_at_bounded_speed_and_resets_open():
    gripper = SimGripper()
    assert gripper.name == GRIPPER_JOINT == 'gripper_joint'
    assert gripper.position == GRIPPER_OPEN == 0.0 and GRIPPER_CLOSED == 0.04
    assert gripper.set_target(1.0) == GRIPPER_CLOSED     # clipped
    gripper.step(0.1)
    assert gripper.position == pytest.approx(GRIPPER_SPEED * 0.1)
    assert gripper.velocity == pytest.approx(GRIPPER_SPEED)
    for _ in range(20):
        gripper.step(0.1)
    assert gripper.position == GRIPPER_CLOSED and gripper.velocity == 0.0
    assert gripper.set_target(-1.0) == GRIPPER_OPEN
    with pytest.raises(ValueError):
        gripper.set_target(float('nan'))
    with pytest.raises(ValueError):
        gripper.step(-0.1)
    gripper.set_target(0.02)
    gripper.reset()
    assert gripper.position == gripper.target == GRIPPER_OPEN
    # the world knows nothing of it: the arm's joints and images are unchanged
    assert GRIPPER_JOINT not in SimWorld().joint_names
