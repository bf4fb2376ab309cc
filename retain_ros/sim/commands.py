"""Which command interface drives each arm joint of the sim, and what it commands; no ROS.

The sim robot speaks several command interfaces at once (a real robot runs one controller per
joint; the sim lets them take turns): the joint trajectory / forward position controllers (one
:class:`~retain_ros.sim.trajectory_follower.TrajectoryFollower`), position targets by joint
name, a forward *velocity* controller and a MoveIt-Servo-like end-effector twist. The most
recent command of any interface wins for the joints it names. :class:`CommandArbiter` keeps,
per joint, the interface that owns it and turns everything into the position targets the
(position-controlled) simulated joints follow:

- ``follow``: the follower's command (trajectories, forward position commands).
- ``position``: a position target by name (``sensor_msgs/JointState`` command).
- ``velocity``: the joint's target moves at the commanded velocity (integrated each physics
  step, starting from the measured position when the joint switches to it); the command
  persists until a new one arrives or, with a timeout, until it is older than the timeout.
- ``twist``: the gripper moves with a commanded planar linear velocity: joint velocities from
  the damped-least-squares inverse of :func:`~retain_ros.sim.world.jacobian`, recomputed each
  step at the measured joint positions, zero once the twist is older than its timeout.

Velocities are limited to the joints' speed (per joint for joint velocities, scaled uniformly
for a twist so the gripper keeps its direction) and integrated targets stop at the joint
limits, so the target never runs away from the arm.
"""
from __future__ import annotations

from typing import Callable
from typing import List
from typing import Sequence

import numpy as np

from retain_ros.sim.world import jacobian

FOLLOW = 'follow'
POSITION = 'position'
VELOCITY = 'velocity'
TWIST = 'twist'
#: Damping (m) of the twist's least-squares inverse: negligible away from singularities (1 %
#: slower where the arm's smallest singular value is 0.1 m), bounded joint speeds at them.
SERVO_DAMPING = 0.01


def damped_least_squares(jac: np.ndarray, twist: np.ndarray,
                         damping: float = SERVO_DAMPING) -> np.ndarray:
    """Joint velocities that best produce ``twist``: ``J^T (J J^T + damping^2 I)^-1 twist``.

    :param jac: ``(m, n)`` Jacobian.
    :param twist: ``(m,)`` task-space velocity.
    :param damping: damping factor, in the units of ``jac``.
    :return: ``(n,)`` joint velocities.
    """
    jac = np.asarray(jac, dtype=np.float64)
    twist = np.asarray(twist, dtype=np.float64).reshape(-1)
    gram = jac @ jac.T + float(damping) ** 2 * np.eye(jac.shape[0])
    return jac.T @ np.linalg.solve(gram, twist)


def scale_to_limit(qdot: np.ndarray, limit: float) -> np.ndarray:
    """Scale ``qdot`` uniformly so no joint exceeds ``limit`` (keeps its direction)."""
    qdot = np.asarray(qdot, dtype=np.float64)
    peak = float(np.max(np.abs(qdot))) if qdot.size else 0.0
    return qdot * (limit / peak) if peak > limit else qdot.copy()


