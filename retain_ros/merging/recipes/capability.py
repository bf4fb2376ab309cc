"""Capability vector: ``theta = theta_pre + lambda * (theta_aux - theta_sft)``.

Finetuned checkpoints are ``[aux, sft]``: a model finetuned with an auxiliary objective and the
same model finetuned without it; their difference (the capability) is added to the base.
"""
from __future__ import annotations

import torch

from retain_ros.merging.recipes.base import as_compute
from retain_ros.merging.recipes.base import compute_dtype
from retain_ros.merging.recipes.base import Recipe


class CapabilityVector(Recipe):
    """CapVector-style transfer of a capability difference onto the base model."""

    pretty_name = 'Capability vector'
    reference_url = 'https://arxiv.org/abs/2605.10903'
    min_finetuned = 2
    max_finetuned = 2

    def coefficients(self, spec, group, n_finetuned):
        lam = spec.group_alpha.get(group)
        if lam is None:
            lam = spec.lambdas[0] if spec.lambdas else spec.alpha
        return (float(lam), float(lam))

    def combine(self, pre, finetuned, coefs, out=None):
        aux, sft = finetuned
        dtype = compute_dtype(pre, aux, sft) if out is None else out.dtype
        base = as_compute(pre, dtype)
        lam = float(coefs[0])
        if lam == 0.0:
            return base if out is None else out.copy_(base)
        diff = as_compute(aux, dtype) - as_compute(sft, dtype)
        if out is None:
            return torch.add(base, diff, alpha=lam)
        return torch.add(base, diff, alpha=lam, out=out)
