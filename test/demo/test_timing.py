"""The chunk timing harness (simulated time, no ROS): stamp policies, JTC pickup, RTC wiring."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.demo.timing import evaluate_timing
from retain_ros.demo.timing import make_chunker
from retain_ros.demo.timing import summarize
from retain_ros.demo.timing import TimingConfig
from retain_ros.policies.base import ActionChunk
from retain_ros.sim.expert import expert_chunk
from retain_ros.sim.world import SimWorld


class ExpertPolicy:
    """The sim's scripted expert behind the policy interface (plans from the observed state)."""

    control_period = 0.1
    chunk_size = 10
    action_dim = 3

    def __init__(self, world: SimWorld):
        self.world = world

    def predict(self, obs, guidance=None):
        return ActionChunk(expert_chunk(self.world, self.chunk_size, self.control_period,
                                        start=obs.state), self.control_period)


def _run(config, episodes=4):
    world = SimWorld(image_size=32)
    policy = ExpertPolicy(world)
    from retain_ros.demo.timing import run_timed_episode
    return [run_timed_episode(policy, world, 'reach_yellow', 'new_ood', seed, config)
            for seed in range(episodes)]


def test_zero_delay_stamp_policies_agree_and_runs_are_deterministic():
    old = _run(TimingConfig(delay=0.0, stamp_policy='publish'))
    new = _run(TimingConfig(delay=0.0, stamp_policy='observation'))
    assert old == new
    assert _run(TimingConfig(delay=0.0)) == new
    assert all(r['success'] for r in new) and all(r['rejected'] == 0 for r in new)


def test_publish_stamp_executes_late_observation_stamp_on_time():
    # the expert plans from the observed state: with the old policy its plan starts `delay`
    # late every chunk, so it arrives later; the new one skips the passed points
    cfg = dict(delay=0.2, episode_steps=60)
    old = _run(TimingConfig(stamp_policy='publish', **cfg))
    new = _run(TimingConfig(stamp_policy='observation', **cfg))
    on_time = _run(TimingConfig(delay=0.0, episode_steps=60))
    assert all(r['success'] for r in old + new)
    t_old = np.mean([r['time_s'] for r in old])
    t_new = np.mean([r['time_s'] for r in new])
    t_zero = np.mean([r['time_s'] for r in on_time])
    assert t_new < t_old, (t_new, t_old)
    assert t_new - t_zero < t_old - t_zero
    s = summarize(new)
    assert s['success_rate'] == 1.0 and s['episodes'] == 4 and 0 < s['success_lo'] < 1
    assert s['max_boundary_jump'] > 0 and s['mean_abs_jerk'] > 0


def test_config_validation():
    with pytest.raises(ValueError, match='stamp_policy'):
        TimingConfig(stamp_policy='late')
    with pytest.raises(ValueError, match='blending'):
        TimingConfig(blending='average')
    with pytest.raises(ValueError, match='delay'):
        TimingConfig(delay=-0.1)
    assert TimingConfig(delay=0.2).label == 'observation stamp, none, 200 ms'


def test_rtc_cell_runs_on_a_tiny_pi0():
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import Pi0Policy
    from retain_ros.policies.pi0 import tiny_pi0_config
    cfg = tiny_pi0_config(3, 3, chunk_size=10, camera_names=('base',), image_size=32,
                          num_inference_steps=3)
    policy = Pi0Policy.from_config(cfg, stats=NormStats.identity(3, 3), init_seed=0)
    config = TimingConfig(delay=0.2, blending='rtc', episode_steps=12)
    chunker = make_chunker(policy, config)
    assert chunker.execution_horizon == 5
    # scene seed 1: the untrained policy does not reach the block, so all 12 steps run
    results = evaluate_timing(policy, config, episodes=1, image_size=32, seed_offset=1)
    assert not results[0]['success']
    assert results[0]['chunks'] == 3 and np.isfinite(results[0]['mean_abs_jerk'])
    plain = evaluate_timing(policy, TimingConfig(delay=0.2, episode_steps=12), episodes=1,
                            image_size=32, seed_offset=1)
    # guidance changed the second and third chunks (same noise, same scenes otherwise)
    assert results[0]['boundary_jumps'] != plain[0]['boundary_jumps']