class CommandArbiter:
    """Per-joint owner of the arm's position targets (see the module docstring).

    :param dim: number of arm joints.
    :param lower: lower joint limits ``(dim,)``.
    :param upper: upper joint limits ``(dim,)``.
    :param max_velocity: joint speed limit (rad/s).
    :param jacobian_fn: ``q -> (2, dim)`` linear Jacobian of the gripper position.
    :param damping: damping of the twist's least-squares inverse.
    """

    def __init__(self, dim: int, lower: Sequence[float], upper: Sequence[float],
                 max_velocity: float, jacobian_fn: Callable[[np.ndarray], np.ndarray] = jacobian,
                 damping: float = SERVO_DAMPING):
        self.dim = int(dim)
        self.lower = np.asarray(lower, dtype=np.float64).copy()
        self.upper = np.asarray(upper, dtype=np.float64).copy()
        self.max_velocity = float(max_velocity)
        self.jacobian_fn = jacobian_fn
        self.damping = float(damping)
        #: seconds a joint velocity command lasts; 0 = until the next one
        self.velocity_timeout = 0.0
        #: seconds a twist lasts (must be > 0)
        self.twist_timeout = 0.1
        self._sources: List[str] = [FOLLOW] * self.dim
        self._target = np.zeros(self.dim)
        self._fresh = np.zeros(self.dim, dtype=bool)
        self._velocity = np.zeros(self.dim)
        self._velocity_stamp = 0.0
        self._twist = np.zeros(2)
        self._twist_stamp = 0.0

    @property
    def sources(self) -> List[str]:
        """Return the interface that owns each joint: follow, position, velocity or twist."""
        return list(self._sources)

    @property
    def twist_stamp(self) -> float:
        """Receipt time of the last twist (the start of its timeout)."""
        return self._twist_stamp

    @property
    def velocity_stamp(self) -> float:
        """Receipt time of the last joint velocity command (the start of its timeout)."""
        return self._velocity_stamp

    def follow(self) -> None:
        """Give every joint back to the follower; velocity and twist state is cleared.

        Called for an accepted trajectory or forward position command and for a reset.
        """
        self._sources = [FOLLOW] * self.dim
        self._velocity[:] = 0.0
        self._twist[:] = 0.0
        self._fresh[:] = False

    def set_positions(self, index: Sequence[int], values: Sequence[float]) -> None:
        """Set position targets for the joints ``index`` (clipped to the limits).

        The other joints keep their interface.
        """
        for i, value in zip(index, values):
            self._sources[i] = POSITION
            self._target[i] = min(max(float(value), self.lower[i]), self.upper[i])
            self._fresh[i] = False

    def _take(self, source: str) -> None:
        for i, old in enumerate(self._sources):
            if old not in (VELOCITY, TWIST):
                self._fresh[i] = True  # integrate from the measured position
            self._sources[i] = source

    def set_velocities(self, values: Sequence[float], now: float) -> None:
        """Joint velocities (rad/s) for every joint, limited to the joint speed, from ``now``."""
        self._take(VELOCITY)
        self._velocity = np.clip(np.asarray(values, dtype=np.float64).reshape(-1),
                                 -self.max_velocity, self.max_velocity)
        self._velocity_stamp = float(now)
        self._twist[:] = 0.0

    def set_twist(self, linear_xy: Sequence[float], now: float) -> None:
        """Planar gripper velocity ``(vx, vy)`` (m/s) in the arm's base frame, from ``now``."""
        self._take(TWIST)
        self._twist = np.asarray(linear_xy, dtype=np.float64).reshape(2).copy()
        self._twist_stamp = float(now)
        self._velocity[:] = 0.0

    def joint_velocities(self, q: np.ndarray, now: float) -> np.ndarray:
        """Commanded joint velocities at ``now`` (zero once the command timed out)."""
        if VELOCITY in self._sources:
            timeout = self.velocity_timeout
            if timeout > 0.0 and now - self._velocity_stamp > timeout:
                return np.zeros(self.dim)
            return self._velocity.copy()
        if TWIST in self._sources:
            if now - self._twist_stamp > self.twist_timeout or not np.any(self._twist):
                return np.zeros(self.dim)
            qdot = damped_least_squares(self.jacobian_fn(q), self._twist, self.damping)
            return scale_to_limit(qdot, self.max_velocity)
        return np.zeros(self.dim)

    def command(self, follower_command: np.ndarray, q: np.ndarray, now: float,
                dt: float) -> np.ndarray:
        """Position targets of one physics step.

        :param follower_command: the follower's command of this step ``(dim,)``.
        :param q: measured joint positions ``(dim,)``.
        :param now: the step's time (s).
        :param dt: the step's duration (s): how far velocities are integrated.
        :return: ``(dim,)`` position targets; the follower's command itself (unchanged) while
            it owns every joint.
        """
        if all(s == FOLLOW for s in self._sources):
            return follower_command
        q = np.asarray(q, dtype=np.float64)
        moving = np.array([s in (VELOCITY, TWIST) for s in self._sources])
        if moving.any():
            start = moving & self._fresh
            self._target[start] = q[start]
            self._fresh[start] = False
            qdot = self.joint_velocities(q, now)
            integrated = self._target + qdot * max(float(dt), 0.0)
            self._target[moving] = np.clip(integrated, self.lower, self.upper)[moving]
        command = np.array(follower_command, dtype=np.float64)
        owned = np.array([s != FOLLOW for s in self._sources])
        command[owned] = self._target[owned]
        return command
