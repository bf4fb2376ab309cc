"""SmolVLA network: the SmolVLM and the interleaved self/cross-attention action expert.

The VLM is transformers' SmolVLM (vision tower, connector, Llama text model); the attention pieces
are in :mod:`~retain_ros.policies.smolvla.layers_smolvla`. The maths follows LeRobot 0.4.4's
``VLAFlowMatching`` / ``SmolVLMWithExpertModel``:

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

Parameter names of :class:`SmolVLAModule` are LeRobot's ``SmolVLAPolicy`` state-dict names,
i.e. exactly the names in its ``model.safetensors`` (``model.vlm_with_expert.vlm.*``,
``model.vlm_with_expert.lm_expert.*``, ``model.state_proj.*`` ...): the merging library reads
those as canonical SmolVLA names, so :class:`~retain_ros.merging.live.LiveMerger` maps a
checkpoint onto the module without renaming.
"""
from __future__ import annotations

import math
from typing import Any
from typing import Dict
from typing import Optional
from typing import Sequence
from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from retain_ros.policies.flow import sinusoidal_time_embedding
from retain_ros.policies.smolvla.configuration_smolvla import SmolVLASpec
from retain_ros.policies.smolvla.layers_smolvla import apply_rope
from retain_ros.policies.smolvla.layers_smolvla import attention
from retain_ros.policies.smolvla.layers_smolvla import finish_layer
from retain_ros.policies.smolvla.layers_smolvla import legacy_patch_positions
from retain_ros.policies.smolvla.layers_smolvla import make_att_2d_masks
from retain_ros.policies.smolvla.layers_smolvla import PrefixCache
from retain_ros.policies.smolvla.layers_smolvla import qkv


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
            q, k, v = qkv(layer, hidden, self.head_dim)
            q = apply_rope(q, positions)
            k = apply_rope(k, positions)
            cache.append((k, v))
            if i + 1 < len(layers):  # the last layer's output is never read
                hidden = finish_layer(layer, hidden, attention(q, k, v, att_2d, self.head_dim))
        return cache

    def expert_forward(self, suffix: torch.Tensor, cache: PrefixCache,
                       prefix_pad: torch.Tensor) -> torch.Tensor:
        """Run the expert over the action tokens ``(B, S, d_expert)`` against the cached prefix."""
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
                q, k, v = qkv(layer, hidden, self.head_dim)
                q = apply_rope(q, self_pos)
                k = torch.cat([keys, apply_rope(k, self_pos).to(keys.dtype)], dim=1)
                v = torch.cat([values, v.to(values.dtype)], dim=1)
                att = attention(q, k, v, self_mask, self.head_dim)
            hidden = finish_layer(layer, hidden, att)
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
        """Embed noisy actions at flow times ``t (B,)`` as action tokens ``(B, H, d_expert)``."""
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
