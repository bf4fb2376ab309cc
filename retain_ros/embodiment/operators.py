"""Unit operators: robot units <-> policy units, applied per dimension.

An ``ops`` list is applied in order from robot to policy (state in); actions go the other way,
through the exact inverses in reverse order. Operators (one mapping each in the YAML list):

- ``{rad_to_deg: true}``: policy = robot * 180 / pi;
- ``{scale: s}`` (number or one per dimension, non-zero): policy = robot * s;
- ``{offset: o}`` (number or one per dimension): policy = robot + o;
- ``{sign: [1, -1, ...]}`` (each +1 or -1, or one number): policy = robot * sign;
- ``{range: {robot: [a, b], policy: [c, d]}}`` (affine, ``a != b``, ``c != d``; a pair for all
  dimensions or one pair per dimension): policy = c + (robot - a) * (d - c) / (b - a);
- ``{aloha_gripper: true}`` (or a per-dimension list of booleans): openpi's ALOHA gripper
  conversion from ALOHA's normalised LINEAR finger position (0..1 between 0.01844 m and
  0.05800 m) to pi0's normalised ANGULAR gripper (0..1 between 0.5476 and 1.6296 rad) through
  the Interbotix horn geometry (arm 0.036 m, horn 0.022 m); the inverse solves the same geometry
  for the linear position (exact while the angle stays within ``arcsin``'s range, i.e. policy
  values up to about 0.945).
"""
from __future__ import annotations

from typing import Any
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np

from retain_ros.embodiment.errors import fail

OPERATORS = ('rad_to_deg', 'scale', 'offset', 'sign', 'range', 'aloha_gripper')

# openpi / ALOHA constants (see the module docstring)
_LIN_CLOSE, _LIN_OPEN = 0.01844, 0.05800
_ANG_LO, _ANG_HI = 0.5476, 1.6296
_ARM, _HORN = 0.036, 0.022


def aloha_linear_to_angular(x: np.ndarray) -> np.ndarray:
    """ALOHA normalised linear gripper position -> pi0 normalised angular gripper position."""
    lin = _LIN_CLOSE + np.asarray(x, dtype=np.float64) * (_LIN_OPEN - _LIN_CLOSE)
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = (_HORN ** 2 + lin ** 2 - _ARM ** 2) / (2.0 * _HORN * lin)
    angle = np.arcsin(np.clip(ratio, -1.0, 1.0))
    return (angle - _ANG_LO) / (_ANG_HI - _ANG_LO)


