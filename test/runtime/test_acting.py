"""The acting steps without ROS (``retain_ros.runtime.acting``): embodiment maths, safety per
output, generations and holds, with a fixed chunk standing in for the model."""
from contextlib import contextmanager
import logging
import threading

import numpy as np
import pytest

from retain_ros.embodiment import load_embodiment_data
from retain_ros.embodiment import RobotState
from retain_ros.policies.base import ActionChunk
from retain_ros.policies.base import Observation
from retain_ros.runtime.acting import Actor
from retain_ros.runtime.acting import elapsed_steps
from retain_ros.runtime.startup import ActingPlan
from retain_ros.runtime.stats import NodeStats

DT = 0.1
H = 6
JOINTS = ['a', 'b']
#: every output type fed from joint slices, one file
MULTI = {
    'name': 'multi',
    'state': [{'topic': 'joint_states', 'type': 'joint_state', 'joints': JOINTS + ['g']}],
    'cameras': [{'slot': 'base', 'topic': 'cam'}],
    'actions': [{'name': 'arm', 'kind': 'joint_velocity', 'joints': JOINTS, 'clip': [-1, 1],
                 'scale': 0.2},
                {'name': 'grip', 'kind': 'gripper', 'joints': ['g'], 'policy_range': [0, 1],
                 'actuator_range': [0.04, 0.0], 'binarize': {'threshold': 0.5}}],
    'outputs': [
        {'name': 'traj', 'type': 'joint_trajectory', 'topic': 't', 'slices': ['arm', 'grip'],
         'limits': {'lower': [-1, -1, 0], 'upper': [1, 1, 0.04]}},
        {'name': 'vel', 'type': 'velocity_stream', 'topic': 'v', 'slices': ['arm'],
         'limits': {'max_velocity': 1.5}},
        {'name': 'cmd', 'type': 'joint_state', 'topic': 'c', 'slices': ['arm']}],
}


class Log:
    """A logger taking rclpy's keyword arguments."""

    def __getattr__(self, level):
        return lambda msg, **kwargs: logging.getLogger('acting').log(
            getattr(logging, level.upper()), msg)


class Runtime:
    """A MergedPolicy stand-in: a fixed chunk, a generation, the same lock rule."""

    def __init__(self, actions):
        self.actions = np.asarray(actions, dtype=np.float64)
        self.generation = 1
        self.valid = True
        self.invalid_reason = None
        self._lock = threading.Lock()
        self.before_return = None

    def predict(self, obs, guidance=None):
        generation = self.generation
        if self.before_return is not None:
            self.before_return()
        return ActionChunk(self.actions.copy(), DT), generation

    @contextmanager
    def current(self, generation):
        with self._lock:
            yield generation == self.generation


class Info:
    def __init__(self, time, robot):
        self.time, self.robot = time, robot
        self.image_stamps, self.obs_ready, self.convert_ms = (), 0.0, 0.0


class Inputs:
    def __init__(self, robot, now):
        self.robot, self.now, self.stale = robot, now, False

    def observation(self):
        if self.stale:
            return None, 'stale joint_states', None
        obs = Observation(images={}, instruction='x', state=np.zeros(3))
        return obs, None, Info(self.now[0], self.robot)

    def robot_state(self):
        return self.robot


def _actor(actions, robot, now=None):
    now = now if now is not None else [100.0]
    emb = load_embodiment_data(MULTI, 'multi.yaml')
    plan = ActingPlan(horizon=H, dt=DT, replan_steps=2, camera_topics={'cam': 'base'},
                      empty_cameras=(), embodiment=emb)
    sent = []
    runtime = Runtime(actions)
    inputs = Inputs(robot, now)
    actor = Actor(runtime, plan, inputs, lambda n, v, s: sent.append((n, np.array(v), s)),
                  NodeStats(Log()), Log(), lambda: now[0], lambda: None)
    return actor, runtime, inputs, sent


def _chunk():
    rng = np.random.default_rng(0)
    arm = rng.uniform(-1.5, 1.5, size=(H, 2))          # some beyond the clip
    grip = np.array([[0.2], [0.7], [0.4], [0.9], [0.1], [0.6]])
    return np.hstack([arm, grip])


ROBOT = RobotState(joints={'a': 0.3, 'b': -0.2, 'g': 0.04}, velocities={}, ee_pose=None)


