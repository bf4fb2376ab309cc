"""Outputs of the ``retain_policy`` node: chunk timing, JointTrajectory messages, the stream queue.

One stamp policy for both output modes, the way ros2_control's joint_trajectory_controller
executes a trajectory:

- a chunk computed from an observation taken at time ``t_obs`` (the joint state's header stamp,
  corrected by ``clock_offset``; its arrival time when unstamped) holds the actions for
  ``t_obs + (i + 1) * dt``, ``i = 0 .. H - 1``: the first action is the one for the first control
  period after the observation;
- trajectory mode publishes ``header.stamp = t_obs`` and ``time_from_start = (i + 1) * dt``. The
  controller samples the trajectory at "now", so the points whose time passed during inference
  are skipped by the controller itself (JTC: ``Trajectory::sample`` from the stamp);
- stream mode drops the same elapsed actions itself: ``floor((now - t_obs) / dt)`` of them;
- a chunk whose every point is already in the past is not published (counted as dropped).
"""
from __future__ import annotations

from collections import deque
import math
import threading
from typing import Deque
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import JointTrajectoryPoint

from retain_ros.ros.conversions import sec_to_duration
from retain_ros.ros.conversions import sec_to_time


def elapsed_steps(obs_time: float, now: float, dt: float) -> int:
    """Actions of a chunk stamped ``obs_time`` whose time has passed at ``now``.

    Action ``i`` is for ``obs_time + (i + 1) * dt``; it has passed when that is ``<= now``.
    """
    if not dt > 0:
        raise ValueError(f'dt must be > 0, got {dt}')
    return max(0, int(math.floor((now - obs_time) / dt + 1e-9)))


def build_trajectory(actions: np.ndarray, joint_names: Sequence[str], obs_time: float,
                     dt: float) -> JointTrajectory:
    """A ``JointTrajectory`` stamped at the observation time, points at ``(i + 1) * dt``."""
    msg = JointTrajectory(joint_names=list(joint_names), points=[
        JointTrajectoryPoint(positions=row, time_from_start=sec_to_duration((i + 1) * dt))
        for i, row in enumerate(np.asarray(actions, dtype=np.float64).tolist())])
    msg.header.stamp = sec_to_time(obs_time)
    return msg


class ActionQueue:
    """Stream mode's action queue: actions tagged with the merge generation they came from."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queue: Deque[Tuple[np.ndarray, int]] = deque()
        self._last: Optional[np.ndarray] = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def replace(self, actions: np.ndarray, generation: int) -> None:
        """Replace the queue by ``actions`` (rows), all of ``generation``."""
        with self._lock:
            self._queue = deque((np.array(row), generation) for row in actions)

    def pop(self) -> Tuple[Optional[np.ndarray], int, Optional[np.ndarray]]:
        """``(action, generation, last_command)``; action None when empty."""
        with self._lock:
            if not self._queue:
                return None, 0, self._last
            action, generation = self._queue.popleft()
            return action, generation, self._last

    def sent(self, action: np.ndarray) -> None:
        """Remember the last command sent (the step limit chains from it)."""
        with self._lock:
            self._last = action

    def flush(self) -> None:
        """Drop every queued action and forget the last command."""
        with self._lock:
            self._queue.clear()
            self._last = None
