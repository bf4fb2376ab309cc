"""The retain_policy node on a real rclpy graph (loopback, per-run domain), tiny pi0 on CPU.

One node serves the whole module (its safety, dry_run and alpha parameters are all live); each
test sets what it needs and puts it back.
"""
import json
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from conftest import TEST_JOINTS  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402

DT = 0.05
REPLAN = 2
OUT = '/arm_controller/joint_trajectory'


class Env:
    """Harness + node + collectors shared by the module."""

    def __init__(self, harness, node, log):
        self.h = harness
        self.node = node
        self.log = log
        self.traj = harness.subscribe(JointTrajectory, OUT)
        self.preview = harness.subscribe(JointTrajectory, '/retain_policy/preview')
        self.merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        self.diag = harness.subscribe(DiagnosticArray, '/diagnostics')

    def chunks(self, count=2, feed=None, collector=None, settle=0.3):
        """Feed inputs and return ``count`` chunks computed from them.

        Feeds for ``settle`` seconds first, so that the node's latest observation is this feed,
        then keeps feeding and returns the chunks stamped after that, less the first one (its
        step may have started before the settle time on a busy machine).
        """
        collector = self.traj if collector is None else collector
        self.h.feed(settle, **(feed or {}))
        since = self.h.now()

        def fresh(msg):
            return _stamp(msg) > since

        deadline = time.monotonic() + 20
        while len([m for _, m in collector.items[:] if fresh(m)]) < count + 1 \
                and time.monotonic() < deadline:
            self.h.feed(0.1, **(feed or {}))
        return collector.wait(count + 1, timeout=1.0, predicate=fresh)[1:count + 1]

    def merge_state(self):
        return json.loads(self.merge.wait(1)[-1].data)


@pytest.fixture(scope='module')
def env(tiny_pi0_checkpoints, tmp_path_factory):
    harness = RosHarness()
    log = tmp_path_factory.mktemp('episodes') / 'episodes.jsonl'
    pre, ft = tiny_pi0_checkpoints
    try:
        node = harness.start_node(pre, ft, control_period=DT, replan_steps=REPLAN, alpha=0.5,
                                  episode_log=str(log), episode_tag='split=new_id;task=t')
        yield Env(harness, node, log)
    finally:
        harness.shutdown()


def _stamp(msg):
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def _actions(msg):
    return np.array([list(p.positions) for p in msg.points])


def test_chunk_shape_joint_names_and_timing(env):
    msgs = env.chunks(5)
    horizon = env.node.policy.chunk_size
    for msg in msgs:
        assert list(msg.joint_names) == list(TEST_JOINTS)
        assert len(msg.points) == horizon
        actions = _actions(msg)
        assert actions.shape == (horizon, len(TEST_JOINTS)) and np.all(np.isfinite(actions))
        times = [p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in msg.points]
        np.testing.assert_allclose(times, [(i + 1) * DT for i in range(horizon)], atol=1e-9)
        assert msg.header.stamp.sec > 0
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in msgs]
    gaps = np.diff(stamps)
    assert np.all(gaps >= 0)     # stamps = observation times (two chunks may share one)
    # a chunk every replan_steps control periods (later when the model is slower than that).
    # Steps start on a fixed schedule; stamps are taken after inference, so one slow step can
    # shorten the next gap: check the mean over several chunks, not single gaps.
    assert np.mean(gaps) >= 0.6 * REPLAN * DT, gaps


