"""Rotation formats and conversions (pure numpy, float64, rows = samples).

Formats (``ROTATION_SIZES``):

- ``quaternion``: ``(x, y, z, w)``, normalised on the way in;
- ``euler``: ``(roll, pitch, yaw)``, extrinsic x-y-z, so ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``
  (the ROS ``tf`` RPY convention);
- ``axis_angle``: a rotation vector (unit axis times the angle in rad, angle in ``[0, pi]``);
- ``rot6d``: the first two ROWS of the rotation matrix, ``(R00, R01, R02, R10, R11, R12)``, as
  pytorch3d's ``matrix_to_rotation_6d``; read back with Gram-Schmidt.

Every conversion goes through the 3x3 matrix, except quaternion <-> rotation vector which is
done directly (better conditioned near 0 and pi).
"""
from __future__ import annotations

import numpy as np

ROTATION_SIZES = {'quaternion': 4, 'euler': 3, 'axis_angle': 3, 'rot6d': 6}


def _rows(values: np.ndarray, width: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape[-1] != width:
        raise ValueError(f'expected {width} values per rotation, got shape {arr.shape}')
    return arr.reshape(-1, width)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Normalise xyzw quaternions; a zero quaternion raises ``ValueError``."""
    q = _rows(q, 4)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError('zero quaternion')
    return q / norm


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyzw quaternions -> ``(N, 3, 3)`` matrices."""
    x, y, z, w = quat_normalize(q).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` matrices -> ``(N, 4)`` unit xyzw quaternions with ``w >= 0``.

    Shepperd's method: the largest of ``w, x, y, z`` is computed from the diagonal first.
    """
    m = np.asarray(m, dtype=np.float64).reshape(-1, 3, 3)
    out = np.empty((m.shape[0], 4))
    for i, r in enumerate(m):
        trace = r[0, 0] + r[1, 1] + r[2, 2]
        candidates = (trace, r[0, 0], r[1, 1], r[2, 2])
        k = int(np.argmax(candidates))
        if k == 0:
            s = 2.0 * np.sqrt(max(1.0 + trace, 0.0))
            q = ((r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s,
                 0.25 * s)
        elif k == 1:
            s = 2.0 * np.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
            q = (0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s,
                 (r[2, 1] - r[1, 2]) / s)
        elif k == 2:
            s = 2.0 * np.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 0.0))
            q = ((r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s,
                 (r[0, 2] - r[2, 0]) / s)
        else:
            s = 2.0 * np.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 0.0))
            q = ((r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s,
                 (r[1, 0] - r[0, 1]) / s)
        out[i] = q
    out = out / np.linalg.norm(out, axis=1, keepdims=True)
    out[out[:, 3] < 0] *= -1.0
    return out


def rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    """``(N, 3)`` rotation vectors -> ``(N, 4)`` xyzw quaternions."""
    v = _rows(v, 3)
    angle = np.linalg.norm(v, axis=1)
    half = 0.5 * angle
    small = angle < 1e-6
    # sin(a/2)/a, with its Taylor series near 0
    k = np.where(small, 0.5 - angle ** 2 / 48.0,
                 np.sin(half) / np.where(small, 1.0, angle))
    return np.concatenate([v * k[:, None], np.cos(half)[:, None]], axis=1)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyzw quaternions -> ``(N, 3)`` rotation vectors with angle in ``[0, pi]``."""
    q = quat_normalize(q)
    q = np.where(q[:, 3:4] < 0, -q, q)
    xyz = q[:, :3]
    s = np.linalg.norm(xyz, axis=1)
    angle = 2.0 * np.arctan2(s, q[:, 3])
    small = s < 1e-9
    k = np.where(small, 2.0 / np.where(small, q[:, 3], 1.0),
                 angle / np.where(small, 1.0, s))
    return xyz * k[:, None]


def euler_to_matrix(e: np.ndarray) -> np.ndarray:
    """``(N, 3)`` roll, pitch, yaw (extrinsic xyz) -> ``(N, 3, 3)``."""
    roll, pitch, yaw = _rows(e, 3).T
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    return np.stack([
        np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
        np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
        np.stack([-sp, cp * sr, cp * cr], -1),
    ], axis=1)


def matrix_to_euler(m: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` -> ``(N, 3)`` roll, pitch, yaw; at gimbal lock (pitch = +-pi/2) roll = 0."""
    m = np.asarray(m, dtype=np.float64).reshape(-1, 3, 3)
    cp = np.hypot(m[:, 0, 0], m[:, 1, 0])
    pitch = np.arctan2(-m[:, 2, 0], cp)
    locked = cp < 1e-9
    roll = np.where(locked, 0.0, np.arctan2(m[:, 2, 1], m[:, 2, 2]))
    yaw = np.where(locked, np.arctan2(-m[:, 0, 1], m[:, 1, 1]),
                   np.arctan2(m[:, 1, 0], m[:, 0, 0]))
    return np.stack([roll, pitch, yaw], axis=1)


def rot6d_to_matrix(d: np.ndarray) -> np.ndarray:
    """``(N, 6)`` first two rows -> ``(N, 3, 3)`` (Gram-Schmidt, third row = cross product)."""
    d = _rows(d, 6)
    a, b = d[:, :3], d[:, 3:]
    na = np.linalg.norm(a, axis=1, keepdims=True)
    if np.any(na < 1e-12):
        raise ValueError('degenerate rot6d (zero first row)')
    r0 = a / na
    b = b - np.sum(r0 * b, axis=1, keepdims=True) * r0
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    if np.any(nb < 1e-12):
        raise ValueError('degenerate rot6d (rows are parallel)')
    r1 = b / nb
    return np.stack([r0, r1, np.cross(r0, r1)], axis=1)


def matrix_to_rot6d(m: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` -> ``(N, 6)``: rows 0 and 1 concatenated."""
    m = np.asarray(m, dtype=np.float64).reshape(-1, 3, 3)
    return m[:, :2, :].reshape(-1, 6)


def to_quat(values: np.ndarray, fmt: str) -> np.ndarray:
    """Rotations in ``fmt`` -> ``(N, 4)`` xyzw quaternions."""
    if fmt == 'quaternion':
        return quat_normalize(values)
    if fmt == 'axis_angle':
        return rotvec_to_quat(values)
    if fmt == 'euler':
        return matrix_to_quat(euler_to_matrix(values))
    if fmt == 'rot6d':
        return matrix_to_quat(rot6d_to_matrix(values))
    raise ValueError(f'unknown rotation format {fmt!r}')


def from_quat(q: np.ndarray, fmt: str) -> np.ndarray:
    """``(N, 4)`` xyzw quaternions -> rotations in ``fmt``."""
    if fmt == 'quaternion':
        return quat_normalize(q)
    if fmt == 'axis_angle':
        return quat_to_rotvec(q)
    if fmt == 'euler':
        return matrix_to_euler(quat_to_matrix(q))
    if fmt == 'rot6d':
        return matrix_to_rot6d(quat_to_matrix(q))
    raise ValueError(f'unknown rotation format {fmt!r}')


def to_rotvec(values: np.ndarray, fmt: str) -> np.ndarray:
    """Rotations in ``fmt`` -> ``(N, 3)`` rotation vectors (identity for ``axis_angle``)."""
    if fmt == 'axis_angle':
        return _rows(values, 3).copy()
    return quat_to_rotvec(to_quat(values, fmt))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of xyzw quaternions (rotation ``b`` first, then ``a``)."""
    ax, ay, az, aw = _rows(a, 4).T
    bx, by, bz, bw = _rows(b, 4).T
    return np.stack([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz], axis=1)
