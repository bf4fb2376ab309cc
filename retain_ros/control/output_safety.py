"""Safety per output type (pure numpy): what may be published for one output of one chunk.

Every output's values go through :func:`safe_command` before they become ROS messages:

- any non-finite value rejects the whole command (:class:`UnsafeChunkError`, never published);
- position outputs (``joint_trajectory``, ``position_stream``, ``joint_state``): the joint
  filter of :mod:`retain_ros.control.safety` (clamp to ``lower`` / ``upper``, ``max_step`` per
  period chained from the measured positions);
- ``velocity_stream``: each joint clipped to ``+-max_velocity``; with position limits and a
  measured state, the integrated path ``q_obs + cumsum(v * dt)`` is kept inside them by reducing
  ``v`` (a joint already outside may move back in or stand still, never further out);
- ``twist``: the linear part scaled so its norm is at most ``max_linear``, the angular part so
  its norm is at most ``max_angular`` (the direction is kept);
- ``gripper_action``: clamped to the actuator range (``lower`` / ``upper``);
- ``pose``: the position clamped to the ``workspace`` box, the quaternion normalised.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from retain_ros.control.safety import make_safe
from retain_ros.control.safety import SafetyLimits
from retain_ros.control.safety import UnsafeChunkError
from retain_ros.embodiment.spec import OutputCommand
from retain_ros.embodiment.spec import OutputLimits
from retain_ros.embodiment.spec import POSITION_OUTPUTS

__all__ = ['UnsafeChunkError', 'safe_command']


def safe_command(cmd: OutputCommand, limits: OutputLimits, measured: Optional[np.ndarray],
                 dt: float) -> np.ndarray:
    """Check and shape the values of one output command.

    :param cmd: the :class:`OutputCommand` from ``Embodiment.commands``.
    :param limits: the output's :class:`OutputLimits` (``OutputSpec.limits``).
    :param measured: ``(d,)`` measured positions of the output's joints at the observation
        (position and velocity outputs), or None when unknown (then the chains start at the
        first value and velocity paths are not bounded by position).
    :param dt: the control period (s).
    :return: ``(H, d)`` float64 safe values (a copy).
    :raises UnsafeChunkError: non-finite values or a wrong shape.
    """
    values = np.array(cmd.values, dtype=np.float64, copy=True)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] != len(cmd.names):
        raise UnsafeChunkError(f'{cmd.name}: values must be (H, {len(cmd.names)}), got shape '
                               f'{tuple(np.shape(cmd.values))}')
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise UnsafeChunkError(f'{cmd.name}: {bad} non-finite value(s), nothing is published')
    if cmd.type in POSITION_OUTPUTS:
        return make_safe(values, measured, SafetyLimits(limits.lower, limits.upper,
                                                        limits.max_step), dim=len(cmd.names))
    if cmd.type == 'velocity_stream':
        return _velocities(values, limits, measured, dt)
    if cmd.type == 'twist':
        values[:, :3] = _cap_norm(values[:, :3], limits.max_linear)
        values[:, 3:] = _cap_norm(values[:, 3:], limits.max_angular)
        return values
    if cmd.type == 'gripper_action':
        return _clamp(values, limits.lower, limits.upper)
    if cmd.type == 'pose':
        if limits.workspace is not None:
            values[:, :3] = np.clip(values[:, :3], limits.workspace[0], limits.workspace[1])
        norm = np.linalg.norm(values[:, 3:], axis=1, keepdims=True)
        if np.any(norm < 1e-9):
            raise UnsafeChunkError(f'{cmd.name}: zero quaternion in a pose command')
        values[:, 3:] /= norm
        return values
    raise UnsafeChunkError(f'{cmd.name}: unknown output type {cmd.type!r}')


def _clamp(values: np.ndarray, lower, upper) -> np.ndarray:
    if len(lower):
        values = np.maximum(values, np.asarray(lower, dtype=np.float64))
    if len(upper):
        values = np.minimum(values, np.asarray(upper, dtype=np.float64))
    return values


def _cap_norm(part: np.ndarray, cap: float) -> np.ndarray:
    if not cap or cap <= 0:
        return part
    norm = np.linalg.norm(part, axis=1, keepdims=True)
    factor = np.where(norm > cap, cap / np.where(norm > 0, norm, 1.0), 1.0)
    return part * factor


def _velocities(values: np.ndarray, limits: OutputLimits, measured: Optional[np.ndarray],
                dt: float) -> np.ndarray:
    n = values.shape[1]
    vmax = np.full(n, np.inf)
    if len(limits.max_velocity):
        vmax = np.broadcast_to(np.asarray(limits.max_velocity, dtype=np.float64), (n,)).copy()
    out = np.clip(values, -vmax, vmax)
    q = None if measured is None else np.asarray(measured, dtype=np.float64)
    if q is None or q.shape != (n,) or not np.all(np.isfinite(q)) or not dt > 0:
        return out
    if not (len(limits.lower) or len(limits.upper)):
        return out
    lower = np.full(n, -np.inf) if not len(limits.lower) else \
        np.asarray(limits.lower, dtype=np.float64)
    upper = np.full(n, np.inf) if not len(limits.upper) else \
        np.asarray(limits.upper, dtype=np.float64)
    q = q.copy()
    for k in range(out.shape[0]):
        lo = np.minimum((lower - q) / dt, 0.0)
        hi = np.maximum((upper - q) / dt, 0.0)
        out[k] = np.clip(np.clip(out[k], lo, hi), -vmax, vmax)
        q = q + out[k] * dt
    return out
