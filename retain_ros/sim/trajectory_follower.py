"""Joint trajectory following exactly as ros2_control's joint_trajectory_controller (JTC), no ROS.

Pure Python + numpy, unit-tested on its own and used by the sim node and the timing harness.
It reproduces ``joint_trajectory_controller`` of Jazzy / Kilted (and Rolling with
``allow_trajectory_replacement: false``; Rolling's newer blending on replacement is not
modelled) with its default parameters, for position-only points (what the policy node sends):

- **validation on receipt** (``validate_trajectory_msg``): joint names non-empty, known and not
  repeated, all of the controller's joints unless ``allow_partial_joints_goal``; at least one
  point (an *empty trajectory is rejected*, it does not stop the arm); ``time_from_start``
  strictly increasing; one finite position per joint; a trajectory with a non-zero
  ``header.stamp`` that **ends in the past** (stamp + last ``time_from_start`` < now) is
  rejected. A rejected trajectory leaves the active one running. This class also refuses a
  negative ``time_from_start`` (JTC does not check the first point's sign).
- **replacement**: an accepted trajectory replaces the active one at the next controller update
  (:meth:`update`); there its start time is fixed (``header.stamp``, or the update's time when
  the stamp is 0 = "start now") and the *state before the trajectory* is recorded: the measured
  joint positions at that update (``interpolate_from_desired_state: false``), or the last
  command with ``interpolate_from_desired_state``. With ``allow_partial_joints_goal`` the joints
  a message omits hold their last command (``fill_partial_goal``).
- **sampling** (``Trajectory::sample`` with ``interpolation_method: splines``; points that carry
  positions only are interpolated *linearly*, JTC's spline degree for position-only points):
  before the first point's time the set-point is interpolated from the state before the
  trajectory (at the time it was recorded) towards the first point, so a future stamp does not
  hold, it moves slowly towards the first point; once past the first point the set-point is
  interpolated between the two message points around the sample time, so points already in the
  past are skipped (no catch-up through them); after the last point it holds the last point.
- **the command** of an update at time ``now`` is the trajectory sampled one update period
  ahead, at ``now + period`` (Jazzy's ``command_next_``; Humble samples at ``now``: pass
  ``period=0``).

A direct position command (a forward controller's ``Float64MultiArray``) cancels the trajectory
(the sim's second controller; on a real robot only one of the two is active).
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


class _Pending:
    """An accepted trajectory waiting for its first update (the JTC's ``new_trajectory_msg_``)."""

    def __init__(self, index: List[int], times: List[float], points: List[np.ndarray],
                 stamp: float):
        self.index = index
        self.times = times
        self.points = points
        self.stamp = stamp


class TrajectoryFollower:
    """Time-parameterised set-point generator for a fixed list of joints (see module docstring).

    :param joint_names: the robot's joints, in the order set-points are returned.
    :param initial: initial set-point (default zeros).
    :param allow_partial_joints_goal: accept trajectories naming only some joints (JTC default
        false).
    :param interpolate_from_desired_state: start a new trajectory from the last command instead
        of the measured state (JTC default false).
    """

    def __init__(self, joint_names: Sequence[str], initial: Optional[Sequence[float]] = None,
                 allow_partial_joints_goal: bool = False,
                 interpolate_from_desired_state: bool = False):
        self.joint_names = [str(n) for n in joint_names]
        if len(set(self.joint_names)) != len(self.joint_names) or not self.joint_names:
            raise ValueError(f'joint names must be unique and non-empty: {self.joint_names}')
        self.allow_partial_joints_goal = bool(allow_partial_joints_goal)
        self.interpolate_from_desired_state = bool(interpolate_from_desired_state)
        dim = len(self.joint_names)
        self._hold = np.zeros(dim) if initial is None else self._vector(initial, 'initial')
        self._last_command = self._hold.copy()
        self._pending: Optional[_Pending] = None
        # the active trajectory: absolute point times, full-width points, the state before it
        self._times: List[float] = []
        self._points: List[np.ndarray] = []
        self._start = 0.0
        self._before_time = 0.0
        self._before_state = self._hold.copy()

    @property
    def dim(self) -> int:
        return len(self.joint_names)

    @property
    def active(self) -> bool:
        """True while a trajectory is loaded or pending (also while holding its last point)."""
        return bool(self._times) or self._pending is not None

    @property
    def end_time(self) -> Optional[float]:
        """Time of the active trajectory's last point, ``None`` when there is none."""
        return self._times[-1] if self._times else None

    @property
    def start_time(self) -> Optional[float]:
        """The active trajectory's start time (stamp, or its first update), ``None`` if none."""
        return self._start if self._times else None

    def done(self, now: float) -> bool:
        """Tell whether no trajectory is active or pending, or ``now`` is past its last point."""
        if self._pending is not None:
            return False
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
        self._last_command = self._hold.copy()
        self._times, self._points, self._pending = [], [], None

    def set_target(self, positions: Sequence[float]) -> None:
        """Direct position command (forward controller): cancels the active trajectory.

        :raises TrajectoryError: on a wrong length or non-finite values.
        """
        self.hold(positions)

    def set_trajectory(self, names: Sequence[str], points: Sequence[Tuple[float, Sequence[float]]],
                       stamp: float, now: float) -> int:
        """Validate a trajectory message and queue it for the next :meth:`update`.

        :param names: joint names of the message (any order).
        :param points: ``(time_from_start_s, positions)`` per point, positions in ``names`` order.
        :param stamp: ``header.stamp`` in seconds on the clock of ``now``; 0 = start at the next
            update.
        :param now: the controller's clock at receipt (for the "ends in the past" check).
        :return: number of points accepted.
        :raises TrajectoryError: on anything JTC's ``validate_trajectory_msg`` rejects (see the
            module docstring). The active trajectory is left unchanged then.
        """
        names = [str(n) for n in names]
        if not names:
            raise TrajectoryError('empty joint names on incoming trajectory')
        unknown = [n for n in names if n not in self.joint_names]
        if unknown:
            raise TrajectoryError(f'unknown joint(s) {unknown}; this robot has {self.joint_names}')
        if len(set(names)) != len(names):
            raise TrajectoryError(f'joint names repeated: {names}')
        if len(names) != self.dim and not self.allow_partial_joints_goal:
            raise TrajectoryError(f'joints on incoming trajectory {names} do not match the '
                                  f"controller's joints {self.joint_names} (partial goals are "
                                  'not allowed)')
        if not points:
            raise TrajectoryError('empty trajectory received (it does not stop the arm; send '
                                  'one point at the current position to hold)')
        stamp, now = float(stamp), float(now)
        if not (math.isfinite(stamp) and math.isfinite(now)):
            raise TrajectoryError(f'stamp {stamp} or clock {now} is not finite')
        times, values = [], []
        last = None
        for i, (t, pos) in enumerate(points):
            t = float(t)
            if not math.isfinite(t) or t < 0.0:
                raise TrajectoryError(f'point {i}: time_from_start {t} is negative or not finite')
            if last is not None and t <= last:
                raise TrajectoryError(
                    f'point {i}: time_from_start {t:g} s is not after the previous {last:g} s')
            pos = np.asarray(pos, dtype=np.float64).reshape(-1)
            if pos.shape != (len(names),):
                raise TrajectoryError(
                    f'point {i}: {pos.shape[0]} positions for {len(names)} joint names')
            if not np.all(np.isfinite(pos)):
                raise TrajectoryError(f'point {i}: non-finite positions {pos.tolist()}')
            times.append(t)
            values.append(pos)
            last = t
        if stamp != 0.0 and stamp + times[-1] < now:
            raise TrajectoryError(
                f'trajectory with non-zero start time {stamp:.3f} ends in the past '
                f'({stamp + times[-1]:.3f} < now {now:.3f})')
        index = [self.joint_names.index(n) for n in names]
        self._pending = _Pending(index, times, values, stamp)
        return len(points)

    def _activate(self, now: float, current: np.ndarray) -> None:
        pending, self._pending = self._pending, None
        start = pending.stamp if pending.stamp != 0.0 else now
        points = []
        for pos in pending.points:
            full = self._last_command.copy()  # omitted joints hold their command
            full[pending.index] = pos
            points.append(full)
        self._start = start
        self._times = [start + t for t in pending.times]
        self._points = points
        self._before_time = now
        self._before_state = (self._last_command.copy() if self.interpolate_from_desired_state
                              else current.copy())

    def update(self, now: float, current: Sequence[float], period: float = 0.0) -> np.ndarray:
        """One controller update: pick up a pending trajectory, return the position command.

        :param now: the update's time.
        :param current: measured joint positions (the state interfaces).
        :param period: the update period; the command is the trajectory sampled at
            ``now + period`` (Jazzy); 0 samples at ``now`` (Humble).
        :return: ``(dim,)`` position command.
        """
        current = self._vector(current, 'current positions')
        if self._pending is not None:
            self._activate(float(now), current)
        command = self.sample(float(now) + max(0.0, float(period)))
        self._last_command = command.copy()
        return command

    def sample(self, when: float) -> np.ndarray:
        """Set-point of the active trajectory at time ``when`` (``Trajectory::sample``)."""
        if not self._times:
            return self._hold.copy()
        times, points = self._times, self._points
        if when < self._before_time:
            return self._before_state.copy()
        if when < times[0]:
            return _lerp(self._before_time, self._before_state, times[0], points[0], when)
        if when >= times[-1]:
            return points[-1].copy()
        i = bisect.bisect_right(times, when)
        return _lerp(times[i - 1], points[i - 1], times[i], points[i], when)

    def settle(self, now: float) -> None:
        """Drop a finished trajectory, keeping its last point as the hold set-point."""
        if self._pending is None and self._times and now >= self._times[-1]:
            self._hold = self._points[-1].copy()
            self._times, self._points = [], []


def _lerp(t0: float, p0: np.ndarray, t1: float, p1: np.ndarray, when: float) -> np.ndarray:
    """Sample the linear segment as JTC does: the duration so far clipped to ``[0, t1 - t0]``."""
    span = t1 - t0
    if span <= 0.0:
        return p1.copy() if when >= t1 else p0.copy()
    w = min(max((when - t0) / span, 0.0), 1.0)
    return p0 + w * (p1 - p0)
