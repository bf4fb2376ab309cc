"""π0.5 policy: transformers PaliGemma / Gemma / SigLIP plus the pieces transformers lacks.

transformers (5.x) has no π0.5. The prefix (SigLIP image tokens + Gemma language tokens, all
bidirectional, padded text masked) runs through transformers' own ``PaliGemmaModel`` exactly as
its π0 does. The action expert is transformers' ``GemmaModel`` whose RMSNorms are replaced by
:class:`AdaptiveRMSNorm` (``dense: width -> 3 * width``: scale, shift, gate, conditioned on the
flow-time embedding), run layer by layer by :meth:`Pi05Model.velocity` with gated residuals
``x + y * gate``; each expert layer attends to the cached prefix keys / values of the same
language-model layer and to the action tokens (one bidirectional block). The flow time goes
``sinusoid (float64, as LeRobot / openpi) -> time_mlp_in -> silu -> time_mlp_out -> silu`` and
conditions every expert norm; the action tokens are ``action_in_proj(x_t)`` alone (no state
token: π0.5 has the state in the prompt).

Parameter names of :attr:`Pi05Policy.module` are the merging library's canonical π0-family names
(:mod:`retain_ros.merging.dialects`), so the live merger maps checkpoints onto them with the π0
rule: LeRobot ``model.paligemma_with_expert.paligemma.model.X`` -> ``model.vlm.X`` (the SigLIP
``vision_tower.vision_model.`` -> ``vision_tower.``), ``...paligemma.lm_head`` ->
``model.vlm.language_model.embed_tokens`` (tied), ``...gemma_expert.model.X`` -> ``model.dit.X``,
``...gemma_expert.lm_head`` -> ``model.dit.embed_tokens`` (unused, kept for a complete merge),
``model.{action_in_proj,time_mlp_in,time_mlp_out}`` -> ``embed_action_time.*``,
``model.action_out_proj`` -> ``action_out_proj``; openpi PyTorch names are the same without the
leading ``model.``.

Differences from LeRobot 0.4.4 kept on purpose: the expert's attention output is reshaped with the
model's own head count (LeRobot hard-codes 8, which only works for 8-head models; every
published π0.5 has 8).
"""
from __future__ import annotations

import logging
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from retain_ros.merging.devices import resolve_device
from retain_ros.merging.devices import resolve_dtype
from retain_ros.policies.base import Observation
from retain_ros.policies.flow import sinusoidal_time_embedding
from retain_ros.policies.flow import VelocityFn
from retain_ros.policies.norm_stats_files import load_norm_stats
from retain_ros.policies.normalize import as_norm_stats
from retain_ros.policies.normalize import QUANTILES
from retain_ros.policies.pi0.modeling_pi0 import Pi0Policy
from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import resolve_tokenizer_path
from retain_ros.policies.pi05.configuration_pi05 import load_pi05_config
from retain_ros.policies.pi05.configuration_pi05 import Pi05Spec
from retain_ros.policies.pi05.processor_pi05 import Pi05Processor

LOG = logging.getLogger(__name__)


class AdaptiveRMSNorm(nn.Module):
    """openpi's adaRMS: ``rms(x) * (1 + scale) + shift`` and a residual ``gate`` from ``cond``.

    :param dim: normalized width.
    :param cond_dim: width of the condition (the expert width).
    :param eps: RMS epsilon (Gemma: 1e-6).
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim, bias=True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        dtype = x.dtype
        var = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x * torch.rsqrt(var + self.eps)
        mod = self.dense(cond)
        if x.ndim == 3:
            mod = mod.unsqueeze(1)
        scale, shift, gate = torch.chunk(mod, 3, dim=-1)
        normed = normed * (1 + scale.to(torch.float32)) + shift.to(torch.float32)
        return normed.to(dtype), gate.to(dtype)


class Pi05ActionTime(nn.Module):
    """``action_in_proj`` and the time MLP (``time_mlp_in`` / ``time_mlp_out``)."""

    def __init__(self, max_action_dim: int, width: int, min_period: float, max_period: float):
        super().__init__()
        self.action_in_proj = nn.Linear(max_action_dim, width)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)
        self.width = width
        self.min_period = min_period
        self.max_period = max_period

    def forward(self, noisy_actions: torch.Tensor,
                timestep: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(action tokens (B, H, width), adaRMS condition (B, width))``."""
        emb = sinusoidal_time_embedding(timestep, self.width, self.min_period, self.max_period)
        emb = emb.to(self.time_mlp_in.weight.dtype)
        cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(emb))))
        return self.action_in_proj(noisy_actions), cond


