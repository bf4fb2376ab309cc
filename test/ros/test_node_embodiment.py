"""Embodiments over a real rclpy graph: each output type and preset, live alpha, holds, bad files.

The node under test runs a real tiny pi0 whose chunk is replaced, after the model ran, by known
actions, so each published command can be compared with the embodiment maths applied to that
chunk (:mod:`retain_ros.embodiment`, exact-tested on its own in ``test/embodiment``). Fake
controllers are plain subscriptions with the QoS ros2_control's controllers use.
"""
import copy
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from geometry_msgs.msg import PoseStamped  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
import yaml  # noqa: E402

from retain_ros.control.output_safety import safe_command  # noqa: E402
from retain_ros.embodiment import load_embodiment  # noqa: E402
from retain_ros.ros.policy_node.node import StartupError  # noqa: E402
from conftest import RosHarness  # noqa: E402
from conftest import write_tiny_pi0  # noqa: E402

DT = 0.05
H = 10
MSG_TYPES = {'joint_trajectory': JointTrajectory, 'position_stream': Float64MultiArray,
             'velocity_stream': Float64MultiArray, 'joint_state': JointState,
             'twist': TwistStamped, 'pose': PoseStamped}
#: one file with every output type ROS can carry here (gripper_action needs control_msgs)
MULTI = {
    'name': 'multi', 'description': 'every output type',
    'state': [{'topic': 'joint_states', 'type': 'joint_state', 'joints': ['a', 'b', 'c', 'd']},
              {'topic': 'ee_pose', 'type': 'pose', 'rotation': 'axis_angle'}],
    'cameras': [{'slot': 'base', 'topic': 'camera/image_raw'}],
    'actions': [
        {'name': 'arm', 'kind': 'joint_position', 'joints': ['a', 'b']},
        {'name': 'wrist', 'kind': 'joint_velocity', 'joints': ['c', 'd'], 'clip': [-1, 1],
         'scale': 0.02},
        {'name': 'ee', 'kind': 'ee_delta', 'rotation': 'axis_angle', 'frame': 'base_link',
         'clip': [-1, 1], 'position_scale': 0.01, 'rotation_scale': 0.05},
        {'name': 'grip', 'kind': 'gripper', 'joints': ['g'], 'policy_range': [0, 1],
         'actuator_range': [0.04, 0.0], 'binarize': {'threshold': 0.5, 'hysteresis': 0.1}}],
    'outputs': [
        {'name': 'arm', 'type': 'joint_trajectory', 'topic': '/arm_controller/joint_trajectory',
         'slices': ['arm', 'grip'], 'limits': {'lower': [-1, -1, 0], 'upper': [1, 1, 0.04],
                                               'max_step': 0.3}},
        {'name': 'arm_fwd', 'type': 'position_stream', 'topic': '/fwd_pos/commands',
         'slices': ['arm']},
        {'name': 'wrist', 'type': 'velocity_stream', 'topic': '/fwd_vel/commands',
         'slices': ['wrist'], 'limits': {'max_velocity': 0.5}},
        {'name': 'cmd', 'type': 'joint_state', 'topic': 'joint_command', 'slices': ['arm']},
        {'name': 'servo', 'type': 'twist', 'topic': '/servo_node/delta_twist_cmds',
         'slices': ['ee'], 'rate': 40.0, 'limits': {'max_linear': 0.5, 'max_angular': 2.0}},
        {'name': 'target', 'type': 'pose', 'topic': '/cartesian/target', 'slices': ['ee']}],
}
STATE = {'a': 0.1, 'b': -0.2, 'c': 0.3, 'd': 0.0}
EE = ((0.4, 0.1, 0.3), (0.0, 0.0, 0.0, 1.0))


