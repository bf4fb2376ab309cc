"""SmolVLA's attention pieces, as LeRobot 0.4.4 computes them.

- RoPE: rotate-half with the wavelength fixed at 10000 (LeRobot ignores the config's
  ``rope_theta``), in float32;
- eager grouped-query attention in float32 with ``head_dim ** -0.5``;
- big_vision's block-causal 2D mask from pad / block masks;
- SmolVLM's patch position ids as transformers <= 4.57 computed them.
"""
from __future__ import annotations

from typing import List
from typing import Tuple

import torch
from torch import nn

#: LeRobot's SmolVLA RoPE wavelength (hard-coded there; the VLM config's rope_theta is unused).
ROPE_WAVELENGTH = 10_000.0
#: Cached prefix: per VLM layer ``(keys after RoPE, values)``, each ``(B, P, kv_heads, head_dim)``.
PrefixCache = List[Tuple[torch.Tensor, torch.Tensor]]


def apply_rope(x: torch.Tensor, positions: torch.Tensor,
               wavelength: float = ROPE_WAVELENGTH) -> torch.Tensor:
    """Rotate-half RoPE of ``x (B, L, H, D)`` at integer ``positions (B, L)``, in float32."""
    half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.to(torch.float32)
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    radians = positions[..., None].to(torch.float32) / (wavelength ** exponents)[None, None, :]
    radians = radians[..., None, :]
    sin, cos = torch.sin(radians), torch.cos(radians)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(dtype)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
              head_dim: int) -> torch.Tensor:
    """Eager grouped-query attention, scores and softmax in float32.

    :param query: ``(B, Lq, H, D)``.
    :param key: ``(B, Lk, Hkv, D)`` (``H`` a multiple of ``Hkv``; query head ``h`` reads
        key head ``h // (H / Hkv)``).
    :param value: like ``key``.
    :param mask: ``(B, Lq, Lk)`` bool, True where attending is allowed.
    :return: ``(B, Lq, H * D)``.
    """
    batch, length, heads = query.shape[:3]
    groups = heads // key.shape[2]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=2)
        value = value.repeat_interleave(groups, dim=2)
    q = query.to(torch.float32).transpose(1, 2)
    k = key.to(torch.float32).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(2, 3)) * head_dim ** -0.5
    scores = torch.where(mask[:, None], scores, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value.transpose(1, 2))
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim)


def make_att_2d_masks(pad_masks: torch.Tensor, att_masks: torch.Tensor) -> torch.Tensor:
    """Return big_vision's block-causal 2D mask ``(B, L, L)``.

    Token ``i`` sees ``j`` when ``cum[j] <= cum[i]`` and both are real (``att_masks`` 1 starts a
    new block).
    """
    cumsum = torch.cumsum(att_masks.to(torch.long), dim=1)
    allowed = cumsum[:, None, :] <= cumsum[:, :, None]
    return allowed & (pad_masks[:, None, :] & pad_masks[:, :, None])


def legacy_patch_positions(rows: int, cols: int, per_side: int, dtype: torch.dtype,
                           device: torch.device) -> torch.Tensor:
    """Return SmolVLM patch position ids as transformers <= 4.57 computes them (LeRobot's pin).

    The fractional coordinate ``i / n * (1 - 1e-6)``, computed in the pixels' dtype, is bucketed
    against the boundaries ``k / per_side``: in float32 patch rows / columns 0 and 1 both get
    position 0 and the last position is never used. transformers 5's SmolVLM computes
    ``0 .. n - 1`` instead; SmolVLA checkpoints were trained with the old ids, so they are kept.

    :return: ``(rows * cols,)`` int64 ids into the position embedding.
    """
    boundaries = torch.arange(1 / per_side, 1.0, 1 / per_side, device=device)
    coords_h = torch.arange(rows, device=device, dtype=dtype) / rows * (1 - 1e-6)
    coords_w = torch.arange(cols, device=device, dtype=dtype) / cols * (1 - 1e-6)
    bucket_h = torch.bucketize(coords_h, boundaries, right=True)
    bucket_w = torch.bucketize(coords_w, boundaries, right=True)
    return (bucket_h[:, None] * per_side + bucket_w[None, :]).flatten()


def qkv(layer: nn.Module, hidden: torch.Tensor, head_dim: int
        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return a decoder layer's ``(q, k, v)`` of ``hidden``, ``(B, L, heads, head_dim)`` each."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
    shape = (*x.shape[:-1], -1, head_dim)
    return attn.q_proj(x).view(shape), attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)


def finish_layer(layer: nn.Module, hidden: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """Output projection + residual, then the MLP + residual."""
    out = layer.self_attn.o_proj(att.to(layer.self_attn.o_proj.weight.dtype)) + hidden
    return layer.mlp(layer.post_attention_layernorm(out)) + out
