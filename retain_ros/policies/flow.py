"""The flow-matching sampler every family shares (openpi / LeRobot convention). No ROS here.

``x`` at ``t = 1`` is the initial noise, ``t = 0`` the (normalized, padded) action chunk.
Euler steps with ``dt = -1 / num_steps``: ``x <- x + dt * v(x, t)``, ``t = 1, 1 + dt, ...``.

A family adapter supplies ``velocity_fn(x_t, t) -> v`` (its action expert attending to the
cached prefix). A *guidance* (real-time chunking, ...) wraps the velocity: it is called as
``guidance(x_t, t, velocity_fn) -> v`` and may evaluate ``velocity_fn`` with autograd enabled.

Also shared: the start noise of a batch (:func:`seeded_noise`), the sine-cosine flow-time
embedding (:func:`sinusoidal_time_embedding`) of LeRobot / openpi, and the timed tail of every
family's ``predict_batch`` (:func:`sample_chunks`: sample, unnormalize, one chunk per row).
"""
from __future__ import annotations

import math
import time
from typing import Callable
from typing import List
from typing import Optional
from typing import Tuple

import torch

#: ``velocity_fn(x_t, t) -> v``: ``x_t`` ``(B, H, A)``, ``t`` a Python float in (0, 1].
VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]
#: ``guidance(x_t, t, velocity_fn) -> v``.
Guidance = Callable[[torch.Tensor, float, VelocityFn], torch.Tensor]


def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int,
                 guidance: Optional[Guidance] = None,
                 keep_velocities: bool = False) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Integrate the flow from ``t = 1`` (``noise``) to ``t = 0``.

    :param velocity_fn: the family's velocity field.
    :param noise: ``(B, H, A)`` initial noise (the model's dtype and device).
    :param num_steps: number of Euler steps (the checkpoint's ``num_inference_steps``).
    :param guidance: optional wrapper of the velocity (see the module docstring).
    :param keep_velocities: also return every step's velocity (``[0]`` is at ``t = 1``).
    :return: ``(x_0, velocities)``; ``velocities`` is empty unless ``keep_velocities``.
    """
    if num_steps < 1:
        raise ValueError(f'num_steps must be >= 1, got {num_steps}')
    dt = -1.0 / num_steps
    x = noise
    velocities: List[torch.Tensor] = []
    for step in range(num_steps):
        t = 1.0 + step * dt
        v = velocity_fn(x, t) if guidance is None else guidance(x, t, velocity_fn)
        if keep_velocities:
            velocities.append(v.detach().clone())
        x = x + dt * v
    return x, velocities


def sample_chunks(velocity_fn: VelocityFn, start: torch.Tensor, num_steps: int,
                  guidance: Optional[Guidance], processor, control_period: float,
                  t_start: float, t_inputs: float) -> list:
    """Sample a batch of action chunks and time the steps (the tail of ``predict_batch``).

    :param velocity_fn: the family's velocity field against the cached prefix.
    :param start: ``(B, H, A)`` start noise.
    :param num_steps: Euler steps.
    :param guidance: optional guidance (RTC); only then does sampling build an autograd graph.
    :param processor: the family's processor (its ``unnormalize_actions`` gives robot units).
    :param control_period: seconds between the chunk's actions.
    :param t_start: ``time.perf_counter()`` when ``predict_batch`` began.
    :param t_inputs: ``time.perf_counter()`` when the model inputs were ready.
    :return: one :class:`~retain_ros.policies.base.ActionChunk` per row, each with the timings
        ``model_ms``, ``preprocess_ms``, ``postprocess_ms``, ``total_ms`` in its ``info``.
    """
    from retain_ros.policies.base import ActionChunk

    with torch.set_grad_enabled(guidance is not None):
        actions, _ = euler_sample(velocity_fn, start, num_steps, guidance=guidance)
    actions = actions.detach()
    if actions.device.type == 'cuda':
        torch.cuda.synchronize(actions.device)
    t_model = time.perf_counter()
    chunks = processor.unnormalize_actions(actions)
    t_end = time.perf_counter()
    info = {'model_ms': (t_model - t_inputs) * 1e3, 'preprocess_ms': (t_inputs - t_start) * 1e3,
            'postprocess_ms': (t_end - t_model) * 1e3, 'total_ms': (t_end - t_start) * 1e3}
    return [ActionChunk(actions=c, dt=control_period, info=dict(info)) for c in chunks]


def seeded_noise(batch: int, chunk_size: int, width: int, seed: int) -> torch.Tensor:
    """Return the start noise of a batch: row ``i`` is ``N(0, 1)`` seeded with ``seed + i``.

    :return: ``(batch, chunk_size, width)`` float32 on the CPU (row 0 is the same for every
        batch size, so one observation and the first of a batch get the same noise).
    """
    rows = []
    for i in range(batch):
        gen = torch.Generator(device='cpu').manual_seed(seed + i)
        rows.append(torch.randn(chunk_size, width, generator=gen))
    return torch.stack(rows)


def sinusoidal_time_embedding(time: torch.Tensor, dim: int, min_period: float,
                              max_period: float) -> torch.Tensor:
    """Return the flow-time embedding ``[sin(2π t / p), cos(2π t / p)]`` of times ``(B,)``.

    LeRobot and openpi compute it in float64 (float32 on MPS) and cast afterwards;
    transformers' ``PI0TimestepEmbeddings`` does it in float32, which moves the velocities by
    ~6e-5 on the reference checkpoint.

    :return: ``(B, dim)`` float64 (float32 on MPS).
    """
    if dim % 2:
        raise ValueError(f'time embedding width {dim} must be even')
    wide = torch.float32 if time.device.type == 'mps' else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=wide, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scale = 1.0 / period * 2 * math.pi
    arg = scale[None, :] * time[:, None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
