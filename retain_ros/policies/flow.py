"""The flow-matching sampler every family shares (openpi / LeRobot convention). No ROS here.

``x`` at ``t = 1`` is the initial noise, ``t = 0`` the (normalized, padded) action chunk.
Euler steps with ``dt = -1 / num_steps``: ``x <- x + dt * v(x, t)``, ``t = 1, 1 + dt, ...``.

A family adapter supplies ``velocity_fn(x_t, t) -> v`` (its action expert attending to the
cached prefix). A *guidance* (real-time chunking, ...) wraps the velocity: it is called as
``guidance(x_t, t, velocity_fn) -> v`` and may evaluate ``velocity_fn`` with autograd enabled.
"""
from __future__ import annotations

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