def _write(tmp_path, data, name='robot.yaml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _checkpoints(tmp_path, state_dim, action_dim, cameras):
    root = tmp_path / f'pi0_{state_dim}_{action_dim}_{len(cameras)}'
    if not root.exists():
        for name, seed in (('pre', 1), ('ft', 2)):
            write_tiny_pi0(root / name, seed=seed, camera_names=tuple(cameras),
                           state_dim=state_dim, action_dim=action_dim, chunk_size=H,
                           control_period=DT)
    return str(root / 'pre'), str(root / 'ft')


class Fixed:
    """Run the real model, then hand out known actions (alpha-tagged when asked)."""

    def __init__(self, node, actions, tag_alpha=False):
        self.node, self.actions, self.tag_alpha = node, np.asarray(actions), tag_alpha
        policy = node.runtime.policy
        self._real = policy.predict
        self.observations = []
        policy.predict = self

    def __call__(self, obs, **kwargs):
        chunk = self._real(obs, **kwargs)
        self.observations.append(obs)
        actions = self.actions.copy()
        if self.tag_alpha:
            actions[:] = self.node.merger.state.alphas['language']
        chunk.actions = actions
        return chunk


class Robot:
    """Publishes the robot's inputs of an embodiment (state topics, cameras) in the background."""

    def __init__(self, harness, emb, joints, ee=EE):
        self.h, self.emb, self.joints, self.ee = harness, emb, dict(joints), ee
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish_once(self):
        for slot, topic in self.emb.cameras:
            if topic != 'empty':
                self.h.publish_image(topic=topic)
        measured = {n for s in self.emb.state_sources for n in s.joints}
        first = next((s.topic for s in self.emb.state_sources if s.type != 'pose'), None)
        for source in {s.topic: s for s in self.emb.state_sources}.values():
            if source.type == 'pose':
                msg = PoseStamped()
                msg.header.stamp = self.h.stamp()
                p, q = self.ee
                msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = p
                o = msg.pose.orientation
                o.x, o.y, o.z, o.w = q
                self.h.publisher(PoseStamped, source.topic).publish(msg)
            else:
                names = [n for s in self.emb.state_sources if s.topic == source.topic
                         for n in s.joints]
                if source.topic == first:     # joints only commanded (grippers) go here
                    names += [n for n in self.joints if n not in measured]
                names = list(dict.fromkeys(names))
                self.h.publish_joints([self.joints[n] for n in names], names=names,
                                      topic=source.topic)

    def _run(self):
        while not self._stop.is_set():
            self.publish_once()
            time.sleep(0.03)

    def stop(self):
        self._stop.set()
        self._thread.join(2)


def _values(msg, kind):
    if kind == 'joint_trajectory':
        return np.array([p.positions for p in msg.points])
    if kind in ('position_stream', 'velocity_stream'):
        return np.array(msg.data)
    if kind == 'joint_state':
        return np.array(msg.position)
    if kind == 'twist':
        t = msg.twist
        return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y,
                         t.angular.z])
    p, o = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w])


def _expected(emb, actions, joints, ee=EE):
    from retain_ros.embodiment import RobotState

    robot = RobotState(joints=dict(joints), velocities={},
                       ee_pose=(np.array(ee[0]), np.array(ee[1])))
    emb.reset()
    cmds = emb.commands(actions, robot, DT)
    return {o.name: safe_command(cmds[o.name], o.limits, robot.positions(o.names)
                                 if o.names and all(n in joints for n in o.names) else None, DT)
            for o in emb.outputs}


@pytest.fixture
def harness():
    h = RosHarness()
    try:
        yield h
    finally:
        h.shutdown()


def _start(harness, tmp_path, emb_arg, emb, **params):
    pre, ft = _checkpoints(tmp_path, emb.state_dim, emb.action_dim,
                           [s for s, _ in emb.cameras])
    values = dict(embodiment=emb_arg, camera_topics=None, joint_names=None,
                  control_period=DT, replan_steps=H, max_observation_age=2.0)
    values.update(params)
    return harness.start_node(pre, ft, **values)


