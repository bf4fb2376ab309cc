"""Joint trajectory following as ros2_control's joint_trajectory_controller does it, minus ROS.

Pure Python + numpy (no rclpy), so it is unit-tested on its own and reused by the sim node:

- a new trajectory REPLACES the active one; it starts at its header stamp (or on receipt when the
  stamp is zero), from the joints' current position, and is interpolated linearly between its
  points over ``time_from_start``; before its start the arm holds, after its last point it holds
  the last point;
- points are given for the trajectory's own ``joint_names`` and reordered into the follower's
  order; joints the trajectory does not name keep their current set-point;
- an empty trajectory cancels the active one (the arm holds where it is);
- a direct position command (a forward controller's ``Float64MultiArray``) also cancels it.
"""
from __future__ import annotations

import bisect
import logging
import math
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np

LOG = logging.getLogger(__name__)


class TrajectoryError(ValueError):
    """A trajectory or command that cannot be followed (the active one is then kept)."""


class TrajectoryFollower:
    """Time-parameterised set-point generator for a fixed list of joints.

    :param joint_names: the robot's joints, in the order set-points are returned.
    :param initial: initial set-point (default zeros).
    """

    def __init__(self, joint_names: Sequence[str], initial: Optional[Sequence[float]] = None):
        self.joint_names = [str(n) for n in joint_names]
        if len(set(self.joint_names)) != len(self.joint_names) or not self.joint_names:
            raise ValueError(f'joint names must be unique and non-empty: {self.joint_names}')
        dim = len(self.joint_names)
        self._hold = np.zeros(dim) if initial is None else self._vector(initial, 'initial')
        self._times: List[float] = []
        self._points: List[np.ndarray] = []

    @property
    def dim(self) -> int:
        return len(self.joint_names)

    @property
    def active(self) -> bool:
        """True while a trajectory is loaded (also while holding its last point)."""
        return bool(self._times)

    @property
    def end_time(self) -> Optional[float]:
        """Time of the active trajectory's last point, ``None`` when there is none."""
        return self._times[-1] if self._times else None

    def done(self, now: float) -> bool:
        """Tell whether no trajectory is active or ``now`` is past its last point."""
        return not self._times or now >= self._times[-1]

    def _vector(self, values: Sequence[float], what: str) -> np.ndarray:
        vec = np.asarray(values, dtype=np.float64).reshape(-1)
        if vec.shape != (self.dim,):
            raise TrajectoryError(f'{what}: expected {self.dim} values for joints '
                                  f'{self.joint_names}, got {vec.shape[0]}')
        if not np.all(np.isfinite(vec)):
            raise TrajectoryError(f'{what}: non-finite values {vec.tolist()}')
        return vec

    def hold(self, positions: Sequence[float]) -> None:
        """Cancel any trajectory and hold ``positions`` (e.g. after a reset)."""
        self._hold = self._vector(positions, 'hold')
        self._times, self._points = [], []

    def set_target(self, positions: Sequence[float]) -> None:
        """Direct position command (forward controller): cancels the active trajectory.

        :raises TrajectoryError: on a wrong length or non-finite values.
        """
        self.hold(positions)

    def set_trajectory(self, names: Sequence[str], points: Sequence[Tuple[float, Sequence[float]]],
                       start: float, current: Sequence[float]) -> int:
        """Replace the active trajectory.

        :param names: joint names of the message (any order, a subset of :attr:`joint_names`).
        :param points: ``(time_from_start_s, positions)`` per point, positions in ``names`` order.
        :param start: absolute start time (s), the same clock as :meth:`sample`'s ``now``.
        :param current: the joints' current positions (where the trajectory starts from).
        :return: number of points accepted.
        :raises TrajectoryError: on unknown or repeated joint names, a wrong number of values,
            non-finite values, or times that are negative or not increasing. The active
            trajectory is left unchanged then.
        """
        current = self._vector(current, 'current positions')
        names = [str(n) for n in names]
        unknown = [n for n in names if n not in self.joint_names]
        if unknown:
            raise TrajectoryError(f'unknown joint(s) {unknown}; this robot has {self.joint_names}')
        if len(set(names)) != len(names):
            raise TrajectoryError(f'joint names repeated: {names}')
        if not math.isfinite(start):
            raise TrajectoryError(f'start time is not finite: {start}')
        if not points:
            self.hold(current)
            return 0
        if not names:
            raise TrajectoryError('trajectory has points but no joint_names')
        index = [self.joint_names.index(n) for n in names]
        base = self.sample(start) if self._times else self._hold.copy()
        # joints not named keep their current set-point; named ones start from where they are
        base[index] = current[index]
        times = [float(start)]
        values = [base.copy()]
        last = 0.0
        for i, (t, pos) in enumerate(points):
            t = float(t)
            if not math.isfinite(t) or t < 0.0:
                raise TrajectoryError(f'point {i}: time_from_start {t} is negative or not finite')
            if i and t <= last:
                raise TrajectoryError(
                    f'point {i}: time_from_start {t:g} s is not after the previous {last:g} s')
            pos = np.asarray(pos, dtype=np.float64).reshape(-1)
            if pos.shape != (len(names),):
                raise TrajectoryError(
                    f'point {i}: {pos.shape[0]} positions for {len(names)} joint names')
            if not np.all(np.isfinite(pos)):
                raise TrajectoryError(f'point {i}: non-finite positions {pos.tolist()}')
            full = values[-1].copy()
            full[index] = pos
            last = t
            if t == 0.0:  # a point at the start replaces the start itself
                values[0] = full
                continue
            times.append(float(start) + t)
            values.append(full)
        self._times, self._points = times, values
        return len(points)

    def sample(self, now: float) -> np.ndarray:
        """Set-point at time ``now`` (linear interpolation; holds before start and after end)."""
        if not self._times:
            return self._hold.copy()
        times, points = self._times, self._points
        if now <= times[0]:
            return points[0].copy()
        if now >= times[-1]:
            return points[-1].copy()
        i = bisect.bisect_right(times, now)
        t0, t1 = times[i - 1], times[i]
        w = (now - t0) / (t1 - t0)
        return points[i - 1] + w * (points[i] - points[i - 1])

    def settle(self, now: float) -> None:
        """Drop a finished trajectory, keeping its last point as the hold set-point."""
        if self._times and now >= self._times[-1]:
            self._hold = self._points[-1].copy()
            self._times, self._points = [], []
