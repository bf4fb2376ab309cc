"""Exact maths of every slice kind and output type (``Embodiment.commands`` / ``hold``)."""
import copy

import numpy as np
import pytest

from retain_ros.embodiment import EmbodimentError
from retain_ros.embodiment import load_embodiment
from retain_ros.embodiment import load_embodiment_data
from retain_ros.embodiment import RobotState
from retain_ros.embodiment.rotations import quat_to_matrix
from retain_ros.embodiment.rotations import rotvec_to_quat

RNG = np.random.default_rng(3)
J = ['j0', 'j1', 'j2']


def _doc(actions, outputs, state=None):
    return {'name': 't', 'cameras': [{'slot': 'base', 'topic': '/cam'}],
            'state': state or [{'topic': 'js', 'type': 'joint_state', 'joints': J}],
            'actions': actions, 'outputs': outputs}


def _state(q, pose=None):
    return RobotState(dict(zip(J, map(float, q))), {}, pose)


def test_joint_position_applies_inverse_ops():
    emb = load_embodiment_data(_doc(
        [{'name': 'arm', 'kind': 'joint_position', 'joints': J, 'ops': [{'rad_to_deg': True}]}],
        [{'name': 'arm', 'type': 'joint_trajectory', 'topic': '/c', 'slices': ['arm']}]))
    a = RNG.uniform(-90, 90, size=(5, 3))
    cmd = emb.commands(a, _state([0, 0, 0]), 0.1)['arm']
    assert cmd.names == J and cmd.type == 'joint_trajectory' and cmd.topic == '/c'
    np.testing.assert_allclose(cmd.values, np.deg2rad(a), rtol=0, atol=1e-14)


def test_joint_delta_is_anchored_at_the_observation_once():
    emb = load_embodiment_data(_doc(
        [{'name': 'arm', 'kind': 'joint_delta', 'joints': J, 'ops': [{'rad_to_deg': True}]}],
        [{'name': 'arm', 'type': 'position_stream', 'topic': '/c', 'slices': ['arm']}]))
    a = RNG.uniform(-5, 5, size=(8, 3))
    q1, q2 = np.array([0.1, -0.2, 0.3]), np.array([0.5, 0.4, -0.9])
    v1 = emb.commands(a, _state(q1), 0.1)['arm'].values
    v2 = emb.commands(a, _state(q2), 0.1)['arm'].values
    # every row is the SAME anchor + its own delta: no per-tick re-anchoring
    np.testing.assert_allclose(v1, q1 + np.deg2rad(a), rtol=0, atol=1e-13)
    np.testing.assert_allclose(v2 - v1, np.broadcast_to(q2 - q1, v1.shape), rtol=0, atol=1e-13)


def test_joint_velocity_integrates_from_the_observation():
    emb = load_embodiment('droid')
    names = [f'fr3_joint{i}' for i in range(1, 8)]
    q_obs = RNG.uniform(-1, 1, size=7)
    at = RobotState({**dict(zip(names, q_obs)), 'fr3_finger_joint1': 0.02})
    a = RNG.uniform(-1.5, 1.5, size=(10, 8))
    dt = 0.0667
    cmds = emb.commands(a, at, dt)
    # float64 reference, written independently of the implementation
    expected = np.empty((10, 7))
    q = q_obs.copy()
    for k in range(10):
        q = q + 0.2 * np.minimum(np.maximum(a[k, :7], -1.0), 1.0)
        expected[k] = q
    assert cmds['arm'].type == 'velocity_stream'
    np.testing.assert_allclose(cmds['arm'].values, 0.2 * np.clip(a[:, :7], -1, 1) / dt,
                               rtol=0, atol=0)
    pos = q_obs + np.cumsum(cmds['arm'].values * dt, axis=0)
    np.testing.assert_allclose(pos, expected, rtol=0, atol=1e-12)
    assert cmds['gripper'].values.shape == (10, 1)