def _subscribe_all(harness, emb):
    return {o.name: (o.type, harness.subscribe(MSG_TYPES[o.type], o.topic))
            for o in emb.outputs}


def test_every_output_type_publishes_the_embodiment_maths(harness, tmp_path):
    path = _write(tmp_path, MULTI)
    emb = load_embodiment(path)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1.2, 1.2, size=(H, emb.action_dim))
    actions[:, -1] = [0.2, 0.7, 0.55, 0.45, 0.3, 0.9, 0.1, 0.65, 0.5, 0.8]
    subs = _subscribe_all(harness, emb)
    node = _start(harness, tmp_path, path, emb)
    Fixed(node, actions)
    joints = dict(STATE, g=0.04)
    robot = Robot(harness, emb, joints)
    try:
        traj = subs['arm'][1].wait(1, timeout=30)[0]
        expected = _expected(emb, actions, joints)
        assert list(traj.joint_names) == ['a', 'b', 'g']
        np.testing.assert_allclose(_values(traj, 'joint_trajectory'), expected['arm'],
                                   atol=1e-9)
        assert traj.points[0].time_from_start.nanosec == int(DT * 1e9)
        # stream outputs: rows of the same chunk, one per control period (the elapsed ones
        # dropped), so each received row is one row of the expected values
        for name in ('arm_fwd', 'wrist', 'cmd', 'servo', 'target'):
            kind, sub = subs[name]
            # velocity and twist outputs get zeros while the node waits for inputs (holding)
            msgs = sub.wait(2, timeout=10, predicate=lambda m, k=kind: _values(m, k).any())
            rows = expected[name]
            for msg in msgs[:2]:
                got = _values(msg, kind)
                assert np.min(np.abs(rows - got).max(axis=1)) < 1e-9, (name, got, rows)
        cmd = subs['cmd'][1].items[0][1]
        assert list(cmd.name) == ['a', 'b']
        twist = subs['servo'][1].items[0][1]
        assert twist.header.frame_id == 'base_link'
        # the twist is republished at >= 30 Hz between rows (MoveIt Servo's timeout is 0.1 s)
        subs['servo'][1].clear()
        time.sleep(0.5)
        assert len(subs['servo'][1]) >= 15
    finally:
        robot.stop()


def test_alpha_change_publishes_no_old_weights_on_any_output(harness, tmp_path):
    path = _write(tmp_path, MULTI)
    emb = load_embodiment(path)
    subs = _subscribe_all(harness, emb)
    node = _start(harness, tmp_path, path, emb, alpha=0.0, replan_steps=2)
    Fixed(node, np.zeros((H, emb.action_dim)), tag_alpha=True)
    joints = dict(STATE, g=0.04)
    robot = Robot(harness, emb, joints)
    try:
        subs['arm'][1].wait(2, timeout=30)
        for alpha in (1.0, 0.0, 1.0):
            reply = harness.set_params(alpha=alpha)[0]
            assert reply.successful, reply.reason
            done = time.monotonic()
            time.sleep(1.0)
            # the chunk's actions all equal the live alpha: positions = alpha (arm, its last
            # point: the step limit ramps from the measured state), velocities
            # = alpha * 0.02 / dt (wrist), twist = alpha * 0.01 / dt (servo); every message that
            # arrived after the set returned (0.2 s for messages in flight) carries the new one
            checks = {'arm': lambda v: v[-1, :2], 'arm_fwd': lambda v: v, 'cmd': lambda v: v,
                      'wrist': lambda v: v / (0.02 / DT), 'servo': lambda v: v[:3] / (0.01 / DT)}
            for name, scale in checks.items():
                kind, sub = subs[name]
                late = [_values(m, kind) for t, m in sub.items[:] if t > done + 0.2]
                assert late, f'{name}: nothing published after the change'
                for values in late:
                    got = np.asarray(scale(values))
                    if name == 'servo' and not got.any():
                        continue
                    np.testing.assert_allclose(got, alpha, atol=1e-6, err_msg=name)
    finally:
        robot.stop()


