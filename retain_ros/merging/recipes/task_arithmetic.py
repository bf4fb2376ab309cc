"""Task arithmetic: ``theta = theta_pre + sum_i lambda_i * (theta_i - theta_pre)``."""
from __future__ import annotations

from retain_ros.merging.recipes.base import as_compute
from retain_ros.merging.recipes.base import compute_dtype
from retain_ros.merging.recipes.base import Recipe
from retain_ros.merging.recipes.interpolate import lerp


class TaskArithmetic(Recipe):
    """Add scaled task vectors to the pretrained model (Ilharco et al., 2023)."""

    pretty_name = 'Task arithmetic'
    reference_url = 'https://arxiv.org/abs/2212.04089'
    min_finetuned = 1
    max_finetuned = None

    def is_convex(self, coefs):
        return len(coefs) == 1 and 0.0 <= coefs[0] <= 1.0

    def combine(self, pre, finetuned, coefs, out=None):
        if len(finetuned) == 1:  # one task vector: same as interpolation, exact at 0 and 1
            return lerp(pre, finetuned[0], coefs[0], out)
        dtype = compute_dtype(pre, *finetuned) if out is None else out.dtype
        base = as_compute(pre, dtype)
        acc = base.clone() if out is None else out.copy_(base)
        for ft, lam in zip(finetuned, coefs):
            if lam != 0.0:
                acc.add_(as_compute(ft, dtype) - base, alpha=float(lam))
        return acc
