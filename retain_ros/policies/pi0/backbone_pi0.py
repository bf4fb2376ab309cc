"""π0 network: transformers ``PI0ForConditionalGeneration`` with LeRobot's float64 time embedding.

Parameter names of the module are the canonical π0 keys of the merging library
(``model.vlm.*``, ``model.dit.*``, ``embed_action_time.*``, ``action_out_proj.*``);
:func:`retain_ros.merging.dialects.canonical_pi0_key` maps LeRobot / openpi / transformers-saved
names onto them.
"""
from __future__ import annotations

from typing import Optional

import torch

from retain_ros.policies.flow import sinusoidal_time_embedding
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec


class Float64TimeEmbedding(torch.nn.Module):
    """Drop-in for transformers' ``PI0TimestepEmbeddings`` with LeRobot's float64 sinusoid.

    No parameters or persistent buffers, so the module's state-dict names do not change.
    """

    def __init__(self, dim: int, min_period: float, max_period: float):
        super().__init__()
        self.dim = int(dim)
        self.min_period = float(min_period)
        self.max_period = float(max_period)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        return sinusoidal_time_embedding(time, self.dim, self.min_period, self.max_period)


def build_pi0_module(spec: Pi0Spec, device: torch.device, dtype: torch.dtype,
                     init_weights: bool = False, seed: Optional[int] = None) -> torch.nn.Module:
    """Create ``PI0ForConditionalGeneration`` on ``device`` in ``dtype``.

    :param init_weights: random-initialize instead of leaving memory for the merger.
    :param seed: seed of the initialization (``None``: the current torch RNG state).
    """
    from transformers import PI0ForConditionalGeneration
    from transformers.initialization import no_init_weights

    config = spec.hf_config
    with torch.device(device):
        if init_weights:
            if seed is not None:
                torch.manual_seed(seed)
            model = PI0ForConditionalGeneration._from_config(config, dtype=dtype)
        else:
            with no_init_weights():
                model = PI0ForConditionalGeneration._from_config(config, dtype=dtype)
    model.embed_action_time.sinusoid_embeds = Float64TimeEmbedding(
        config.dit_config.hidden_size, config.min_period, config.max_period)
    return model.eval()