def test_hold_and_deactivate_send_zeros_and_hold_points(harness, tmp_path):
    path = _write(tmp_path, MULTI)
    emb = load_embodiment(path)
    subs = _subscribe_all(harness, emb)
    node = _start(harness, tmp_path, path, emb, replan_steps=2, max_observation_age=0.3)
    joints = dict(STATE, g=0.04)
    Fixed(node, np.full((H, emb.action_dim), 0.9))
    robot = Robot(harness, emb, joints)
    subs['arm'][1].wait(2, timeout=30)
    robot.stop()                                      # inputs go stale: the node holds
    deadline = time.monotonic() + 5
    while 'stale' not in (node.hold_reason or '') and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 'stale' in (node.hold_reason or '')
    time.sleep(0.4)
    hold = [m for _, m in subs['arm'][1].items[:] if len(m.points) == 1]
    assert hold, 'no hold point on the trajectory output'
    np.testing.assert_allclose(hold[-1].points[0].positions, [0.1, -0.2, 0.04])
    assert (hold[-1].header.stamp.sec, hold[-1].header.stamp.nanosec) == (0, 0)
    for name in ('wrist', 'servo'):
        kind, sub = subs[name]
        sub.clear()
        time.sleep(0.3)
        last = [_values(m, kind) for _, m in sub.items[:]]
        assert last and all(not v.any() for v in last), f'{name}: holding must send zeros'
    # deactivate: zeros and a hold point again
    robot = Robot(harness, emb, joints)
    try:
        deadline = time.monotonic() + 10
        while node.hold_reason is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        for _, sub in subs.values():
            sub.clear()
        node.trigger_deactivate()
        time.sleep(0.3)
        assert [m for _, m in subs['arm'][1].items[:] if len(m.points) == 1]
        vel = [_values(m, 'velocity_stream') for _, m in subs['wrist'][1].items[:]]
        assert vel and not vel[-1].any()
        twists = [_values(m, 'twist') for _, m in subs['servo'][1].items[:]]
        assert twists and not twists[-1].any()
    finally:
        robot.stop()


def _without_gripper_actions(emb_name):
    """A preset with its gripper_action outputs sent as position streams instead (no
    control_msgs here)."""
    from retain_ros.embodiment.presets import find_embodiment_file

    data = yaml.safe_load(open(find_embodiment_file(emb_name)))
    data = copy.deepcopy(data)
    for out in data['outputs']:
        if out['type'] == 'gripper_action':
            out['type'] = 'position_stream'
            out['topic'] = out['topic'] + '/commands'
            for key in ('action_type', 'max_effort'):
                out.pop(key, None)
    return data


@pytest.mark.parametrize('preset', ['droid', 'aloha', 'so101', 'servo_ee'])
def test_presets_drive_their_controllers(harness, tmp_path, preset):
    data = _without_gripper_actions(preset)
    path = _write(tmp_path, data, f'{preset}.yaml')
    emb = load_embodiment(path)
    subs = _subscribe_all(harness, emb)
    node = _start(harness, tmp_path, path, emb)
    joints = {n: 0.01 * i for i, n in enumerate(sorted(
        {n for s in emb.state_sources for n in s.joints}
        | {n for o in emb.outputs for n in o.names if not n.startswith(('linear', 'angular'))}))}
    rng = np.random.default_rng(5)
    actions = rng.uniform(-0.9, 0.9, size=(H, emb.action_dim))
    fixed = Fixed(node, actions)
    robot = Robot(harness, emb, joints)
    try:
        expected = _expected(emb, actions, joints)
        for out in emb.outputs:
            kind, sub = subs[out.name]
            msg = sub.wait(1, timeout=30, predicate=lambda m, k=kind: _values(m, k).any())[0]
            got = _values(msg, kind)
            rows = expected[out.name]
            if kind == 'joint_trajectory':
                assert list(msg.joint_names) == list(out.names)
                np.testing.assert_allclose(got, rows, atol=1e-9, err_msg=out.name)
            else:
                assert np.min(np.abs(rows - got).max(axis=1)) < 1e-9, (out.name, got, rows)
        # the policy saw the state the embodiment assembled, and empty slots were masked
        obs = fixed.observations[0]
        assert obs.state.shape == (emb.state_dim,)
        assert set(obs.empty_cameras) == {s for s, t in emb.cameras if t == 'empty'}
    finally:
        robot.stop()


