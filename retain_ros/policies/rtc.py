"""Real-time chunking (RTC; Black, Galliker, Levine 2025, arXiv 2506.07339). No ROS here.

While a chunk is being computed the robot keeps executing the previous one. RTC makes the new
chunk agree with what will have been executed by then: during flow sampling the first ``d``
actions (the *inference delay*, in control periods) are frozen to the previous chunk and the
rest of the overlap is *inpainted* with a soft mask, using ΠGDM-style guidance through the
denoiser's one-step estimate of the clean chunk.

Time convention of this repo (:mod:`retain_ros.policies.flow`): ``x_t = t * noise + (1 - t) *
action``, ``t = 1`` is noise, ``t = 0`` the action chunk, the model predicts ``v = noise -
action`` and Euler steps go ``x <- x + dt * v`` with ``dt < 0``. Hence

- the denoised estimate is ``x̂ = x_t - t * v(x_t, t)``;
- the guidance direction is ``g = (∂x̂/∂x_t)ᵀ [W ⊙ (Y - x̂)]`` (a vector-Jacobian product), the
  direction in ``x_t`` that moves ``x̂`` towards the target ``Y`` (the previous chunk, in model
  space); since ``dt < 0`` the guided velocity is ``v - w * g`` (the paper, whose time runs the
  other way, adds it);
- the guidance weight is ``w = min(β, ((1 - t)² + t²) / (t (1 - t)))``, the paper's
  ``min(β, (1 - τ) / (τ r²_τ))`` with ``τ = 1 - t``; it is infinite at ``t = 1`` and clipped to
  ``β`` there.

The soft mask ``W`` over the chunk's steps (the paper's eq. 5): 1 for the first ``d`` steps,
then ``c (e^c - 1) / (e - 1)`` with ``c`` falling linearly from 1 towards 0 up to the execution
horizon ``s``, 0 from ``s`` on (and on the padded action dimensions). ``s`` is clipped to the
number of steps the previous chunk still covers.

Typical use (the policy node's ``chunk_blending: rtc``)::

    rtc = RealTimeChunker(policy, execution_horizon=policy.chunk_size // 2)
    ...
    rtc.latency.record(measured_seconds)              # after every predict (warm-up excluded)
    d = rtc.latency.delay_steps(policy.control_period)
    guidance = rtc.guidance_for(prev_remaining, d)    # None: sample without guidance
    chunk = policy.predict(observation, guidance=guidance)
"""
from __future__ import annotations

from collections import deque
import math
from typing import Any
from typing import Deque
from typing import Optional

import numpy as np
import torch

from retain_ros.policies.flow import VelocityFn

#: the paper's β (largest guidance weight); LeRobot's default ``max_guidance_weight`` too
DEFAULT_BETA = 5.0
SCHEDULES = ('exp', 'linear', 'hard')