class Pi05Backbone(nn.Module):
    """``vlm`` (transformers ``PaliGemmaModel``) and ``dit`` (``GemmaModel`` with adaRMS)."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import AutoModel

        self.vlm = AutoModel.from_config(config.vlm_config)
        self.dit = AutoModel.from_config(config.dit_config)
        width = int(config.dit_config.hidden_size)
        eps = float(config.dit_config.rms_norm_eps)
        for layer in self.dit.layers:
            layer.input_layernorm = AdaptiveRMSNorm(width, width, eps)
            layer.post_attention_layernorm = AdaptiveRMSNorm(width, width, eps)
        self.dit.norm = AdaptiveRMSNorm(width, width, eps)


class Pi05Model(nn.Module):
    """The π0.5 network; parameter names are the canonical π0-family names (module docstring).

    :param config: a transformers ``PI0Config`` holding the sizes (``vlm_config``, ``dit_config``,
        ``chunk_size``, ``max_action_dim``, ``min_period``, ``max_period``).
    """

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.model = Pi05Backbone(config)
        width = int(config.dit_config.hidden_size)
        self.embed_action_time = Pi05ActionTime(int(config.max_action_dim), width,
                                                float(config.min_period),
                                                float(config.max_period))
        self.action_out_proj = nn.Linear(width, int(config.max_action_dim))
        vlm_layers = int(config.vlm_config.text_config.num_hidden_layers)
        if vlm_layers != len(self.model.dit.layers):
            raise ValueError(f'π0.5 needs as many expert layers as language-model layers, got '
                             f'{len(self.model.dit.layers)} and {vlm_layers}')

    # -- prefix -----------------------------------------------------------------------------------
    def embed_prefix(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """``[image tokens of every camera, in order] + [language embeddings]`` ``(B, L, D)``.

        transformers' Gemma embedding multiplies by ``sqrt(D)`` and image features are not
        scaled: LeRobot's ``lang * sqrt(D)`` with unscaled image tokens.
        """
        vlm = self.model.vlm
        batch, cams = pixel_values.shape[:2]
        feats = vlm.get_image_features(pixel_values.flatten(0, 1)).pooler_output
        feats = feats.reshape(batch, cams * feats.shape[1], feats.shape[2])
        text = vlm.get_input_embeddings()(input_ids)
        return torch.cat([feats.to(text.dtype), text], dim=1)

    def prefix_cache(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                     prefix_mask: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Keys / values of every language-model layer for the prefix (bidirectional, padded).

        :param prefix_mask: ``(B, L)`` 1 on valid prefix tokens (images and real text).
        """
        embeds = self.embed_prefix(pixel_values, input_ids)
        position_ids = prefix_mask.long().cumsum(-1) - 1
        out = self.model.vlm(inputs_embeds=embeds, attention_mask=prefix_mask.long(),
                             position_ids=position_ids,
                             token_type_ids=torch.zeros_like(prefix_mask, dtype=torch.long),
                             use_cache=True)
        cache = out.cache
        return [(layer.keys, layer.values) for layer in cache.layers]

    # -- suffix -----------------------------------------------------------------------------------
    def velocity(self, x_t: torch.Tensor, timestep: torch.Tensor,
                 prefix: List[Tuple[torch.Tensor, torch.Tensor]],
                 prefix_mask: torch.Tensor) -> torch.Tensor:
        """Flow velocity ``(B, H, max_action_dim)`` of the noisy actions ``x_t`` at time ``t``."""
        from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb
        from transformers.models.gemma.modeling_gemma import repeat_kv

        dit = self.model.dit
        tokens, cond = self.embed_action_time(x_t, timestep)
        hidden = tokens.to(self.action_out_proj.weight.dtype)
        batch, length = hidden.shape[:2]
        valid = prefix_mask.bool()
        offset = valid.sum(-1, keepdim=True)
        position_ids = offset + torch.arange(length, device=hidden.device)[None, :]
        cos, sin = dit.rotary_emb(hidden, position_ids)
        keep = torch.cat([valid, torch.ones(batch, length, dtype=torch.bool,
                                            device=valid.device)], dim=1)
        for layer, (pk, pv) in zip(dit.layers, prefix):
            attn = layer.self_attn
            h, gate = layer.input_layernorm(hidden, cond)
            shape = (batch, length, -1, attn.head_dim)
            q = attn.q_proj(h).view(shape).transpose(1, 2)
            k = attn.k_proj(h).view(shape).transpose(1, 2)
            v = attn.v_proj(h).view(shape).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = torch.cat([pk.to(k.dtype), k], dim=2)
            v = torch.cat([pv.to(v.dtype), v], dim=2)
            groups = q.shape[1] // k.shape[1]
            k, v = repeat_kv(k, groups), repeat_kv(v, groups)
            scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
            scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, length, -1)
            hidden = hidden + attn.o_proj(out) * gate
            h, gate = layer.post_attention_layernorm(hidden, cond)
            hidden = hidden + layer.mlp(h) * gate
        hidden, _ = dit.norm(hidden, cond)
        return self.action_out_proj(hidden[:, -self.config.chunk_size:].to(
            self.action_out_proj.weight.dtype))


def build_pi05_module(spec: Pi05Spec, device: torch.device, dtype: torch.dtype,
                      init_weights: bool = False, seed: Optional[int] = None) -> Pi05Model:
    """Create :class:`Pi05Model` on ``device`` in ``dtype`` (weights left for the merger)."""
    if seed is not None:
        torch.manual_seed(seed)
    config = spec.hf_config
    for sub in (config.vlm_config, config.vlm_config.text_config,
                config.vlm_config.vision_config, config.dit_config):
        sub._attn_implementation = 'eager'
    with torch.device(device):
        if init_weights:
            model = Pi05Model(config)
        else:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                model = Pi05Model(config)
    return model.to(dtype).eval()