def test_one_chunk_feeds_every_output_with_the_same_stamp():
    actions = _chunk()
    actor, runtime, inputs, sent = _actor(actions, ROBOT)
    actor.refill_step()
    traj = [s for s in sent if s[0] == 'traj']
    assert len(traj) == 1 and traj[0][2] == 100.0           # stamped at the observation
    q = np.array([0.3, -0.2]) + np.cumsum(0.2 * np.clip(actions[:, :2], -1, 1), axis=0)
    grip = np.where(actions[:, 2] > 0.5, 0.0, 0.04)
    expected = np.hstack([np.clip(q, -1, 1), grip[:, None]])
    np.testing.assert_allclose(traj[0][1], expected, atol=1e-12)
    # stream outputs: one row per period, velocities are (q_k - q_{k-1}) / dt of the chunk
    for _ in range(H):
        actor.stream_step()
    vel = np.array([v for n, v, _ in sent if n == 'vel'])
    raw_v = 0.2 * np.clip(actions[:, :2], -1, 1) / DT
    np.testing.assert_allclose(vel, np.clip(raw_v, -1.5, 1.5), atol=1e-12)
    cmd = np.array([v for n, v, _ in sent if n == 'cmd'])
    np.testing.assert_allclose(cmd, q, atol=1e-12)
    assert all(s is None for n, _, s in sent if n != 'traj')


def test_elapsed_actions_are_dropped_from_the_stream():
    actions = _chunk()
    now = [100.0]
    actor, runtime, inputs, sent = _actor(actions, ROBOT, now)
    inputs.now = [100.0 - 2.5 * DT]          # the observation is 2.5 periods old
    actor.refill_step()
    actor.stream_step()
    first = [v for n, v, _ in sent if n == 'cmd'][0]
    q = np.array([0.3, -0.2]) + np.cumsum(0.2 * np.clip(actions[:, :2], -1, 1), axis=0)
    np.testing.assert_allclose(first, q[2], atol=1e-12)
    assert elapsed_steps(0.0, 0.25, 0.1) == 2


def test_a_weight_change_during_inference_publishes_nothing_on_any_output():
    actor, runtime, inputs, sent = _actor(_chunk(), ROBOT)

    def bump():
        runtime.generation += 1
    runtime.before_return = bump
    actor.refill_step()
    assert not sent and len(actor.queue) == 0
    assert actor.stats.dropped.get('stale_generation') == 1
    runtime.before_return = None
    actor.refill_step()
    gen_before = runtime.generation
    runtime.generation += 1                    # weights replaced while rows are queued
    actor.stream_step()
    assert not [s for s in sent if s[0] != 'traj'], 'a queued row of old weights went out'
    assert len(actor.queue) == 0 and runtime.generation == gen_before + 1


def test_non_finite_chunk_publishes_nothing():
    actions = _chunk()
    actions[3, 1] = np.nan
    actor, runtime, inputs, sent = _actor(actions, ROBOT)
    actor.refill_step()
    assert not sent and actor.stats.dropped.get('unsafe_chunk') == 1


def test_hold_sends_the_measured_position_once_and_zeros_every_period():
    actor, runtime, inputs, sent = _actor(_chunk(), ROBOT)
    actor.refill_step()
    actor.stream_step()
    actor.stream_step()                                  # the queue runs low: next refill infers
    sent.clear()
    inputs.stale = True
    actor.refill_step()                                  # enters the hold
    assert 'stale' in actor.hold_reason
    holds = {n: (v, s) for n, v, s in sent}
    np.testing.assert_array_equal(holds['traj'][0], [[0.3, -0.2, 0.04]])
    assert holds['traj'][1] == 0.0                       # stamp 0: start now
    np.testing.assert_array_equal(holds['vel'][0], [0.0, 0.0])
    np.testing.assert_array_equal(holds['cmd'][0], [0.3, -0.2])
    sent.clear()
    for _ in range(3):
        actor.stream_step()
    assert [n for n, _, _ in sent] == ['vel'] * 3       # only zeros, to the velocity output
    assert all(not v.any() for _, v, _ in sent)
    sent.clear()
    actor.refill_step()                                  # still holding: no second hold point
    assert not [s for s in sent if s[0] == 'traj']


def test_delta_actions_anchor_at_the_observation():
    data = dict(MULTI)
    data['actions'] = [{'name': 'arm', 'kind': 'joint_delta', 'joints': JOINTS},
                       {'name': 'grip', 'kind': 'gripper', 'joints': ['g'],
                        'actuator_range': [0.04, 0.0]}]
    data['outputs'] = [{'name': 'traj', 'type': 'joint_trajectory', 'topic': 't',
                        'slices': ['arm']}]
    emb = load_embodiment_data(data, 'delta.yaml')
    chunk = _chunk()
    out = emb.commands(chunk, ROBOT, DT)['traj'].values
    np.testing.assert_allclose(out, np.array([0.3, -0.2]) + chunk[:, :2], atol=1e-12)


@pytest.mark.parametrize('reason', ['re-merging the weights'])
def test_busy_holds(reason):
    actor, runtime, inputs, sent = _actor(_chunk(), ROBOT)
    actor._busy = lambda: reason
    actor.refill_step()
    assert actor.hold_reason == reason
    assert not [s for s in sent if s[0] == 'traj' and s[2] != 0.0]
