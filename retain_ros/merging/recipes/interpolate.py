"""RETAIN / WiSE-FT interpolation: ``theta = (1 - alpha) * theta_pre + alpha * theta_ft``."""
from __future__ import annotations

import functools
from typing import Optional
from typing import Sequence

import torch

from retain_ros.merging.recipes.base import as_compute
from retain_ros.merging.recipes.base import compute_dtype
from retain_ros.merging.recipes.base import Recipe


@functools.lru_cache(maxsize=None)
def native_lerp_exact(dtype: torch.dtype) -> bool:
    """Whether ``torch.lerp`` on ``dtype`` equals float32 lerp rounded once to ``dtype``.

    PyTorch computes half-precision lerp in float32 internally; this probe checks it on this
    build, so the in-place fast path never changes results.
    """
    if dtype not in (torch.bfloat16, torch.float16):
        return False
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4099, generator=gen).to(dtype)
    b = torch.randn(4099, generator=gen).to(dtype)
    return all(torch.equal(torch.lerp(a, b, w), torch.lerp(a.float(), b.float(), w).to(dtype))
               for w in (0.1, 0.3, 0.5, 0.7, 0.9))


def lerp(pre: torch.Tensor, ft: torch.Tensor, alpha: float,
         out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(1 - alpha) * pre + alpha * ft`` in float32, exact at alpha 0 and 1.

    With ``out`` the result is written in ``out``'s dtype: float32, or bfloat16 / float16 when
    the inputs have that dtype too (then lerp runs natively with float32 internal math, see
    :func:`native_lerp_exact`).
    """
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

    pretty_name = 'RETAIN / WiSE-FT interpolation'
    reference_url = 'https://arxiv.org/abs/2512.08333'
    min_finetuned = 1
    max_finetuned = 1
    lowp_out = True

    def is_convex(self, coefs: Sequence[float]) -> bool:
        return all(0.0 <= c <= 1.0 for c in coefs)

    def combine(self, pre, finetuned, coefs, out=None):
        return lerp(pre, finetuned[0], coefs[0], out)
