"""Action safety filter: pure numpy, no ROS.

A chunk ``(H, D)`` of absolute joint targets is checked and shaped before it is published. The
order is *state first, then step, then limits*:

1. every value must be finite, else the whole chunk is rejected (never publish NaN / inf);
2. the chain starts at the current joint state (when it is known and finite);
3. each target may move at most ``max_step`` (radians or metres per control period) from the
   previous one, chained along the chunk, so point ``i`` is at most ``(i + 1) * max_step`` away
   from the current state; **this bound is never broken**;
4. within that reach each target is as close as possible to its wish clamped to
   ``[lower, upper]`` (per joint; empty limits = none). When the state is inside the limits
   every point is inside them too. When the state is *outside* them (an arm pushed past a
   limit, limits tightened at run time), the filter **ramps in**: the joint moves towards the
   limits at ``max_step`` per period, never jumping onto them, and stays inside once there.

Without a step limit (``max_step <= 0``) step 3 does nothing and every point is clamped to the
limits. Without a known state the first point is only clamped and the chain starts there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np


class UnsafeChunkError(ValueError):
    """A chunk that must not be published at all (non-finite values, wrong shape)."""


class LimitsError(ValueError):
    """Joint limit arrays that cannot be used (wrong length, lower > upper, non-finite)."""


def validate_limits(lower: Sequence[float], upper: Sequence[float],
                    joint_names_or_count: Union[Sequence[str], int, None]
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Check the joint limit arrays against the robot's joints.

    An empty array means "no limit on that side". A non-empty one must hold exactly one finite
    value per joint: a 1-element list is NOT broadcast to every joint.

    :param lower: ``joint_lower_limits``.
    :param upper: ``joint_upper_limits``.
    :param joint_names_or_count: the robot's joint names (``joint_names`` or the first
        JointState's ``name``), or their number; ``None`` / ``0`` / empty when not known yet
        (then only the two arrays are checked against each other).
    :return: ``(lower, upper)`` as float64 arrays (empty ones stay empty).
    :raises LimitsError: naming the parameter, its length and the joint count or the joint.
    """
    if joint_names_or_count is None:
        names, count = None, None
    elif isinstance(joint_names_or_count, (int, np.integer)):
        names, count = None, int(joint_names_or_count) or None
    else:
        names = [str(n) for n in joint_names_or_count]
        count = len(names) or None
    arrays = []
    for what, values in (('joint_lower_limits', lower), ('joint_upper_limits', upper)):
        try:
            arr = np.asarray(values if values is not None else (), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise LimitsError(f'{what} must be a list of numbers: {exc}') from None
        if arr.ndim != 1:
            raise LimitsError(f'{what} must be a flat list of numbers, got shape {arr.shape}')
        if arr.size and count is not None and arr.size != count:
            joints = f' {names}' if names else ''
            raise LimitsError(f'{what} has {arr.size} value(s), the robot has {count} '
                              f'joint(s){joints}: give one value per joint (a single value is '
                              'not broadcast) or an empty list for no limit')
        bad = np.nonzero(~np.isfinite(arr))[0]
        if bad.size:
            i = int(bad[0])
            raise LimitsError(f'{what}[{i}] {_joint(names, i)}is {arr[i]}, limits must be '
                              'finite numbers')
        arrays.append(arr)
    lo, hi = arrays
    if lo.size and hi.size:
        if lo.size != hi.size:
            raise LimitsError(f'joint_lower_limits ({lo.size} values) and joint_upper_limits '
                              f'({hi.size} values) differ in length')
        bad = np.nonzero(lo > hi)[0]
        if bad.size:
            i = int(bad[0])
            raise LimitsError(f'joint {i} {_joint(names, i)}has lower limit {lo[i]:g} above '
                              f'its upper limit {hi[i]:g}')
    return lo, hi


def _joint(names: Optional[Sequence[str]], i: int) -> str:
    return f'({names[i]!r}) ' if names and i < len(names) else ''


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

    def validate(self, dim: Union[Sequence[str], int, None] = None) -> None:
        """Check the limits (lengths, order, finiteness) with :func:`validate_limits`.

        :param dim: the joint names or their number, when known.
        :raises LimitsError: with the reason (a ``ValueError``).
        """
        validate_limits(self.lower, self.upper, dim)
        step = float(self.max_step)
        if np.isnan(step) or step == float('-inf'):
            raise LimitsError(f'max_joint_step must be a number, got {self.max_step}')


def is_finite(actions: np.ndarray) -> bool:
    """Return True when every value of ``actions`` is finite."""
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
    """Apply the whole filter to one chunk (see the module docstring for the order).

    The wishes are clamped to the limits, then the step limit is chained from ``current``.
    Per joint, moving at most ``max_step`` towards a value inside ``[lower, upper]`` either
    reaches it or moves ``max_step`` closer to the interval, so the step bound always holds and
    the limits hold whenever they are reachable (ramp-in from a state outside them).

    :param actions: ``(H, D)`` or ``(D,)`` targets.
    :param current: ``(D,)`` current joint positions (or the last commanded target in stream
        mode), or None; ignored when its shape is wrong or it is not finite.
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
    for what, lim in (('lower', limits.lower), ('upper', limits.upper)):
        if len(lim) and len(lim) != arr.shape[1]:
            raise UnsafeChunkError(f'{len(lim)} {what} limit(s) for {arr.shape[1]} joints')
    if current is not None:
        current = np.asarray(current, dtype=np.float64)
        if current.shape != (arr.shape[1],) or not is_finite(current):
            current = None
    out = clamp_to_limits(arr, limits.lower, limits.upper)
    return limit_steps(out, current, limits.max_step)