def test_joint_velocity_into_a_trajectory_and_velocity_stream_from_positions():
    doc = _doc([{'name': 'arm', 'kind': 'joint_velocity', 'joints': J, 'scale': 0.1,
                 'clip': [-1, 1]}],
               [{'name': 'traj', 'type': 'joint_trajectory', 'topic': '/t', 'slices': ['arm']}])
    emb = load_embodiment_data(doc)
    a = RNG.uniform(-2, 2, size=(6, 3))
    q_obs = np.array([0.3, 0.2, 0.1])
    values = emb.commands(a, _state(q_obs), 0.05)['traj'].values
    np.testing.assert_allclose(values, q_obs + np.cumsum(0.1 * np.clip(a, -1, 1), axis=0),
                               rtol=0, atol=1e-14)
    doc = _doc([{'name': 'arm', 'kind': 'joint_position', 'joints': J}],
               [{'name': 'vel', 'type': 'velocity_stream', 'topic': '/v', 'slices': ['arm']}])
    emb = load_embodiment_data(doc)
    values = emb.commands(a, _state(q_obs), 0.05)['vel'].values
    prev = np.vstack([q_obs, a[:-1]])
    np.testing.assert_allclose(values, (a - prev) / 0.05, rtol=0, atol=1e-12)
    with pytest.raises(EmbodimentError, match="joint 'j0'"):
        emb.commands(a, RobotState({}), 0.05)


def _gripper_emb(binarize, invert=False):
    g = {'name': 'g', 'kind': 'gripper', 'joints': ['finger'], 'policy_range': [0.0, 1.0],
         'actuator_range': [0.04, 0.0], 'invert': invert}
    if binarize:
        g['binarize'] = binarize
    return load_embodiment_data(_doc(
        [g], [{'name': 'g', 'type': 'gripper_action', 'topic': '/g', 'slices': ['g']}]))


def test_gripper_affine_and_invert():
    p = np.array([[0.0], [0.25], [1.0]])
    emb = _gripper_emb(None)
    np.testing.assert_allclose(emb.commands(p, _state([0] * 3), 0.1)['g'].values,
                               [[0.04], [0.03], [0.0]], atol=1e-15)
    emb = _gripper_emb(None, invert=True)
    np.testing.assert_allclose(emb.commands(p, _state([0] * 3), 0.1)['g'].values,
                               [[0.0], [0.01], [0.04]], atol=1e-15)


def test_gripper_hysteresis_chains_persists_and_resets():
    emb = _gripper_emb({'threshold': 0.5, 'hysteresis': 0.1})
    at = _state([0] * 3)

    def run(seq):
        v = emb.commands(np.array(seq, dtype=float)[:, None], at, 0.1)['g'].values[:, 0]
        return [int(x == 0.0) for x in v]   # 1 = closed (actuator 0.0)

    # no memory: the plain threshold decides the first step (0.55 > 0.5 -> closed)
    assert run([0.55, 0.45, 0.41, 0.39, 0.45, 0.55, 0.59, 0.61, 0.5]) == \
        [1, 1, 1, 0, 0, 0, 0, 1, 1]
    # memory persists across calls: closed stays closed at 0.45
    assert run([0.45, 0.2]) == [1, 0]
    assert run([0.55, 0.65]) == [0, 1]
    emb.reset()
    assert run([0.45]) == [0]
    emb.reset()
    assert run([0.52, 0.45]) == [1, 1]
    # NaN stays NaN (the safety filter rejects it) and leaves the memory alone
    v = emb.commands(np.array([[np.nan], [0.45]]), at, 0.1)['g'].values[:, 0]
    assert np.isnan(v[0]) and v[1] == 0.0


def _ee_doc(kind='ee_delta', output='twist', rotation='axis_angle'):
    sl = {'name': 'ee', 'kind': kind, 'rotation': rotation, 'frame': 'base_link'}
    if kind == 'ee_delta':
        sl.update(clip=[-1, 1], position_scale=0.05, rotation_scale=0.5)
    state = [{'topic': '/ee', 'type': 'pose', 'rotation': 'quaternion'}]
    return _doc([sl], [{'name': 'ee', 'type': output, 'topic': '/o', 'slices': ['ee']}], state)


