"""Chunk timing harness: a policy with an inference delay driving the sim arm, in simulated time.

The sim arm is behind a JTC-exact controller and the policy has an artificial inference delay;
no ROS, no wall clock: every run is deterministic. It models what the policy node and
joint_trajectory_controller do on a robot, tick by tick at the physics rate:

1. every ``replan_steps`` control periods the node takes an observation at ``t_obs`` (camera
   image and joint state of that instant) and starts inference;
2. the chunk is published ``delay`` seconds later (the inference time), after the safety filter
   (:func:`retain_ros.control.safety.make_safe`, chained from the observed state);
3. its stamp follows one of two policies:

   - ``publish`` (the old node): ``header.stamp`` = the time of publishing (``now()`` taken after
     inference), points at ``stamp + (i + 1) dt``: the first action, meant for
     ``t_obs + dt``, is executed ``delay`` late;
   - ``observation`` (the new node): ``header.stamp = t_obs``, points at
     ``t_obs + (i + 1) dt``; the controller skips the points that passed during inference;

4. the controller (:class:`retain_ros.sim.trajectory_follower.TrajectoryFollower`, sampled
   exactly as JTC) picks the trajectory up at its next update and commands the sim arm.

With ``blending='rtc'`` the policy samples each chunk with real-time chunking guidance
(:mod:`retain_ros.policies.rtc`) towards the rest of the previous chunk, with the delay estimated
from the (simulated) latencies measured so far.

Measured per episode: success, the largest jump of the position command at a chunk boundary
(the update that picks up a new trajectory, first chunk excluded), the largest command change
at the other updates (for scale), and the mean absolute jerk of the measured joint positions.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np

from retain_ros.control.safety import make_safe
from retain_ros.control.safety import SafetyLimits
from retain_ros.sim.trajectory_follower import TrajectoryFollower
from retain_ros.demo.rollout import CAMERA
from retain_ros.demo.rollout import EPISODE_STEPS
from retain_ros.demo.rollout import REPLAN_STEPS
from retain_ros.evaluation.stats import wilson_interval
from retain_ros.policies.base import Observation
from retain_ros.policies.rtc import align_previous_chunk
from retain_ros.policies.rtc import LatencyEstimator
from retain_ros.policies.rtc import RealTimeChunker
from retain_ros.sim.tasks import NEW_TASK
from retain_ros.sim.world import SimWorld

STAMP_POLICIES = ('publish', 'observation')
BLENDINGS = ('none', 'rtc')


@dataclass(frozen=True)
class TimingConfig:
    """One cell of the timing benchmark.

    :param delay: simulated inference time (s); rounded to whole physics periods.
    :param stamp_policy: ``publish`` (old) or ``observation`` (new), see the module docstring.
    :param blending: ``none`` or ``rtc``.
    :param physics_dt: physics and controller update period (s); the sim node's 50 Hz.
    :param replan_steps: control periods between two observations (the node's
        ``replan_steps``).
    :param episode_steps: episode length in control periods.
    :param rtc_beta: RTC's largest guidance weight.
    :param rtc_execution_horizon: RTC's ``s``; None = ``chunk_size - replan_steps`` (the
        overlap of two consecutive chunks).
    """

    delay: float = 0.0
    stamp_policy: str = 'observation'
    blending: str = 'none'
    physics_dt: float = 0.02
    replan_steps: int = REPLAN_STEPS
    episode_steps: int = EPISODE_STEPS
    rtc_beta: float = 5.0
    rtc_execution_horizon: Optional[int] = None

    def __post_init__(self):
        if self.stamp_policy not in STAMP_POLICIES:
            raise ValueError(f'stamp_policy must be one of {STAMP_POLICIES}, got '
                             f'{self.stamp_policy!r}')
        if self.blending not in BLENDINGS:
            raise ValueError(f'blending must be one of {BLENDINGS}, got {self.blending!r}')
        if not (self.delay >= 0 and math.isfinite(self.delay)):
            raise ValueError(f'delay must be >= 0 s, got {self.delay}')
        if not self.physics_dt > 0 or self.replan_steps < 1 or self.episode_steps < 1:
            raise ValueError('physics_dt, replan_steps and episode_steps must be positive')

    @property
    def label(self) -> str:
        return (f'{self.stamp_policy} stamp, {self.blending}, '
                f'{round(self.delay * 1e3):d} ms')


class _Published:
    def __init__(self, at_tick: int, actions: np.ndarray, stamp: float):
        self.at_tick = at_tick
        self.actions = actions
        self.stamp = stamp


def make_chunker(policy: Any, config: TimingConfig) -> Optional[RealTimeChunker]:
    """Return the RTC chunker a config asks for (None for plain chunking)."""
    if config.blending != 'rtc':
        return None
    horizon = config.rtc_execution_horizon
    if horizon is None:
        horizon = max(1, int(policy.chunk_size) - config.replan_steps)
    return RealTimeChunker(policy, execution_horizon=horizon, beta=config.rtc_beta,
                           latency=LatencyEstimator(warmup=0))


def run_timed_episode(policy: Any, world: SimWorld, task: str, split: str, seed: int,
                      config: TimingConfig,
                      chunker: Optional[RealTimeChunker] = None) -> Dict[str, Any]:
    """One episode in simulated time (see the module docstring).

    :param policy: a :class:`~retain_ros.policies.base.Policy`.
    :param world: the world (reset here).
    :param task: task name.
    :param split: split name.
    :param seed: scene seed.
    :param config: the :class:`TimingConfig`.
    :param chunker: the RTC chunker (``blending='rtc'``), kept across episodes so its latency
        estimate carries over as on a robot.
    :return: ``{'task', 'split', 'seed', 'success', 'time_s', 'chunks', 'boundary_jumps',
        'max_boundary_jump', 'max_inner_step', 'mean_abs_jerk', 'rejected'}``.
    """
    info = world.reset(task, split, seed)
    if hasattr(policy, 'reset'):
        policy.reset()
    dt = float(policy.control_period)
    pdt = float(config.physics_dt)
    per_control = max(1, int(round(dt / pdt)))
    replan_ticks = per_control * int(config.replan_steps)
    delay_ticks = int(round(config.delay / pdt))
    total_ticks = per_control * int(config.episode_steps)
    limits = SafetyLimits(lower=tuple(world.lower_limits), upper=tuple(world.upper_limits))
    follower = TrajectoryFollower(world.joint_names, world.joint_positions())
    in_flight: List[_Published] = []
    last_published: Optional[_Published] = None
    command = world.joint_positions()
    positions = [world.joint_positions()]
    jumps: List[float] = []
    inner = 0.0
    chunks = rejected = 0
    tick = 0
    while tick < total_ticks and not world.success():
        now = tick * pdt
        if tick % replan_ticks == 0:
            state = world.joint_positions()
            obs = Observation(images={CAMERA: world.render()}, instruction=info.instruction,
                              state=state)
            guidance = None
            if chunker is not None:
                remaining = None if last_published is None else align_previous_chunk(
                    last_published.actions, last_published.stamp, now, dt)
                guidance = chunker.guidance_for(remaining, chunker.latency.delay_steps(dt))
            chunk = policy.predict(obs, guidance=guidance)
            if chunker is not None:
                chunker.latency.record(delay_ticks * pdt)
            safe = make_safe(chunk.actions, state, limits, dim=len(state))
            publish_time = (tick + delay_ticks) * pdt
            stamp = now if config.stamp_policy == 'observation' else publish_time
            last_published = _Published(tick + delay_ticks, safe, stamp)
            in_flight.append(last_published)
            chunks += 1
        picked_up = False
        for pub in [p for p in in_flight if p.at_tick <= tick]:
            in_flight.remove(pub)
            points = [((i + 1) * dt, row) for i, row in enumerate(pub.actions)]
            try:
                follower.set_trajectory(world.joint_names, points, pub.stamp, now)
                picked_up = True
            except ValueError:
                rejected += 1
        previous = command
        command = follower.update(now, world.joint_positions(), pdt)
        step = float(np.max(np.abs(command - previous)))
        if picked_up and chunks > 1:
            jumps.append(step)
        elif not picked_up:
            inner = max(inner, step)
        world.set_joint_targets(command)
        world.step(pdt)
        positions.append(world.joint_positions())
        tick += 1
    q = np.asarray(positions)
    jerk = np.diff(q, n=3, axis=0) / pdt ** 3 if q.shape[0] > 3 else np.zeros((1, q.shape[1]))
    return {'task': info.task, 'split': split, 'seed': int(seed),
            'success': bool(world.success()), 'time_s': round(tick * pdt, 6), 'chunks': chunks,
            'boundary_jumps': jumps, 'max_boundary_jump': max(jumps) if jumps else 0.0,
            'max_inner_step': inner, 'mean_abs_jerk': float(np.mean(np.abs(jerk))),
            'rejected': rejected}


def evaluate_timing(policy: Any, config: TimingConfig, episodes: int, task: str = NEW_TASK,
                    split: str = 'new_id', seed_offset: int = 0, image_size: int = 96,
                    progress: Optional[Callable[[int], None]] = None) -> List[Dict[str, Any]]:
    """Run ``episodes`` episodes of ``task`` / ``split`` (seeds ``seed_offset + i``) for one cell.

    :return: the episode dicts of :func:`run_timed_episode`.
    """
    world = SimWorld(image_size=image_size)
    chunker = make_chunker(policy, config)
    results = []
    for i in range(int(episodes)):
        results.append(run_timed_episode(policy, world, task, split, seed_offset + i, config,
                                         chunker))
        if progress is not None:
            progress(1)
    return results


def summarize(results: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Success rate (with its 95% Wilson interval) and the smoothness figures of a cell."""
    n = len(results)
    k = sum(1 for r in results if r['success'])
    lo, hi = wilson_interval(k, n) if n else (0.0, 0.0)
    jumps = [j for r in results for j in r['boundary_jumps']]
    return {'episodes': n, 'successes': k, 'success_rate': k / n if n else 0.0,
            'success_lo': lo, 'success_hi': hi,
            'max_boundary_jump': max(jumps) if jumps else 0.0,
            'mean_boundary_jump': float(np.mean(jumps)) if jumps else 0.0,
            'max_inner_step': max((r['max_inner_step'] for r in results), default=0.0),
            'mean_abs_jerk': float(np.mean([r['mean_abs_jerk'] for r in results])) if n
            else 0.0,
            'mean_time_s': float(np.mean([r['time_s'] for r in results])) if n else 0.0,
            'rejected': sum(r['rejected'] for r in results)}
