"""Continual chain: ``theta_0 = theta_pre``; ``theta_n = (1 - a) * theta_{n-1} + a * theta_ft_n``.

Finetuned checkpoints are given in the order the tasks were learned (task n was finetuned from
``theta_{n-1}``); ``lambdas`` gives one alpha per step, else ``alpha`` is used at every step.
"""
from __future__ import annotations

from typing import Sequence

from retain_ros.merging.recipes.base import as_compute
from retain_ros.merging.recipes.base import compute_dtype
from retain_ros.merging.recipes.base import Recipe
from retain_ros.merging.recipes.interpolate import lerp


class Sequential(Recipe):
    """RETAIN's continual-skill chain of interpolations."""

    pretty_name = 'Sequential (continual) merging'
    reference_url = 'https://arxiv.org/abs/2512.08333'
    min_finetuned = 1
    max_finetuned = None

    def is_convex(self, coefs: Sequence[float]) -> bool:
        return all(0.0 <= c <= 1.0 for c in coefs)

    def combine(self, pre, finetuned, coefs, out=None):
        dtype = compute_dtype(pre, *finetuned) if out is None else out.dtype
        cur = as_compute(pre, dtype)
        for ft, a in zip(finetuned, coefs):
            cur = lerp(cur, as_compute(ft, dtype), a)
        return cur if out is None else out.copy_(cur)
