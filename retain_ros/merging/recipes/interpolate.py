"""RETAIN / WiSE-FT interpolation: ``theta = (1 - alpha) * theta_pre + alpha * theta_ft``."""
from __future__ import annotations

from typing import Optional
from typing import Sequence

import torch

from retain_ros.merging.recipes.base import as_compute
from retain_ros.merging.recipes.base import compute_dtype
from retain_ros.merging.recipes.base import Recipe


def lerp(pre: torch.Tensor, ft: torch.Tensor, alpha: float,
         out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(1 - alpha) * pre + alpha * ft`` in float32, exact at alpha 0 and 1."""
    dtype = compute_dtype(pre, ft) if out is None else out.dtype
    a, b = as_compute(pre, dtype), as_compute(ft, dtype)
    if alpha == 0.0:
        return a if out is None else out.copy_(a)
    if alpha == 1.0:
        return b if out is None else out.copy_(b)
    if out is None:
        return torch.lerp(a, b, float(alpha))
    return torch.lerp(a, b, float(alpha), out=out)


class Interpolate(Recipe):
    """Weight-space interpolation between one pretrained and one finetuned model."""

    name = 'interpolate'
    pretty_name = 'RETAIN / WiSE-FT interpolation'
    reference_url = 'https://arxiv.org/abs/2512.08333'
    min_finetuned = 1
    max_finetuned = 1

    def is_convex(self, coefs: Sequence[float]) -> bool:
        return all(0.0 <= c <= 1.0 for c in coefs)

    def combine(self, pre, finetuned, coefs, out=None):
        return lerp(pre, finetuned[0], coefs[0], out)