def test_ee_delta_twist_values():
    emb = load_embodiment_data(_ee_doc())
    a = RNG.uniform(-1.5, 1.5, size=(4, 6))
    cmd = emb.commands(a, RobotState(), 0.05)['ee']
    c = np.clip(a, -1, 1)
    np.testing.assert_allclose(cmd.values[:, :3], c[:, :3] * 0.05 / 0.05, atol=1e-15)
    np.testing.assert_allclose(cmd.values[:, 3:], c[:, 3:] * 0.5 / 0.05, atol=1e-14)
    assert cmd.frame == 'base_link' and cmd.names[0] == 'linear.x'
    assert np.all(emb.hold('ee', RobotState()) == 0) and emb.hold('ee', RobotState()).shape == \
        (1, 6)


def test_ee_delta_pose_composes_from_the_observation():
    emb = load_embodiment_data(_ee_doc(output='pose'))
    a = RNG.uniform(-1, 1, size=(5, 6))
    p0, q0 = np.array([0.4, 0.0, 0.3]), rotvec_to_quat([0.1, 0.2, -0.3])[0]
    values = emb.commands(a, RobotState({}, {}, (p0, q0)), 0.05)['ee'].values
    np.testing.assert_allclose(values[:, :3], p0 + np.cumsum(a[:, :3] * 0.05, axis=0),
                               atol=1e-14)
    m = quat_to_matrix(q0)[0]
    for k in range(5):
        m = quat_to_matrix(rotvec_to_quat(a[k, 3:] * 0.5))[0] @ m
        np.testing.assert_allclose(quat_to_matrix(values[k, 3:])[0], m, atol=1e-12)
    with pytest.raises(EmbodimentError, match='pose at the observation is unknown'):
        emb.commands(a, RobotState(), 0.05)
    hold = emb.hold('ee', RobotState({}, {}, (p0, q0)))
    np.testing.assert_allclose(hold, [np.concatenate([p0, q0])])


def test_ee_pose_absolute_targets():
    emb = load_embodiment_data(_ee_doc('ee_pose', 'pose', 'euler'))
    a = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, np.pi / 2]])
    values = emb.commands(a, RobotState(), 0.1)['ee'].values
    np.testing.assert_allclose(values, [[0.1, 0.2, 0.3, 0, 0, np.sqrt(0.5), np.sqrt(0.5)]],
                               atol=1e-15)


def test_state_vector_and_robot_state():
    emb = load_embodiment('so101')
    names = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll',
             'gripper']
    pos = [0.1, -0.2, 0.3, 0.4, -0.5, 0.875]
    msg = {'name': list(reversed(names)) + ['extra'], 'position': list(reversed(pos)) + [9.0],
           'velocity': []}
    state = emb.state_vector({'/joint_states': msg})
    np.testing.assert_allclose(state, list(np.rad2deg(pos[:5])) + [50.0], atol=1e-12)
    rs = emb.robot_state({'/joint_states': msg})
    assert rs.joints['extra'] == 9.0 and rs.joints['gripper'] == 0.875 and rs.velocities == {}
    with pytest.raises(EmbodimentError, match="so101.yaml: state\\[0\\]: no message yet"):
        emb.state_vector({})
    bad = copy.deepcopy(msg)
    bad['name'][0] = 'jaw'
    with pytest.raises(EmbodimentError, match="joint 'gripper' is not in the JointState"):
        emb.state_vector({'/joint_states': bad})
    # commands: degrees and 0..100 back to radians; hold = measured positions
    a = np.array([list(np.rad2deg(pos[:5])) + [50.0]])
    np.testing.assert_allclose(emb.commands(a, rs, 1 / 30)['arm'].values, [pos], atol=1e-12)
    np.testing.assert_allclose(emb.hold('arm', rs), [pos])
    assert emb.hold('arm', RobotState()) is None