def test_gripper_action_needs_control_msgs(harness, tmp_path):
    try:
        import control_msgs  # noqa: F401
        pytest.skip('control_msgs is installed: the gripper action output can run')
    except ImportError:
        pass
    emb = load_embodiment('droid')
    with pytest.raises(StartupError, match='control_msgs'):
        _start(harness, tmp_path, 'droid', emb)


BAD = [
    ({'actions': 'drop:name'}, 'actions[0].name'),
    ({'actions[0].kind': 'joint_vel'}, 'unknown kind'),
    ({'outputs[0].type': 'effort_stream'}, 'outputs[0].type'),
    ({'outputs[0].slices': ['nope']}, 'nope'),
    ({'outputs[0].limits.lower': [0.0]}, 'lower'),
    ({'actions[1].joints': ['c', 'd', 'e']}, "unknown joint 'e'"),
    ({'actions[2].rotation': 'quaternion'}, 'action dim'),
]


@pytest.mark.parametrize('change,message', BAD)
def test_malformed_files_are_refused_at_configure(harness, tmp_path, change, message):
    data = copy.deepcopy(MULTI)
    for key, value in change.items():
        if value == 'drop:name':
            del data['actions'][0]['name']
            continue
        target, parts = data, key.replace('[', '.').replace(']', '').split('.')
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        target[parts[-1]] = value
    path = _write(tmp_path, data)
    good = load_embodiment(_write(tmp_path, MULTI, 'good.yaml'))
    subs = _subscribe_all(harness, good)
    pre, ft = _checkpoints(tmp_path, good.state_dim, good.action_dim, ['base'])
    with pytest.raises(StartupError) as info:
        harness.start_node(pre, ft, embodiment=path, camera_topics=None, joint_names=None)
    assert message in str(info.value), str(info.value)
    assert os.path.basename(path) in str(info.value)
    harness.feed(0.3)
    assert not any(len(sub) for _, sub in subs.values()), 'a refused node published'


def test_limit_parameters_reload_the_embodiment_live(harness, tmp_path):
    pre, ft = _checkpoints(tmp_path, 4, 4, ['base'])
    node = harness.start_node(pre, ft, replan_steps=2)
    traj = harness.subscribe(JointTrajectory, '/arm_controller/joint_trajectory')
    harness.feed(0.5)
    reply = harness.set_params(joint_lower_limits=Parameter(
        'joint_lower_limits', Parameter.Type.DOUBLE_ARRAY, [0.0] * 4),
        joint_upper_limits=Parameter('joint_upper_limits', Parameter.Type.DOUBLE_ARRAY,
                                     [0.001] * 4))
    assert reply[0].successful, reply[0].reason
    assert node.embodiment.outputs[0].limits.upper == (0.001,) * 4
    traj.clear()
    harness.feed(1.0)
    values = np.vstack([_values(m, 'joint_trajectory') for _, m in traj.items[:]
                        if len(m.points) > 1])
    assert values.min() >= 0.0 and values.max() <= 0.001


def test_preset_defaults_are_the_node_parameter_defaults():
    """The embodiment loader fills parameters the node did not pass with the node's defaults."""
    from retain_ros.embodiment.presets import NODE_DEFAULTS
    from retain_ros.ros.policy_node.params import SPECS

    for name, value in NODE_DEFAULTS.items():
        assert SPECS[name].default == value, name
    assert SPECS['embodiment'].default == 'joints'