def test_clamped_to_limits_and_max_step(env):
    lim = 0.01
    result = env.h.set_params(joint_lower_limits=[-lim] * 4, joint_upper_limits=[lim] * 4)
    assert all(r.successful for r in result), result
    try:
        for msg in env.chunks(2, feed={'joints': (0.0, 0.0, 0.0, 0.0)}):
            assert np.all(np.abs(_actions(msg)) <= lim + 1e-12)
    finally:
        env.h.set_params(joint_lower_limits=Parameter('joint_lower_limits',
                                                      Parameter.Type.DOUBLE_ARRAY, []),
                         joint_upper_limits=Parameter('joint_upper_limits',
                                                      Parameter.Type.DOUBLE_ARRAY, []))
    step = 0.002
    current = np.array([0.3, -0.2, 0.1, 0.0])
    assert env.h.set_params(max_joint_step=step)[0].successful
    try:
        for msg in env.chunks(2, feed={'joints': tuple(current)}):
            path = np.vstack([current, _actions(msg)])
            assert np.all(np.abs(np.diff(path, axis=0)) <= step + 1e-9)
    finally:
        env.h.set_params(max_joint_step=0.0)
    bad = env.h.set_params(joint_lower_limits=[0.0, 0.0])
    assert not bad[0].successful and '2 value(s)' in bad[0].reason


def test_hold_on_stale_input(env):
    env.chunks(1)
    assert env.h.set_params(max_observation_age=0.3)[0].successful
    try:
        time.sleep(0.6)               # inputs stop: they go stale
        stale_since = env.h.now()
        time.sleep(1.2)
        late = [m for _, m in env.traj.items[:] if _stamp(m) > stale_since]
        assert not late, 'published a chunk from stale observations'
        assert 'stale' in (env.node.hold_reason or '')
        env.diag.clear()
        status = env.diag.wait(1, timeout=5)[-1].status[0]
        assert status.message.startswith('holding') and 'stale' in status.message
        keys = {kv.key for kv in status.values}
        assert {'inference_ms.p50', 'inference_ms.p99', 'dropped_total',
                'age_s.camera/image_raw', 'age_s.joint_states', 'fingerprint'} <= keys
        assert env.chunks(1)            # fresh inputs: acting again
        assert env.node.hold_reason is None
    finally:
        env.h.set_params(max_observation_age=2.0)


def test_live_alpha_change_in_merge_state_and_actions(env):
    feed = {'joints': (0.1, 0.2, 0.3, 0.4)}
    assert env.h.set_params(alpha=0.0)[0].successful
    assert env.merge_state()['alpha']['language'] == 0.0
    at_zero = _actions(env.chunks(1, feed=feed)[0])
    assert env.h.set_params(alpha=1.0)[0].successful
    state = env.merge_state()
    assert state['alpha'] == {'vision': 1.0, 'language': 1.0, 'action': 1.0, 'other': 1.0}
    at_one = _actions(env.chunks(1, feed=feed)[0])
    assert not np.allclose(at_zero, at_one), 'alpha change not visible in the actions'
    assert env.h.set_params(alpha=0.0)[0].successful
    again = _actions(env.chunks(1, feed=feed)[0])
    np.testing.assert_allclose(again, at_zero, atol=1e-5)  # in-place merge is exact
    # per-group override, then back to "follow alpha"
    assert env.h.set_params(alpha_language=0.25)[0].successful
    state = env.merge_state()
    assert state['alpha']['language'] == 0.25 and state['alpha']['vision'] == 0.0
    assert env.node.get_parameter('alpha_language').value == 0.25
    assert env.h.set_params(alpha_language=-1.0)[0].successful
    assert env.merge_state()['alpha']['language'] == 0.0
    env.h.set_params(alpha=0.5)


def test_atomic_set_is_one_merge(env):
    from rcl_interfaces.srv import SetParametersAtomically

    before = env.merge_state()
    env.merge.clear()
    request = SetParametersAtomically.Request(parameters=[
        Parameter('alpha', value=0.3).to_parameter_msg(),
        Parameter('alpha_language', value=0.1).to_parameter_msg()])
    reply = env.h.call(SetParametersAtomically, '/retain_policy/set_parameters_atomically',
                       request)
    assert reply.result.successful, reply.result.reason
    time.sleep(0.3)
    states = [json.loads(m.data) for _, m in env.merge.items[:]]
    assert len(states) == 1, 'one merge_state message (one re-merge) per atomic set'
    assert states[0]['alpha'] == {'vision': 0.3, 'language': 0.1, 'action': 0.3, 'other': 0.3}
    assert states[0]['fingerprint'] != before['fingerprint']
    reply = env.h.call(SetParametersAtomically, '/retain_policy/set_parameters_atomically',
                       SetParametersAtomically.Request(parameters=[
                           Parameter('alpha', value=0.5).to_parameter_msg(),
                           Parameter('alpha_language', value=-1.0).to_parameter_msg()]))
    assert reply.result.successful
    assert env.merge_state()['fingerprint'] == before['fingerprint']


