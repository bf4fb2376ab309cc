"""Rotation formats (``embodiment/rotations.py``): round trips, edge cases, conventions."""
import numpy as np
import pytest

from retain_ros.embodiment.rotations import euler_to_matrix
from retain_ros.embodiment.rotations import from_quat
from retain_ros.embodiment.rotations import matrix_to_euler
from retain_ros.embodiment.rotations import quat_to_matrix
from retain_ros.embodiment.rotations import quat_to_rotvec
from retain_ros.embodiment.rotations import ROTATION_SIZES
from retain_ros.embodiment.rotations import rotvec_to_quat
from retain_ros.embodiment.rotations import to_quat

RNG = np.random.default_rng(7)


def _random_quats(n):
    q = RNG.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1
    return q


def _same_rotation(a, b, atol=1e-10):
    np.testing.assert_allclose(quat_to_matrix(a), quat_to_matrix(b), rtol=0, atol=atol)


@pytest.mark.parametrize('fmt', sorted(ROTATION_SIZES))
def test_rotation_formats_round_trip(fmt):
    q = _random_quats(200)
    back = to_quat(from_quat(q, fmt), fmt)
    np.testing.assert_allclose(back, q, rtol=0, atol=1e-10)
    values = from_quat(q, fmt)
    np.testing.assert_allclose(from_quat(to_quat(values, fmt), fmt), values, rtol=0, atol=1e-9)


def test_axis_angle_near_zero_and_pi():
    axes = RNG.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    for angle in (0.0, 1e-12, 1e-7, 1.0, np.pi - 1e-6, np.pi - 1e-9):
        v = axes * angle
        np.testing.assert_allclose(quat_to_rotvec(rotvec_to_quat(v)), v, rtol=0, atol=1e-9)
    # exactly pi: v and -v are the same rotation
    v = axes * np.pi
    _same_rotation(rotvec_to_quat(quat_to_rotvec(rotvec_to_quat(v))), rotvec_to_quat(v))


def test_euler_convention_and_gimbal_lock():
    roll, pitch, yaw = 0.3, -0.4, 1.2
    rx = np.array([[1, 0, 0], [0, np.cos(roll), -np.sin(roll)], [0, np.sin(roll), np.cos(roll)]])
    ry = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0],
                   [-np.sin(pitch), 0, np.cos(pitch)]])
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    np.testing.assert_allclose(euler_to_matrix([roll, pitch, yaw])[0], rz @ ry @ rx, atol=1e-15)
    for pitch in (np.pi / 2, -np.pi / 2, np.pi / 2 - 1e-7, -np.pi / 2 + 1e-10):
        e = np.array([[0.7, pitch, -0.4]])
        m = euler_to_matrix(e)
        np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(m)), m, rtol=0, atol=1e-8)


def test_rot6d_is_first_two_rows():
    q = _random_quats(5)
    m = quat_to_matrix(q)
    np.testing.assert_allclose(from_quat(q, 'rot6d'), m[:, :2, :].reshape(-1, 6), atol=1e-15)
    # a scaled, slightly skewed 6d still reads back as the nearest rotation (Gram-Schmidt)
    d = from_quat(q, 'rot6d') * 3.0
    _same_rotation(to_quat(d, 'rot6d'), q)