def prefix_weights(delay_steps: int, execution_horizon: int, horizon: int,
                   schedule: str = 'exp') -> np.ndarray:
    """Return the soft mask over a chunk's steps, ``(horizon,)`` float64 in ``[0, 1]``.

    :param delay_steps: ``d``: steps frozen to the previous chunk (weight 1).
    :param execution_horizon: ``s``: steps from which the weight is 0 (``d`` is clipped to it).
    :param horizon: ``H``: the chunk length.
    :param schedule: ``exp`` (the paper), ``linear``, or ``hard`` (1 up to ``d``, 0 after).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
    s = max(0, min(int(execution_horizon), int(horizon)))
    d = max(0, min(int(delay_steps), s))
    w = np.zeros(int(horizon), dtype=np.float64)
    w[:d] = 1.0
    n = s - d
    if n > 0 and schedule != 'hard':
        c = np.linspace(1.0, 0.0, n + 2)[1:-1]
        if schedule == 'exp':
            c = c * np.expm1(c) / (math.e - 1.0)
        w[d:s] = c
    return w


def guidance_weight(t: float, beta: float) -> float:
    """``min(β, ((1 - t)² + t²) / (t (1 - t)))`` (infinite, hence β, at ``t`` = 0 or 1)."""
    if t <= 0.0 or t >= 1.0:
        return float(beta)
    return float(min(beta, ((1.0 - t) ** 2 + t ** 2) / (t * (1.0 - t))))


def align_previous_chunk(actions: np.ndarray, prev_obs_time: float, obs_time: float,
                         dt: float) -> Optional[np.ndarray]:
    """Resample the previous chunk on the new chunk's time grid, for :meth:`guidance_for`.

    A chunk stamped ``prev_obs_time`` holds ``actions[j]`` for ``prev_obs_time + (j + 1) dt``; the
    new one (observation at ``obs_time``) holds row ``i`` for ``obs_time + (i + 1) dt``. The
    previous chunk is interpolated linearly at those times (as joint_trajectory_controller
    executes it), up to its last point.

    :param actions: ``(H, D)`` the previous chunk as published (robot units).
    :param prev_obs_time: its stamp (observation time, s).
    :param obs_time: the new observation's time (s, same clock).
    :param dt: control period (s).
    :return: ``(R, D)`` rows still ahead, or None when the previous chunk has ended.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[0] == 0 or not dt > 0:
        return None
    # position of the new grid on the previous chunk's index axis (j = 0 at its first point)
    offset = (float(obs_time) - float(prev_obs_time)) / float(dt)
    last = actions.shape[0] - 1
    rows = int(math.floor(last - offset + 1e-9)) + 1
    if rows < 1:
        return None
    grid = np.clip(offset + np.arange(rows, dtype=np.float64), 0.0, float(last))
    index = np.arange(actions.shape[0], dtype=np.float64)
    return np.stack([np.interp(grid, index, actions[:, k]) for k in range(actions.shape[1])],
                    axis=1)


class PrefixGuidance:
    """The guidance callable :func:`retain_ros.policies.flow.euler_sample` takes.

    :param target: ``(H, A)`` or ``(B, H, A)`` previous chunk in model space (normalized,
        padded), aligned with the new chunk's steps.
    :param weights: ``(H, A)`` soft mask (0 on padded dimensions).
    :param beta: largest guidance weight.
    """

    def __init__(self, target: torch.Tensor, weights: torch.Tensor, beta: float):
        self.target = target
        self.weights = weights
        self.beta = float(beta)
        self.last_weight = float('nan')

    def __call__(self, x_t: torch.Tensor, t: float, velocity_fn: VelocityFn) -> torch.Tensor:
        target = self.target.to(x_t.device, x_t.dtype)
        weights = self.weights.to(x_t.device, x_t.dtype)
        x = x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            v = velocity_fn(x, t)
            x_hat = x - t * v
            error = (target - x_hat) * weights
            grad, = torch.autograd.grad(x_hat, x, grad_outputs=error.detach())
        self.last_weight = guidance_weight(t, self.beta)
        return (v - self.last_weight * grad).detach()


class LatencyEstimator:
    """Running estimate of the inference latency, warm-up calls excluded.

    The estimate is the largest of the last ``window`` measurements (a delay estimated too short
    lets the new chunk disagree with actions already executed; too long only freezes more).

    :param warmup: number of first measurements ignored (graph capture, allocator, caches).
    :param window: number of recent measurements kept.
    :param initial: estimate (s) before any measurement counts (0: no freeze).
    """

    def __init__(self, warmup: int = 1, window: int = 20, initial: float = 0.0):
        if warmup < 0 or window < 1:
            raise ValueError(f'warmup must be >= 0 and window >= 1, got {warmup}, {window}')
        self.warmup = int(warmup)
        self.initial = float(initial)
        self._samples: Deque[float] = deque(maxlen=int(window))
        self._seen = 0

    def record(self, seconds: float) -> None:
        """Add one measured latency (s); non-finite or negative values are ignored."""
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0.0:
            return
        self._seen += 1
        if self._seen > self.warmup:
            self._samples.append(seconds)

    @property
    def count(self) -> int:
        """Return how many measurements count: those after warm-up, within the window."""
        return len(self._samples)

    @property
    def estimate(self) -> float:
        """Estimated latency in seconds."""
        return max(self._samples) if self._samples else self.initial

    def delay_steps(self, period: float) -> int:
        """Return the estimate in control periods, rounded up (``d`` of the paper)."""
        if not period > 0:
            raise ValueError(f'control period must be > 0, got {period}')
        return int(math.ceil(self.estimate / period - 1e-9))

    def reset(self) -> None:
        """Forget every measurement (a new model, a new device)."""
        self._samples.clear()
        self._seen = 0


