"""The maths of each action-slice kind (robot units out; see ``docs/embodiment.md``)."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.rotations import from_quat
from retain_ros.embodiment.rotations import quat_multiply
from retain_ros.embodiment.rotations import quat_normalize
from retain_ros.embodiment.rotations import rotvec_to_quat
from retain_ros.embodiment.rotations import to_quat
from retain_ros.embodiment.rotations import to_rotvec
from retain_ros.embodiment.spec import ActionSlice
from retain_ros.embodiment.spec import RobotState


def measured(sl: ActionSlice, at: RobotState, label: str) -> np.ndarray:
    """Return the measured positions of the slice's joints at the observation.

    :raises EmbodimentError: naming the first joint missing from the state.
    """
    missing = [j for j in sl.joints if j not in at.joints]
    if missing:
        raise EmbodimentError(f'{label}: slice {sl.name!r} ({sl.kind}) needs the measured '
                              f'position of joint {missing[0]!r} at the observation, but the '
                              f'joint state has {sorted(at.joints)}')
    return np.array([at.joints[j] for j in sl.joints], dtype=np.float64)


def _clip(sl: ActionSlice, a: np.ndarray) -> np.ndarray:
    return a if sl.clip is None else np.clip(a, sl.clip[0], sl.clip[1])


def velocity_steps(sl: ActionSlice, a: np.ndarray) -> np.ndarray:
    """joint_velocity: per-step joint changes ``scale * inverse_ops(clip(v))`` (robot units)."""
    return sl.scale * sl.ops.inverse(_clip(sl, a))


def joint_positions(sl: ActionSlice, a: np.ndarray, at: RobotState, label: str) -> np.ndarray:
    """``(H, n)`` joint targets in robot units for a joint kind.

    - joint_position: ``inverse_ops(a)``;
    - joint_delta: ``inverse_ops(forward_ops(q_obs) + a)``, anchored once at the observation;
    - joint_velocity: ``q_obs + cumsum(scale * inverse_ops(clip(v)))``.
    """
    if sl.kind == 'joint_position':
        return sl.ops.inverse(a)
    q_obs = measured(sl, at, label)
    if sl.kind == 'joint_delta':
        return sl.ops.inverse(sl.ops.forward(q_obs)[None, :] + a)
    return q_obs[None, :] + np.cumsum(velocity_steps(sl, a), axis=0)


def ee_deltas(sl: ActionSlice, a: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """ee_delta: ``(dpos (H, 3) m, rotvec (H, 3) rad)`` per control step.

    The values are clipped (policy units), put through the inverse ops, then the position part
    is multiplied by ``position_scale`` and the rotation (converted to a rotation vector) by
    ``rotation_scale``.
    """
    a = sl.ops.inverse(_clip(sl, a))
    dpos = a[:, :3] * sl.position_scale
    rotvec = to_rotvec(a[:, 3:], sl.rotation) * sl.rotation_scale
    return dpos, rotvec


def ee_pose_targets(sl: ActionSlice, a: np.ndarray) -> np.ndarray:
    """ee_pose: ``(H, 7)`` absolute targets ``xyz + quaternion xyzw``."""
    a = sl.ops.inverse(a)
    return np.concatenate([a[:, :3], to_quat(a[:, 3:], sl.rotation)], axis=1)


def integrate_pose(position: np.ndarray, quat: np.ndarray, dpos: np.ndarray,
                   rotvec: np.ndarray) -> np.ndarray:
    """Compose the observation's pose with the accumulated deltas (both in the base frame).

    ``p_k = p_obs + sum_{i<=k} dpos_i`` and ``R_k = exp(rotvec_k) R_{k-1}`` (rotation applied on
    the left, as robosuite / LIBERO's OSC controller does with base-frame deltas).

    :return: ``(H, 7)`` poses ``xyz + quaternion xyzw``.
    """
    pos = np.asarray(position, dtype=np.float64)[None, :] + np.cumsum(dpos, axis=0)
    q = quat_normalize(quat)
    quats = np.empty((dpos.shape[0], 4))
    for k in range(dpos.shape[0]):
        q = quat_normalize(quat_multiply(rotvec_to_quat(rotvec[k]), q))
        quats[k] = q[0]
    return np.concatenate([pos, quats], axis=1)


def pose_state(position, orientation, rotation: str) -> np.ndarray:
    """Convert a PoseStamped reading to ``xyz + rotation`` in ``rotation`` format."""
    pos = np.asarray(position, dtype=np.float64).reshape(3)
    return np.concatenate([pos, from_quat(np.asarray(orientation, float), rotation)[0]])
