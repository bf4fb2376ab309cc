"""The simulated parallel-jaw gripper: one prismatic joint, no ROS.

It is kinematic like the arm (:mod:`retain_ros.sim.world`): the joint moves toward its target at
a bounded speed. It is deliberately *not* part of :class:`~retain_ros.sim.world.SimWorld`: it is
not rendered, not part of the arm's joint state and has no effect on the success test, so the
arm's images, kinematics and the shipped demo data stay exactly as they were.

The position is the travel of each finger from its open stop, in metres: ``0.0`` = fully open,
:data:`GRIPPER_CLOSED` = closed (the jaws meet; an 80 mm stroke in all, the size of a Robotiq
2F-85 or a Franka hand).
"""
from __future__ import annotations

import math

#: Joint name (the arm's joints are ``shoulder_joint``, ``elbow_joint``, ``wrist_joint``).
GRIPPER_JOINT = 'gripper_joint'
#: Open position (m).
GRIPPER_OPEN = 0.0
#: Closed position (m).
GRIPPER_CLOSED = 0.04
#: Finger speed (m/s): open to closed in 0.8 s.
GRIPPER_SPEED = 0.05


class SimGripper:
    """A position-controlled gripper joint moving at most :data:`GRIPPER_SPEED`.

    Starts open (see :meth:`reset`).
    """

    name: str = GRIPPER_JOINT
    lower: float = GRIPPER_OPEN
    upper: float = GRIPPER_CLOSED
    max_speed: float = GRIPPER_SPEED

    def __init__(self):
        self.position = GRIPPER_OPEN
        self.target = GRIPPER_OPEN
        self.velocity = 0.0

    def reset(self) -> None:
        """Open at once and hold open (what the arm's scene reset does to the arm)."""
        self.position = self.target = GRIPPER_OPEN
        self.velocity = 0.0

    def set_target(self, value: float) -> float:
        """Command a position; it is clipped to ``[GRIPPER_OPEN, GRIPPER_CLOSED]``.

        :param value: position in metres.
        :return: the target after clipping.
        :raises ValueError: for a non-finite value.
        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f'gripper target must be finite, got {value}')
        self.target = min(max(value, self.lower), self.upper)
        return self.target

    def step(self, dt: float) -> None:
        """Move toward the target by at most :attr:`max_speed` * ``dt``.

        :param dt: seconds (>= 0).
        :raises ValueError: for a negative or non-finite ``dt``.
        """
        dt = float(dt)
        if dt < 0.0 or not math.isfinite(dt):
            raise ValueError(f'dt must be a finite non-negative number, got {dt}')
        limit = self.max_speed * dt
        before = self.position
        self.position = before + min(max(self.target - before, -limit), limit)
        self.velocity = (self.position - before) / dt if dt > 0.0 else 0.0
