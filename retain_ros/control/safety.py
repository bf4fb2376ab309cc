"""Action safety filter: pure numpy, no ROS.

A chunk ``(H, D)`` of absolute joint targets is checked and shaped before it is published:

1. every value must be finite, else the whole chunk is rejected (never publish NaN / inf);
2. each target is clamped to ``[lower, upper]`` (per joint; empty limits = none);
3. each target may move at most ``max_step`` (radians or metres per control period) from the
   previous one, starting from the current joint state; the limit is chained along the chunk, so
   point ``i`` is at most ``(i + 1) * max_step`` away from the current state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from typing import Sequence

import numpy as np


class UnsafeChunkError(ValueError):
    """A chunk that must not be published at all (non-finite values, wrong shape)."""


@dataclass(frozen=True)
class SafetyLimits:
    """Joint limits and step limit.

    :param lower: per-joint lower limits (empty: none).
    :param upper: per-joint upper limits (empty: none).
    :param max_step: largest change of one joint between two consecutive targets; ``<= 0`` means
        no step limit.
    """

    lower: Sequence[float] = ()
    upper: Sequence[float] = ()
    max_step: float = 0.0

    def validate(self, dim: Optional[int] = None) -> None:
        """Check the limits (lengths, order, finiteness).

        :param dim: number of joints, when known.
        :raises ValueError: with the reason.
        """
        lower = np.asarray(self.lower, dtype=np.float64)
        upper = np.asarray(self.upper, dtype=np.float64)
        for name, arr in (('joint_lower_limits', lower), ('joint_upper_limits', upper)):
            if arr.size and dim is not None and arr.size != dim:
                raise ValueError(f'{name} has {arr.size} values, the robot has {dim} joints')
            if np.isnan(arr).any():
                raise ValueError(f'{name} holds NaN')
        if lower.size and upper.size:
            if lower.size != upper.size:
                raise ValueError(
                    f'joint_lower_limits ({lower.size}) and joint_upper_limits ({upper.size}) '
                    'differ in length')
            bad = np.nonzero(lower > upper)[0]
            if bad.size:
                raise ValueError(f'lower limit above upper limit for joint index {int(bad[0])}')
        if not np.isfinite(self.max_step) and self.max_step != float('inf'):
            raise ValueError(f'max_joint_step must be a number, got {self.max_step}')


def is_finite(actions: np.ndarray) -> bool:
    """True when every value of ``actions`` is finite."""
    return bool(np.all(np.isfinite(np.asarray(actions, dtype=np.float64))))


def clamp_to_limits(actions: np.ndarray, lower: Sequence[float] = (),
                    upper: Sequence[float] = ()) -> np.ndarray:
    """Clamp every row of ``actions`` to the joint limits (a copy)."""
    out = np.array(actions, dtype=np.float64, copy=True)
    if len(lower):
        out = np.maximum(out, np.asarray(lower, dtype=np.float64))
    if len(upper):
        out = np.minimum(out, np.asarray(upper, dtype=np.float64))
    return out


def limit_steps(actions: np.ndarray, current: Optional[np.ndarray], max_step: float) -> np.ndarray:
    """Limit the change between consecutive targets, chained from ``current`` (a copy).

    :param actions: ``(H, D)`` targets.
    :param current: ``(D,)`` current joint positions; None starts the chain at ``actions[0]``.
    :param max_step: largest change per period; ``<= 0`` or inf disables the limit.
    """
    out = np.array(actions, dtype=np.float64, copy=True)
    if not max_step or max_step <= 0 or not np.isfinite(max_step):
        return out
    previous = None if current is None else np.asarray(current, dtype=np.float64)
    for i in range(out.shape[0]):
        if previous is not None:
            out[i] = previous + np.clip(out[i] - previous, -max_step, max_step)
        previous = out[i]
    return out


def make_safe(actions: np.ndarray, current: Optional[np.ndarray], limits: SafetyLimits,
              dim: Optional[int] = None) -> np.ndarray:
    """Apply the whole filter to one chunk.

    Order: reject non-finite, clamp to limits, limit steps from ``current``, clamp again (the
    current state itself may lie outside the limits; the limits win).

    :param actions: ``(H, D)`` or ``(D,)`` targets.
    :param current: ``(D,)`` current joint positions, or None.
    :param limits: the :class:`SafetyLimits`.
    :param dim: expected number of joints D (checked when given).
    :return: ``(H, D)`` float64 safe targets.
    :raises UnsafeChunkError: when the chunk is non-finite or has the wrong shape.
    """
    arr = np.asarray(actions, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UnsafeChunkError(f'chunk must be (H, D), got shape {tuple(arr.shape)}')
    if dim is not None and arr.shape[1] != dim:
        raise UnsafeChunkError(f'chunk has {arr.shape[1]} joints per action, expected {dim}')
    if not is_finite(arr):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise UnsafeChunkError(f'chunk holds {bad} non-finite value(s)')
    if current is not None:
        current = np.asarray(current, dtype=np.float64)
        if current.shape != (arr.shape[1],) or not is_finite(current):
            current = None
    out = clamp_to_limits(arr, limits.lower, limits.upper)
    out = limit_steps(out, current, limits.max_step)
    return clamp_to_limits(out, limits.lower, limits.upper)