def test_invalid_alpha_sets_are_refused(env):
    before = env.merge_state()['fingerprint']
    out_of_range = env.h.set_params(alpha=1.5)[0]
    assert not out_of_range.successful
    bad_group = env.h.set_params(alpha_vision=-0.5)[0]
    assert not bad_group.successful and '-1 (follow alpha)' in bad_group.reason
    bad_recipe = env.h.set_params(recipe='no-such-recipe')[0]
    assert not bad_recipe.successful and 'recipe' in bad_recipe.reason
    missing = env.h.set_params(pretrained_path='/elsewhere')[0]   # live, but no checkpoint there
    assert not missing.successful and '/elsewhere' in missing.reason
    assert env.node.get_parameter('alpha_vision').value == -1.0
    assert env.node.get_parameter('recipe').value == 'interpolate'
    assert env.merge_state()['fingerprint'] == before


def test_malformed_images_dropped_node_keeps_serving(env):
    pub = env.h.publisher(Image, 'camera/image_raw')
    for encoding, step, size in (('rgb8', 10, 32 * 32 * 3), ('rgb8', 96, 5),
                                 ('32FC1', 128, 32 * 128)):
        msg = Image(height=32, width=32, encoding=encoding, step=step)
        msg.data = bytes(size)
        # sensor QoS keeps only the latest message: publish until this one was seen and dropped
        before = sum(env.node.dropped.values())
        deadline = time.monotonic() + 10
        while sum(env.node.dropped.values()) == before and time.monotonic() < deadline:
            pub.publish(msg)
            time.sleep(0.05)
        assert sum(env.node.dropped.values()) > before, f'{encoding} step={step} not dropped'
    assert any(k.startswith('image ') for k in env.node.dropped)
    assert env.chunks(1)


def test_dry_run_publishes_preview_only(env):
    assert env.h.set_params(dry_run=True)[0].successful
    try:
        since = env.h.now()
        previews = env.chunks(2, collector=env.preview)
        assert len(previews[0].points) == env.node.policy.chunk_size
        assert not [m for _, m in env.traj.items[:] if _stamp(m) > since]
    finally:
        env.h.set_params(dry_run=False)
    assert env.chunks(1)


def test_reload_weights(env):
    before = env.merge_state()
    reply = env.h.call(Trigger, '/retain_policy/reload_weights')
    assert reply.success, reply.message
    assert json.loads(reply.message)['fingerprint'] == before['fingerprint']


def test_episode_services_write_a_json_line(env):
    refused = env.h.call(SetBool, '/retain_policy/end_episode', SetBool.Request(data=True))
    assert not refused.success and 'no episode' in refused.message
    start = env.h.call(Trigger, '/retain_policy/start_episode')
    assert start.success, start.message
    reply = json.loads(start.message)
    assert reply['alpha']['vision'] == 0.5 and reply['tag'] == 'split=new_id;task=t'
    busy = env.h.set_params(alpha=0.7)[0]
    assert not busy.successful and 'episode' in busy.reason
    same = env.h.set_params(alpha=0.5)[0]       # the live weights already: nothing to re-merge
    assert same.successful, same.reason
    env.chunks(2)
    end = env.h.call(SetBool, '/retain_policy/end_episode', SetBool.Request(data=True))
    assert end.success, end.message
    lines = [json.loads(x) for x in env.log.read_text().splitlines()]
    line = lines[-1]
    assert line['episode_id'] == reply['episode_id'] and line['success'] is True
    assert line['split'] == 'new_id' and line['task'] == 't'
    assert line['alpha']['language'] == 0.5 and line['recipe'] == 'interpolate'
    assert line['fingerprint'] == env.merge_state()['fingerprint']
    assert line['chunks'] >= 2 and line['latency_ms']['p50'] > 0
