"""Gripper slices: binarize with hysteresis, inversion, affine map to the actuator.

Order, per value (all comparisons in the policy's units):

1. ``binarize`` (optional): a value above ``threshold + hysteresis`` switches to *closed*, one
   below ``threshold - hysteresis`` switches to *open*, anything between keeps the previous
   decision. The previous decision chains along the chunk and persists across chunks (the
   caller keeps it); with no previous decision the plain threshold decides (``> threshold``).
   Closed becomes ``policy_range[1]``, open ``policy_range[0]``. NaN stays NaN (the safety filter
   rejects it) and leaves the memory untouched.
2. ``invert`` (optional): ``p = policy_range[0] + policy_range[1] - p`` (the policy's
   ``policy_range[1]`` then means open).
3. affine: ``policy_range[0] -> actuator_range[0]`` (open), ``policy_range[1] ->
   actuator_range[1]`` (closed), linear in between (and beyond: the safety filter clamps).
"""
from __future__ import annotations

from typing import Optional
from typing import Tuple

import numpy as np

from retain_ros.embodiment.spec import ActionSlice


def binarize(p: np.ndarray, threshold: float, hysteresis: float,
             memory: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Binarize ``(H, n)`` policy values with hysteresis.

    :param p: policy values.
    :param threshold: the switching point.
    :param hysteresis: margin on each side of ``threshold`` (>= 0).
    :param memory: ``(n,)`` booleans (True = closed) from the previous call, or None.
    :return: ``(closed, memory)``: an ``(H, n)`` array of 1.0 (closed), 0.0 (open) or NaN, and
        the decisions after the last row (None while a joint has never had a finite value).
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    state = None if memory is None else np.array(memory, dtype=bool, copy=True)
    known = np.zeros(p.shape[1], dtype=bool) if state is None else np.ones(p.shape[1], bool)
    if state is None:
        state = np.zeros(p.shape[1], dtype=bool)
    for k in range(p.shape[0]):
        row = p[k]
        finite = np.isfinite(row)
        decided = np.where(state, ~(row < threshold - hysteresis), row > threshold + hysteresis)
        fresh = row > threshold
        new = np.where(known, decided, fresh)
        state = np.where(finite, new, state)
        known = known | finite
        out[k] = np.where(finite, state.astype(np.float64), np.nan)
    return out, (state if known.all() else None)


def gripper_positions(sl: ActionSlice, p: np.ndarray,
                      memory: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Actuator positions ``(H, n)`` for the policy values ``p`` of a gripper slice.

    :param sl: the gripper :class:`ActionSlice`.
    :param p: ``(H, n)`` policy values.
    :param memory: the slice's binarize memory from the previous call (or None).
    :return: ``(positions, memory)`` (memory unchanged when the slice does not binarize).
    """
    p = np.asarray(p, dtype=np.float64)
    lo, hi = sl.policy_range
    if sl.threshold is not None:
        closed, memory = binarize(p, sl.threshold, sl.hysteresis, memory)
        p = lo + closed * (hi - lo)
    if sl.invert:
        p = lo + hi - p
    a_open, a_closed = sl.actuator_range
    return a_open + (p - lo) / (hi - lo) * (a_closed - a_open), memory