class RealTimeChunker:
    """Builds the RTC guidance of a policy from the not-yet-executed rest of its last chunk.

    :param policy: a :class:`retain_ros.policies.base.Policy`. Its ``normalize_actions(actions
        (H, action_dim)) -> (H, max_action_dim)`` maps robot units to model space.
    :param execution_horizon: ``s``: steps of the new chunk guided towards the previous one
        (at most ``chunk_size``; typically the number of steps executed between two inferences).
    :param beta: largest guidance weight (the paper uses 5).
    :param schedule: soft-mask schedule, ``exp`` (paper), ``linear`` or ``hard``.
    :param latency: the :class:`LatencyEstimator` (default: a new one, 1 warm-up call).
    """

    def __init__(self, policy: Any, execution_horizon: int, beta: float = DEFAULT_BETA,
                 schedule: str = 'exp', latency: Optional[LatencyEstimator] = None):
        horizon = int(policy.chunk_size)
        if not 0 < int(execution_horizon) <= horizon:
            raise ValueError(f'execution_horizon must be in [1, chunk_size={horizon}], got '
                             f'{execution_horizon}')
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f'beta must be a positive number, got {beta}')
        prefix_weights(0, 1, 1, schedule)  # validates the name
        self.policy = policy
        self.horizon = horizon
        self.action_dim = int(policy.action_dim)
        self.execution_horizon = int(execution_horizon)
        self.beta = float(beta)
        self.schedule = schedule
        self.latency = latency if latency is not None else LatencyEstimator()

    def to_model_space(self, actions: np.ndarray) -> torch.Tensor:
        """``(H, action_dim)`` robot-unit actions -> ``(H, max_action_dim)`` model space."""
        return torch.as_tensor(self.policy.normalize_actions(actions)).detach().float()

    def guidance_for(self, prev_chunk_robot_units_remaining: Optional[np.ndarray],
                     delay_steps: int) -> Optional[PrefixGuidance]:
        """Return the guidance for the next chunk, or None to sample without guidance.

        :param prev_chunk_robot_units_remaining: ``(R, action_dim)`` the previous chunk's actions
            not executed when the new observation was taken, in robot units (the published,
            safety-filtered targets), aligned with the new chunk: row ``i`` is the target for
            ``(i + 1) * dt`` after the new observation. Rows beyond ``chunk_size`` are ignored.
            None or empty: no previous chunk (first chunk, after a reset or a hold).
        :param delay_steps: ``d``: steps that will have executed when the new chunk arrives
            (:meth:`LatencyEstimator.delay_steps`).
        :return: a :class:`PrefixGuidance`, or None when nothing would be guided (no previous
            chunk, or every weight is zero).
        :raises ValueError: on a wrong action width or non-finite values.
        """
        if prev_chunk_robot_units_remaining is None:
            return None
        prev = np.asarray(prev_chunk_robot_units_remaining, dtype=np.float64)
        if prev.size == 0:
            return None
        if prev.ndim != 2 or prev.shape[1] != self.action_dim:
            raise ValueError(f'previous chunk must be (R, {self.action_dim}), got '
                             f'{tuple(prev.shape)}')
        if not np.all(np.isfinite(prev)):
            raise ValueError('previous chunk holds non-finite values')
        if delay_steps < 0:
            raise ValueError(f'delay_steps must be >= 0, got {delay_steps}')
        rows = min(prev.shape[0], self.horizon)
        steps = prefix_weights(delay_steps, min(self.execution_horizon, rows), self.horizon,
                               self.schedule)
        if not steps.any():
            return None
        padded = np.concatenate([prev[:rows], np.repeat(prev[rows - 1:rows],
                                                        self.horizon - rows, axis=0)])
        target = self.to_model_space(padded)
        weights = torch.zeros_like(target)
        weights[:, :self.action_dim] = torch.as_tensor(steps, dtype=torch.float32)[:, None]
        return PrefixGuidance(target, weights, self.beta)

    def reset(self) -> None:
        """Forget the latency measurements (call when the model or its device changes)."""
        self.latency.reset()