def aloha_angular_to_linear(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`aloha_linear_to_angular` (the positive root of the horn geometry)."""
    angle = _ANG_LO + np.asarray(y, dtype=np.float64) * (_ANG_HI - _ANG_LO)
    lin = _HORN * np.sin(angle) + np.sqrt(_ARM ** 2 - (_HORN * np.cos(angle)) ** 2)
    return (lin - _LIN_CLOSE) / (_LIN_OPEN - _LIN_CLOSE)


class Operator:
    """One unit operator: ``forward`` robot -> policy, ``inverse`` policy -> robot.

    :param kind: one of :data:`OPERATORS`.
    :param a: first parameter array (broadcast over the last axis).
    :param b: second parameter array (``range`` only).
    :param text: how the operator reads in ``describe()``.
    """

    def __init__(self, kind: str, a: Any = None, b: Any = None, text: str = ''):
        self.kind = kind
        self.a = a
        self.b = b
        self.text = text or kind

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Robot units -> policy units."""
        k, a, b = self.kind, self.a, self.b
        if k == 'rad_to_deg':
            return x * (180.0 / np.pi)
        if k in ('scale', 'sign'):
            return x * a
        if k == 'offset':
            return x + a
        if k == 'range':
            gain = (b[..., 1] - b[..., 0]) / (a[..., 1] - a[..., 0])
            return b[..., 0] + (x - a[..., 0]) * gain
        return np.where(a, aloha_linear_to_angular(x), x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Policy units -> robot units."""
        k, a, b = self.kind, self.a, self.b
        if k == 'rad_to_deg':
            return y * (np.pi / 180.0)
        if k in ('scale', 'sign'):
            return y / a
        if k == 'offset':
            return y - a
        if k == 'range':
            gain = (a[..., 1] - a[..., 0]) / (b[..., 1] - b[..., 0])
            return a[..., 0] + (y - b[..., 0]) * gain
        return np.where(a, aloha_angular_to_linear(y), y)


class OpChain:
    """An ordered list of :class:`Operator` over ``dim`` values."""

    def __init__(self, ops: Sequence[Operator] = ()):
        self.ops = list(ops)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Robot -> policy: every operator in order."""
        out = np.array(x, dtype=np.float64, copy=True)
        for op in self.ops:
            out = op.forward(out)
        return out

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Policy -> robot: the inverses in reverse order."""
        out = np.array(y, dtype=np.float64, copy=True)
        for op in reversed(self.ops):
            out = op.inverse(out)
        return out

    def describe(self) -> str:
        """``'rad_to_deg, scale 100'`` or ``'-'`` when empty."""
        return ', '.join(op.text for op in self.ops) or '-'


def _numbers(value: Any, dim: Optional[int], source: str, path: str,
             allow_zero: bool = True) -> np.ndarray:
    """Check a number or a per-dimension list of numbers (finite, length ``dim``)."""
    if isinstance(value, bool):
        raise fail(source, path, f'expected a number or a list of numbers, got {value!r}')
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(source, path,
                   f'expected a number or a list of numbers, got {value!r}') from None
    if arr.ndim > 1:
        raise fail(source, path, f'expected a number or a flat list, got {value!r}')
    if arr.ndim == 1 and dim is not None and arr.size != dim:
        raise fail(source, path, f'has {arr.size} value(s) but there are {dim} dimension(s)')
    if not np.all(np.isfinite(arr)):
        raise fail(source, path, f'values must be finite, got {value!r}')
    if not allow_zero and np.any(arr == 0):
        raise fail(source, path, 'values must be non-zero (the operator must be invertible)')
    return arr


def _pairs(value: Any, dim: Optional[int], source: str, path: str) -> np.ndarray:
    """Check ``[a, b]`` for all dimensions or one ``[a, b]`` each, ends distinct."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros((0,))
    if not (arr.shape == (2,) or (arr.ndim == 2 and arr.shape[1] == 2
                                  and (dim is None or arr.shape[0] == dim))):
        raise fail(source, path, f'expected [a, b] or one [a, b] per dimension ({dim}), got '
                   f'{value!r}')
    if not np.all(np.isfinite(arr)):
        raise fail(source, path, f'values must be finite, got {value!r}')
    if np.any(arr[..., 0] == arr[..., 1]):
        raise fail(source, path, f'the two ends must differ, got {value!r}')
    return arr


def parse_ops(raw: Any, dim: Optional[int], source: str, path: str) -> OpChain:
    """Parse an ``ops`` list from YAML.

    :param raw: the YAML value (None or a list of one-key mappings).
    :param dim: the number of values the operators act on (None = not known yet: per-dimension
        lengths are checked later, when the joints are bound).
    :param source: the file name, for errors.
    :param path: the field path of the list, for errors.
    :return: the :class:`OpChain`.
    :raises EmbodimentError: naming ``path[i]`` and the problem.
    """
    if raw is None:
        return OpChain()
    if not isinstance(raw, list):
        raise fail(source, path, f'must be a list of operators, got {raw!r}')
    ops: List[Operator] = []
    for i, item in enumerate(raw):
        where = f'{path}[{i}]'
        if not isinstance(item, dict) or len(item) != 1:
            raise fail(source, where, f'each operator is a one-key mapping such as '
                       f'{{scale: 100.0}}, got {item!r}')
        (kind, value), = item.items()
        where = f'{where}.{kind}'
        if kind not in OPERATORS:
            raise fail(source, f'{path}[{i}]', f'unknown operator {kind!r} (use one of '
                       f'{", ".join(OPERATORS)})')
        ops.append(_parse_one(kind, value, dim, source, where))
    return OpChain(ops)


def _parse_one(kind: str, value: Any, dim: Optional[int], source: str, where: str) -> Operator:
    if kind == 'rad_to_deg':
        if value is not True:
            raise fail(source, where, f'must be true, got {value!r}')
        return Operator(kind)
    if kind == 'aloha_gripper':
        if value is True:
            return Operator(kind, np.asarray(True), text='aloha_gripper')
        if isinstance(value, list) and all(isinstance(v, bool) for v in value) and \
                (dim is None or len(value) == dim):
            return Operator(kind, np.asarray(value, dtype=bool), text=f'aloha_gripper {value}')
        raise fail(source, where, f'must be true or one boolean per dimension ({dim}), got '
                   f'{value!r}')
    if kind == 'range':
        if not isinstance(value, dict) or set(value) != {'robot', 'policy'}:
            raise fail(source, where, f'must be {{robot: [a, b], policy: [c, d]}}, got {value!r}')
        a = _pairs(value['robot'], dim, source, f'{where}.robot')
        b = _pairs(value['policy'], dim, source, f'{where}.policy')
        text = f'range robot {value["robot"]} -> policy {value["policy"]}'
        return Operator(kind, a, b, text)
    arr = _numbers(value, dim, source, where, allow_zero=kind == 'offset')
    if kind == 'sign' and not np.all(np.abs(arr) == 1.0):
        raise fail(source, where, f'signs must be 1 or -1, got {value!r}')
    shown = arr.tolist() if arr.ndim else float(arr)
    return Operator(kind, arr, text=f'{kind} {shown}')
