"""SmolVLA policy: transformers' SmolVLM (vision tower, connector, Llama text model) + the
interleaved self/cross-attention action expert, behind :class:`Policy`.

The maths follows LeRobot 0.4.4's ``VLAFlowMatching`` / ``SmolVLMWithExpertModel``:

- prefix = per camera ``connector(vision(img)) * sqrt(d)``, then ``embed_tokens(ids) * sqrt(d)``,
  then ONE state token ``state_proj(state)``; images and text attend to each other
  (bidirectional, padding hidden), the state token sees all of them and itself; position ids are
  ``cumsum(mask) - 1``. The prefix runs once through the kept VLM text layers; every layer's
  keys (after RoPE) and values are cached;
- suffix = ``chunk_size`` action tokens
  ``mlp_out(silu(mlp_in([action_in_proj(x_t), sincos(t)])))`` (the sinusoid in float64), causal
  among themselves. At an expert **self-attention** layer the action tokens attend to the
  cached prefix K/V and to their own K/V (RoPE at ``n_prefix + i``); at a **cross-attention**
  layer the expert's ``k_proj`` / ``v_proj`` map the VLM layer's cached K (after RoPE) / V to
  the expert and the queries get RoPE at ``0 .. chunk_size - 1``;
- RoPE: rotate-half with the wavelength fixed at 10000 (LeRobot ignores the config's
  ``rope_theta``); eager attention in float32 with ``head_dim ** -0.5`` and the VLM's head
  counts;
- velocity = ``action_out_proj(norm(expert_out))`` of the action tokens; Euler from ``t = 1``.

Parameter names of :attr:`SmolVLAPolicy.module` are LeRobot's ``SmolVLAPolicy`` state-dict names,
i.e. exactly the names in its ``model.safetensors`` (``model.vlm_with_expert.vlm.*``,
``model.vlm_with_expert.lm_expert.*``, ``model.state_proj.*`` ...): the merging library reads
those as canonical SmolVLA names, so :class:`~retain_ros.merging.live.LiveMerger` maps a
checkpoint onto the module without renaming.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from retain_ros.policies.base import ActionChunk
from retain_ros.policies.base import copy_state_into
from retain_ros.policies.base import Observation
from retain_ros.policies.base import SpecPolicy
from retain_ros.policies.flow import euler_sample
from retain_ros.policies.flow import Guidance
from retain_ros.policies.flow import VelocityFn
from retain_ros.policies.normalize import as_norm_stats
from retain_ros.policies.normalize import load_norm_stats
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.smolvla.configuration_smolvla import load_smolvla_config
from retain_ros.policies.smolvla.configuration_smolvla import SmolVLASpec
from retain_ros.policies.smolvla.configuration_smolvla import WEIGHTS_FILE
from retain_ros.policies.smolvla.processor_smolvla import load_tokenizer
from retain_ros.policies.smolvla.processor_smolvla import resolve_tokenizer_path
from retain_ros.policies.smolvla.processor_smolvla import SmolVLAProcessor
from retain_ros.policies.smolvla.processor_smolvla import tokenizer_options

LOG = logging.getLogger(__name__)

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
    """big_vision's block-causal mask: token ``i`` sees ``j`` when ``cum[j] <= cum[i]`` and
    both are real (``att_masks`` 1 starts a new block)."""
    cumsum = torch.cumsum(att_masks.to(torch.long), dim=1)
    allowed = cumsum[:, None, :] <= cumsum[:, :, None]
    return allowed & (pad_masks[:, None, :] & pad_masks[:, :, None])


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, min_period: float,
                              max_period: float) -> torch.Tensor:
    """Sine-cosine embedding of flow times ``t (B,)``: ``(B, dim)``, computed in float64 (float32
    on MPS), as LeRobot does."""
    if dim % 2:
        raise ValueError(f'time embedding width {dim} must be even')
    dtype = torch.float32 if t.device.type == 'mps' else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * t.to(dtype)[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def legacy_patch_positions(rows: int, cols: int, per_side: int, dtype: torch.dtype,
                           device: torch.device) -> torch.Tensor:
    """SmolVLM patch position ids as transformers <= 4.57 computes them (LeRobot 0.4.4's pin).

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


def _qkv(layer: nn.Module, hidden: torch.Tensor, head_dim: int
         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    attn = layer.self_attn
    x = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
    shape = (*x.shape[:-1], -1, head_dim)
    return attn.q_proj(x).view(shape), attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)


def _finish_layer(layer: nn.Module, hidden: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """Output projection + residual, then the MLP + residual."""
    out = layer.self_attn.o_proj(att.to(layer.self_attn.o_proj.weight.dtype)) + hidden
    return layer.mlp(layer.post_attention_layernorm(out)) + out


class SmolVLMWithExpert(nn.Module):
    """The SmolVLM (``vlm``) and the action expert (``lm_expert``), as LeRobot names them.

    ``vlm`` is transformers' ``SmolVLMForConditionalGeneration`` with only the kept text layers;
    ``lm_expert`` a transformers ``LlamaModel`` without token embedding whose cross-attention
    layers take ``kv_heads * head_dim`` wide inputs in ``k_proj`` / ``v_proj``.
    """

    def __init__(self, spec: SmolVLASpec, dtype: torch.dtype):
        super().__init__()
        from transformers import LlamaModel
        from transformers import SmolVLMForConditionalGeneration

        self.spec = spec
        self.vlm = SmolVLMForConditionalGeneration._from_config(spec.vlm_config, dtype=dtype)
        expert = LlamaModel._from_config(spec.expert_config, dtype=dtype)
        text = spec.vlm_config.text_config
        exp = spec.expert_config
        kv_in = int(text.num_key_value_heads) * int(exp.head_dim)
        kv_out = int(exp.num_key_value_heads) * int(exp.head_dim)
        for i in spec.cross_attn_layers:
            attn = expert.layers[i].self_attn
            attn.k_proj = nn.Linear(kv_in, kv_out, bias=bool(exp.attention_bias), dtype=dtype)
            attn.v_proj = nn.Linear(kv_in, kv_out, bias=bool(exp.attention_bias), dtype=dtype)
        expert.embed_tokens = None
        self.lm_expert = expert
        self.head_dim = int(getattr(text, 'head_dim', None)
                            or text.hidden_size // text.num_attention_heads)
        if int(exp.head_dim) != self.head_dim:
            raise ValueError(f'SmolVLA expert head_dim {exp.head_dim} != VLM head_dim '
                             f'{self.head_dim}')
        if spec.num_expert_layers != spec.num_vlm_layers:
            raise ValueError(
                f'SmolVLA with {spec.num_vlm_layers} VLM layers and {spec.num_expert_layers} '
                'expert layers: only an expert layer per VLM layer is supported (LeRobot 0.4.4 '
                'cannot sample with fewer expert layers either)')
        self.cross = frozenset(spec.cross_attn_layers)

    @property
    def text_model(self) -> nn.Module:
        return self.vlm.model.text_model

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, tokens, text_hidden)`` (vision tower + connector).

        The tower's own modules (patch / position embedding, encoder, post-layernorm) with the
        patch position ids of :func:`legacy_patch_positions` (see there).
        """
        vision = self.vlm.model.vision_model
        emb = vision.embeddings
        pixels = image.to(emb.patch_embedding.weight.dtype)
        patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
        positions = legacy_patch_positions(pixels.shape[2] // emb.patch_size,
                                           pixels.shape[3] // emb.patch_size,
                                           emb.num_patches_per_side, pixels.dtype, pixels.device)
        hidden = patches + emb.position_embedding(positions)[None]
        hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
        return self.vlm.model.connector(vision.post_layernorm(hidden))

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_model.get_input_embeddings()(tokens)

    def prefix_cache(self, embeds: torch.Tensor, att_2d: torch.Tensor,
                     positions: torch.Tensor) -> PrefixCache:
        """Run the prefix through the VLM text layers; return every layer's ``(K, V)``."""
        layers = self.text_model.layers
        cache: PrefixCache = []
        hidden = embeds
        for i, layer in enumerate(layers):
            q, k, v = _qkv(layer, hidden, self.head_dim)
            q = apply_rope(q, positions)
            k = apply_rope(k, positions)
            cache.append((k, v))
            if i + 1 < len(layers):  # the last layer's output is never read
                hidden = _finish_layer(layer, hidden, attention(q, k, v, att_2d, self.head_dim))
        return cache

    def expert_forward(self, suffix: torch.Tensor, cache: PrefixCache,
                       prefix_pad: torch.Tensor) -> torch.Tensor:
        """The expert over the action tokens ``(B, S, d_expert)`` against the cached prefix."""
        batch, length = suffix.shape[:2]
        prefix_len = prefix_pad.shape[1]
        device = suffix.device
        steps = torch.arange(length, device=device)
        self_pos = prefix_pad.sum(dim=-1, keepdim=True) + steps[None, :]
        cross_pos = steps[None, :].expand(batch, length)
        to_prefix = prefix_pad[:, None, :].expand(batch, length, prefix_len)
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        self_mask = torch.cat([to_prefix, causal[None].expand(batch, -1, -1)], dim=2)
        hidden = suffix
        for i, layer in enumerate(self.lm_expert.layers):
            keys, values = cache[i]
            attn = layer.self_attn
            if i in self.cross:
                x = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
                q = attn.q_proj(x).view(batch, length, -1, self.head_dim)
                q = apply_rope(q, cross_pos)
                flat_k = keys.reshape(batch, prefix_len, -1).to(attn.k_proj.weight.dtype)
                flat_v = values.reshape(batch, prefix_len, -1).to(attn.v_proj.weight.dtype)
                k = attn.k_proj(flat_k).view(batch, prefix_len, -1, self.head_dim)
                v = attn.v_proj(flat_v).view(batch, prefix_len, -1, self.head_dim)
                att = attention(q, k, v, to_prefix, self.head_dim)
            else:
                q, k, v = _qkv(layer, hidden, self.head_dim)
                q = apply_rope(q, self_pos)
                k = torch.cat([keys, apply_rope(k, self_pos).to(keys.dtype)], dim=1)
                v = torch.cat([values, v.to(values.dtype)], dim=1)
                att = attention(q, k, v, self_mask, self.head_dim)
            hidden = _finish_layer(layer, hidden, att)
        return self.lm_expert.norm(hidden)


class SmolVLAFlowModel(nn.Module):
    """LeRobot's ``VLAFlowMatching``: the VLM with expert plus the state / action projections."""

    def __init__(self, spec: SmolVLASpec, dtype: torch.dtype):
        super().__init__()
        self.spec = spec
        self.vlm_with_expert = SmolVLMWithExpert(spec, dtype)
        text_width = int(spec.vlm_config.text_config.hidden_size)
        width = int(spec.expert_config.hidden_size)
        self.state_proj = nn.Linear(spec.max_state_dim, text_width, dtype=dtype)
        self.action_in_proj = nn.Linear(spec.max_action_dim, width, dtype=dtype)
        self.action_out_proj = nn.Linear(width, spec.max_action_dim, dtype=dtype)
        self.action_time_mlp_in = nn.Linear(2 * width, width, dtype=dtype)
        self.action_time_mlp_out = nn.Linear(width, width, dtype=dtype)

    def embed_prefix(self, images: Sequence[torch.Tensor], img_masks: Sequence[torch.Tensor],
                     lang_tokens: torch.Tensor, lang_masks: torch.Tensor,
                     state: torch.Tensor, special_ids: Optional[Tuple[int, int]] = None,
                     slot_masks: Optional[Sequence[torch.Tensor]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(embeddings, pad_masks, att_masks)`` of images, language and the state token.

        :param special_ids: ``(fake_image_token_id, global_image_token_id)`` to wrap each image
            (``add_image_special_tokens``), or ``None``.
        :param slot_masks: per slot ``(B,)`` bool, False for a slot LeRobot's sequence does not
            have in that row (its special tokens are hidden too); default all True.
        """
        vwe = self.vlm_with_expert
        batch = state.shape[0]
        device = state.device
        embs, pads, att = [], [], []

        def add(emb: torch.Tensor, pad: torch.Tensor, block: int) -> None:
            embs.append(emb)
            pads.append(pad)
            att.extend([block] * emb.shape[1])

        def special(ids: Sequence[int]) -> torch.Tensor:
            tokens = torch.as_tensor(list(ids), dtype=torch.long, device=device)
            return vwe.embed_tokens(tokens)[None].expand(batch, -1, -1)

        for index, (img, mask) in enumerate(zip(images, img_masks)):
            slot = (torch.ones(batch, dtype=torch.bool, device=device) if slot_masks is None
                    else slot_masks[index].to(device))
            if special_ids is not None:
                start = special(special_ids)
                add(start, slot[:, None].expand(batch, start.shape[1]), 0)
            img_emb = vwe.embed_image(img)
            img_emb = img_emb * torch.tensor(img_emb.shape[-1] ** 0.5, dtype=img_emb.dtype,
                                             device=device)
            add(img_emb, mask[:, None].expand(batch, img_emb.shape[1]), 0)
            if special_ids is not None:
                end = special(special_ids[:1])
                add(end, slot[:, None].expand(batch, end.shape[1]), 0)
        lang = vwe.embed_tokens(lang_tokens)
        add(lang * math.sqrt(lang.shape[-1]), lang_masks, 0)
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]
        add(state_emb, torch.ones(batch, 1, dtype=torch.bool, device=device), 1)
        emb = torch.cat([e.to(state_emb.dtype) for e in embs], dim=1)
        pad = torch.cat(pads, dim=1)
        att_masks = torch.tensor(att, dtype=torch.bool, device=device)[None].expand(batch, -1)
        prefix_length = self.spec.prefix_length
        if emb.shape[1] < prefix_length:
            extra = prefix_length - emb.shape[1]
            emb = F.pad(emb, (0, 0, 0, extra))
            pad = F.pad(pad, (0, extra), value=False)
            att_masks = F.pad(att_masks, (0, extra), value=False)
        return emb, pad, att_masks

    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Action tokens ``(B, H, d_expert)`` of the noisy actions at flow times ``t (B,)``."""
        action = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        temb = sinusoidal_time_embedding(t, action.shape[-1], self.spec.min_period,
                                         self.spec.max_period).to(action.dtype)
        fused = torch.cat([action, temb[:, None, :].expand_as(action)], dim=2)
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))

    def prefix(self, inputs: Dict[str, Any], special_ids: Optional[Tuple[int, int]] = None
               ) -> Tuple[PrefixCache, torch.Tensor]:
        """Embed and run the prefix once: ``(cache, prefix_pad_masks)``."""
        emb, pad, att = self.embed_prefix(inputs['images'], inputs['img_masks'],
                                          inputs['lang_tokens'], inputs['lang_masks'],
                                          inputs['state'], special_ids,
                                          inputs.get('slot_masks'))
        positions = torch.cumsum(pad.to(torch.long), dim=1) - 1
        cache = self.vlm_with_expert.prefix_cache(emb, make_att_2d_masks(pad, att), positions)
        return cache, pad

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: PrefixCache,
                 prefix_pad: torch.Tensor) -> torch.Tensor:
        """Flow velocity ``(B, H, max_action_dim)`` (float32) at ``x_t`` and times ``t (B,)``."""
        suffix = self.embed_suffix(x_t, t)
        out = self.vlm_with_expert.expert_forward(suffix, cache, prefix_pad)
        out = out[:, -self.spec.chunk_size:]
        return self.action_out_proj(out.to(self.action_out_proj.weight.dtype)).to(torch.float32)


class SmolVLAModule(nn.Module):
    """Root module: ``model`` is the flow model, so names match LeRobot's ``model.*`` keys."""

    def __init__(self, spec: SmolVLASpec, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = SmolVLAFlowModel(spec, dtype)


def build_smolvla_module(spec: SmolVLASpec, device: torch.device, dtype: torch.dtype,
                         init_weights: bool = False, seed: Optional[int] = None) -> SmolVLAModule:
    """Create the module on ``device`` in ``dtype`` (weights uninitialized unless asked).

    :param init_weights: random-initialize (torch / transformers defaults) instead of leaving
        memory for the merger or :meth:`SmolVLAPolicy.load_weights`.
    :param seed: seed of the initialization.
    """
    from transformers.initialization import no_init_weights

    with torch.device(device):
        if init_weights:
            if seed is not None:
                torch.manual_seed(seed)
            module = SmolVLAModule(spec, dtype)
        else:
            with no_init_weights():
                module = SmolVLAModule(spec, dtype)
    return module.eval()


def read_smolvla_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a SmolVLA checkpoint (dir, ``model.safetensors`` or sharded index)."""
    from retain_ros.merging.checkpoint import open_checkpoint

    src = open_checkpoint(path, family='smolvla')
    try:  # copies: the source's tensors are views of a file mapping that close() unmaps
        return {k: src.get(k).clone() for k in src.keys()}
    finally:
        src.close()


def _resolve(device: str, dtype: str) -> Tuple[torch.device, torch.dtype]:
    from retain_ros.policies.pi0.modeling_pi0 import resolve_device
    from retain_ros.policies.pi0.modeling_pi0 import resolve_dtype

    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


class SmolVLAPolicy(SpecPolicy):
    """SmolVLA VLA policy (LeRobot layout checkpoints).

    :param spec: model spec.
    :param module: the :class:`SmolVLAModule`.
    :param processor: the pre/post-processor (tokenizer + normalization statistics).
    :param noise_seed: seed of the flow-matching start noise (same noise on every call).
    """

    name = 'smolvla'

    def __init__(self, spec: SmolVLASpec, module: SmolVLAModule, processor: SmolVLAProcessor,
                 noise_seed: int = 0):
        self.spec = spec
        self._module = module
        self.processor = processor
        self.noise_seed = int(noise_seed)
        param = next(module.parameters())
        self.device = param.device
        self.dtype = param.dtype
        self._special_ids = None
        if spec.add_image_special_tokens:
            self._special_ids = (
                processor.special_token_id('fake_image_token', '<fake_token_around_image>'),
                processor.special_token_id('global_image_token', '<global-img>'))

    @classmethod
    def build(cls, checkpoint_dir: str, device: str = 'cpu', dtype: str = 'auto',
              tokenizer_path: str = '', noise_seed: int = 0, stats: Any = None,
              init_weights: bool = False, init_seed: Optional[int] = None) -> 'SmolVLAPolicy':
        """Build from a checkpoint directory WITHOUT loading its weights.

        :param checkpoint_dir: LeRobot SmolVLA checkpoint (``config.json``, processor files).
        :param device: auto | cpu | cuda | cuda:N.
        :param dtype: auto | float32 | bfloat16 | float16.
        :param tokenizer_path: local tokenizer folder; empty = the VLM folder,
            ``<ckpt>/tokenizer`` or ``<ckpt>`` (the log says which).
        :param noise_seed: seed of the sampler's start noise.
        :param stats: statistics to use instead of the checkpoint's (anything
            :func:`~retain_ros.policies.normalize.as_norm_stats` takes).
        :param init_weights: random-initialize the weights.
        :param init_seed: seed of the random initialization.
        """
        directory = os.path.abspath(checkpoint_dir)
        if os.path.isfile(directory):
            directory = os.path.dirname(directory)
        spec = load_smolvla_config(directory)
        tok_path, why = resolve_tokenizer_path(directory, spec, tokenizer_path)
        LOG.info('SmolVLA tokenizer from %s (%s)', tok_path, why)
        tokenizer = load_tokenizer(tok_path)
        if stats is None:
            stats = load_norm_stats(directory, spec.state_dim, spec.action_dim)
        stats = as_norm_stats(stats, spec.state_dim, spec.action_dim)
        processor = SmolVLAProcessor(spec, tokenizer, stats, tokenizer_options(directory, spec))
        dev, tdt = _resolve(device, dtype)
        module = build_smolvla_module(spec, dev, tdt, init_weights=init_weights, seed=init_seed)
        LOG.info('SmolVLA built on %s (%s): %.1fM parameters, %d VLM layers, expert %d wide, '
                 'cross-attention layers %s', dev, tdt,
                 sum(p.numel() for p in module.parameters()) / 1e6, spec.num_vlm_layers,
                 spec.expert_config.hidden_size, list(spec.cross_attn_layers))
        return cls(spec, module, processor, noise_seed=noise_seed)

    # -- Policy API -------------------------------------------------------------------------------
    @property
    def module(self) -> SmolVLAModule:
        return self._module

    @property
    def stats(self) -> NormStats:
        """Normalization statistics in use (``stats.source`` names their file)."""
        return self.processor.stats

    def normalize_actions(self, actions: Any) -> torch.Tensor:
        """Robot-unit actions ``(H, action_dim)`` -> model space ``(H, max_action_dim)``
        (float32, on the policy's device)."""
        return self.processor.normalize_actions(actions).to(self.device)

    def inputs(self, observations: Sequence[Observation]) -> Dict[str, Any]:
        """Model inputs of a batch (on the policy's device)."""
        return self.processor(observations, self.device)

    def _noise(self, batch: int, noise: Any) -> torch.Tensor:
        want = (batch, self.spec.chunk_size, self.spec.max_action_dim)
        if noise is None:
            rows = []
            for i in range(batch):
                gen = torch.Generator(device='cpu').manual_seed(self.noise_seed + i)
                rows.append(torch.randn(want[1:], generator=gen))
            return torch.stack(rows).to(self.device)
        noise = torch.as_tensor(np.asarray(noise) if not torch.is_tensor(noise) else noise,
                                dtype=torch.float32)
        if tuple(noise.shape) != want:
            raise ValueError(f'noise must have shape {want} (batch, chunk_size, max_action_dim), '
                             f'got {tuple(noise.shape)}')
        if not torch.isfinite(noise).all():
            raise ValueError('noise has non-finite values')
        return noise.to(self.device)

    def velocity_fn(self, inputs: Dict[str, Any]) -> VelocityFn:
        """``v(x_t, t)`` against the prefix of ``inputs``, computed once (no grad)."""
        model = self._module.model
        with torch.no_grad():
            cache, prefix_pad = model.prefix(inputs, self._special_ids)

        def velocity(x_t: torch.Tensor, t: float) -> torch.Tensor:
            times = torch.full((x_t.shape[0],), t, dtype=torch.float32, device=x_t.device)
            return model.velocity(x_t, times, cache, prefix_pad)
        return velocity

    def predict_batch(self, observations: Sequence[Observation], noise: Any = None,
                      guidance: Optional[Guidance] = None) -> List[ActionChunk]:
        """Predict one chunk per observation in one batched model call.

        :param noise: initial flow noise ``(B, chunk_size, max_action_dim)``; default: row ``i``
            seeded with ``noise_seed + i``.
        :param guidance: optional velocity guidance (:mod:`retain_ros.policies.flow`).
        """
        t0 = time.perf_counter()
        self._module.eval()
        inputs = self.inputs(observations)
        start = self._noise(len(observations), noise)
        t1 = time.perf_counter()
        velocity = self.velocity_fn(inputs)
        with torch.set_grad_enabled(guidance is not None):
            actions, _ = euler_sample(velocity, start, self.spec.num_steps, guidance=guidance)
        actions = actions.detach()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        chunks = self.processor.unnormalize_actions(actions)
        t3 = time.perf_counter()
        info = {'model_ms': (t2 - t1) * 1e3, 'preprocess_ms': (t1 - t0) * 1e3,
                'postprocess_ms': (t3 - t2) * 1e3, 'total_ms': (t3 - t0) * 1e3}
        return [ActionChunk(actions=c, dt=self.control_period, info=dict(info)) for c in chunks]

    # -- weights ----------------------------------------------------------------------------------
    def load_weights(self, path: str, strict: bool = True) -> None:
        """Copy a SmolVLA checkpoint's weights into :attr:`module` in place.

        :param path: checkpoint directory, its ``model.safetensors`` or a sharded index.
        :param strict: require exactly the module's names.
        :raises ValueError: missing / unexpected names or shape mismatch (names the first ones).
        """
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, WEIGHTS_FILE)) and \
                not any(n.endswith('.safetensors.index.json') for n in os.listdir(path)):
            raise FileNotFoundError(f'no SmolVLA weights ({WEIGHTS_FILE}) in {path}')
        copy_state_into(self._module.state_dict(), read_smolvla_state_dict(path), path, 'SmolVLA',
                        strict)


def build_policy(checkpoint_dir: str, device: str = 'cpu', dtype: str = 'auto',
                 tokenizer_path: str = '', noise_seed: int = 0) -> SmolVLAPolicy:
    """The family entry point (``retain_ros.policies.loader``): a SmolVLA built from
    ``checkpoint_dir`` whose weights are NOT loaded yet (the live merger fills them;
    :meth:`SmolVLAPolicy.load_weights` loads one checkpoint)."""
    return SmolVLAPolicy.build(checkpoint_dir, device=device, dtype=dtype,
                               tokenizer_path=tokenizer_path, noise_seed=noise_seed)