def test_pose_state_and_droid_gripper_state():
    emb = load_embodiment('servo_ee')
    q = rotvec_to_quat([0.0, 0.0, 0.5])[0]
    readings = {'/ee_pose': {'position': (0.1, 0.2, 0.3), 'orientation': tuple(q)},
                '/joint_states': {'name': ['panda_finger_joint1', 'panda_finger_joint2'],
                                  'position': [0.03, 0.03], 'velocity': [0.0, 0.0]}}
    np.testing.assert_allclose(emb.state_vector(readings), [0.1, 0.2, 0.3, 0, 0, 0.5, 0.03, 0.03],
                               atol=1e-14)
    assert emb.robot_state(readings).ee_pose is not None
    droid = load_embodiment('droid')
    names = [f'fr3_joint{i}' for i in range(1, 8)]
    readings = {'/joint_states': {'name': names, 'position': list(range(7))},
                '/franka_gripper/joint_states': {'name': ['fr3_finger_joint1'],
                                                 'position': [0.01]}}
    np.testing.assert_allclose(droid.state_vector(readings), list(range(7)) + [0.75],
                               atol=1e-14)
    at = droid.robot_state(readings)
    assert np.all(droid.hold('arm', at) == 0) and droid.hold('arm', at).shape == (1, 7)
    np.testing.assert_allclose(droid.hold('gripper', at), [[0.01]])
    assert droid.hold('gripper', RobotState()) is None


def test_aloha_matches_openpi_adapt_to_pi():
    emb = load_embodiment('aloha')
    flip = np.array([1, -1, -1, 1, 1, 1])
    arm_l, arm_r = RNG.uniform(-1, 1, 6), RNG.uniform(-1, 1, 6)
    lin_l, lin_r = 0.03, 0.045
    left = ['left_waist', 'left_shoulder', 'left_elbow', 'left_forearm_roll', 'left_wrist_angle',
            'left_wrist_rotate']
    right = [n.replace('left_', 'right_') for n in left]
    readings = {
        '/follower_left/joint_states': {'name': left + ['left_gripper', 'left_left_finger'],
                                        'position': list(arm_l) + [0.8, lin_l]},
        '/follower_right/joint_states': {'name': right + ['right_gripper', 'right_left_finger'],
                                         'position': list(arm_r) + [0.9, lin_r]}}
    state = emb.state_vector(readings)

    def to_angular(lin):
        x = (lin - 0.01844) / (0.05800 - 0.01844)
        m = x * (0.05800 - 0.01844) + 0.01844
        v = np.arcsin(np.clip((0.022 ** 2 + m ** 2 - 0.036 ** 2) / (2 * 0.022 * m), -1, 1))
        return (v - 0.5476) / (1.6296 - 0.5476)

    expected = np.concatenate([arm_l * flip, [to_angular(lin_l)], arm_r * flip,
                               [to_angular(lin_r)]])
    np.testing.assert_allclose(state, expected, atol=1e-12)
    a = RNG.uniform(-1, 1, size=(3, 14))
    cmds = emb.commands(a, emb.robot_state(readings), 0.02)
    np.testing.assert_allclose(cmds['left_arm'].values, a[:, :6] * flip, atol=1e-15)
    np.testing.assert_allclose(cmds['right_arm'].values, a[:, 7:13] * flip, atol=1e-15)
    # openpi: gripper_from_angular, then the ALOHA runtime unnormalizes: policy + 0.5476 rad
    pj = (a[:, 6] + 0.5476 + 0.6213) / (1.4910 + 0.6213)
    np.testing.assert_allclose(cmds['left_gripper'].values[:, 0], pj * 2.1123 - 0.6213,
                               atol=1e-12)
    np.testing.assert_allclose(emb.hold('left_gripper', emb.robot_state(readings)), [[0.8]])


def test_commands_rejects_wrong_shapes():
    emb = load_embodiment('droid')
    with pytest.raises(EmbodimentError, match=r'\(H, 8\)'):
        emb.commands(np.zeros((3, 7)), RobotState(), 0.1)
    with pytest.raises(EmbodimentError, match='dt'):
        emb.commands(np.zeros((3, 8)), RobotState(), 0.0)