class Pi05Policy(Pi0Policy):
    """π0.5 VLA policy (:class:`Pi05Model`), LeRobot / openpi checkpoints.

    Same surface as :class:`~retain_ros.policies.pi0.modeling_pi0.Pi0Policy`: ``predict_batch``
    with explicit noise and guidance, ``normalize_actions``, ``load_weights``, ``stats``.
    """

    name = 'pi05'

    @classmethod
    def build(cls, config_dir: str, tokenizer_path: str = '', device: str = 'cpu',
              dtype: str = 'float32', stats_dir: Optional[str] = None, noise_seed: int = 0,
              init_weights: bool = False, stats: Any = None,
              init_seed: Optional[int] = None) -> 'Pi05Policy':
        """Build a π0.5 from a checkpoint directory's ``config.json``, without loading weights.

        :param tokenizer_path: local tokenizer; empty = looked up beside the checkpoint
            (:func:`~retain_ros.policies.pi0.tokenizer_pi0.resolve_tokenizer_path`).
        :param stats_dir: where the normalization statistics are (default ``config_dir``);
            files without a mode (openpi) are read as QUANTILES, π0.5's mode.
        """
        spec = load_pi05_config(config_dir)
        tokenizer = load_tokenizer(resolve_tokenizer_path(config_dir, tokenizer_path))
        if stats is None:
            stats = load_norm_stats(stats_dir or config_dir, spec.state_dim, spec.action_dim,
                                    default_mode=QUANTILES)
        stats = as_norm_stats(stats, spec.state_dim, spec.action_dim)
        dev = resolve_device(device)
        tdt = resolve_dtype(dtype, dev)
        model = build_pi05_module(spec, dev, tdt, init_weights=init_weights, seed=init_seed)
        LOG.info('π0.5 built on %s (%s): %.1fM parameters', dev, tdt,
                 sum(p.numel() for p in model.parameters()) / 1e6)
        return cls(spec, model, Pi05Processor(spec, tokenizer, stats), noise_seed=noise_seed)

    @classmethod
    def from_config(cls, *args, **kwargs):
        raise NotImplementedError('Pi05Policy is built from a checkpoint directory: '
                                  'Pi05Policy.build(checkpoint_dir)')

    def _velocity_fn(self, inputs: Dict[str, torch.Tensor]) -> VelocityFn:
        """Return the expert's velocity ``v(x_t, t)`` against the prefix computed once."""
        model = self.model
        mask = inputs['attention_mask']
        prefix = model.prefix_cache(inputs['pixel_values'], inputs['input_ids'], mask)
        batch = mask.shape[0]

        def velocity(x_t: torch.Tensor, t: float) -> torch.Tensor:
            time = torch.full((batch,), t, dtype=torch.float32, device=x_t.device)
            return model.velocity(x_t, time, prefix, mask)
        return velocity

    def _compile_steps(self, mode: str) -> Tuple[Callable, Callable]:
        """Return the compiled ``(Pi05Model.prefix_cache, Pi05Model.velocity)``."""
        from retain_ros.policies.compile import compile_fn

        model = self.model

        def prefix(pixel_values, input_ids, mask):
            return model.prefix_cache(pixel_values, input_ids, mask)

        def step(x_t, timestep, kv, mask):
            return model.velocity(x_t, timestep, kv, mask)
        return (compile_fn(prefix, mode, 'π0.5 prefix pass'),
                compile_fn(step, mode, 'π0.5 velocity step'))

    def _compiled_velocity_fn(self, inputs: Dict[str, torch.Tensor]) -> VelocityFn:
        """Return ``v(x_t, t)`` of the compiled steps (the prefix computed once, here)."""
        prefix_fn, step_fn = self._steps
        mask = inputs['attention_mask']
        kv = prefix_fn(inputs['pixel_values'], inputs['input_ids'], mask)
        batch = mask.shape[0]

        def velocity(x_t: torch.Tensor, t: float) -> torch.Tensor:
            timestep = torch.full((batch,), t, dtype=torch.float32, device=x_t.device)
            return step_fn(x_t, timestep, kv, mask)
        return velocity

    def training_loss(self, observations: Sequence[Observation], action_chunks: np.ndarray,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise NotImplementedError('π0.5 training is not part of retain_ros (finetune with '
                                  'LeRobot or openpi, then merge here)')


def build_policy(checkpoint_dir: str, device: str = 'cpu', dtype: str = 'auto',
                 tokenizer_path: str = '', noise_seed: int = 0) -> Pi05Policy:
    """Family builder for :mod:`retain_ros.policies.loader` (weights not loaded)."""
    return Pi05Policy.build(checkpoint_dir, tokenizer_path=tokenizer_path, device=device,
                            dtype=dtype, noise_seed=noise_seed)
