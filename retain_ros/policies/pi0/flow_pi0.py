"""π0 flow matching: the expert's velocity against a cached prefix, and the training draws.

Sampling (:func:`prefix_velocity_fn`): the prefix (images + text) runs once through the VLM with
a KV cache; each Euler step of :func:`~retain_ros.policies.flow.euler_sample` runs the action
expert against it and crops the cache back to the prefix. The compiled path (``compile``
option, :mod:`retain_ros.policies.compile`) uses the same model calls as two functions of tensors
(:func:`pi0_prefix`, :func:`pi0_velocity`): the prefix as a tuple of per-layer keys / values and
a fresh cache around them in every step, so nothing outside the compiled graph is mutated.

Training (:func:`flow_times`): times ``~ Beta(1.5, 1) * 0.999 + 0.001`` (π0's schedule, from the
config), drawn from a CPU generator by inverse CDF when one is given (reproducible), else from
the global torch RNG.
"""
from __future__ import annotations

from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import torch

from retain_ros.policies.flow import VelocityFn


def prefix_velocity_fn(model: torch.nn.Module, inputs: Dict[str, torch.Tensor]) -> VelocityFn:
    """Return the expert's velocity ``v(x_t, t)`` against the prefix of ``inputs``.

    The prefix is computed here, once (call under ``torch.no_grad()`` for inference).

    :param model: a ``PI0ForConditionalGeneration``.
    :param inputs: the processor's model inputs on the model's device.
    """
    attention_mask = inputs['attention_mask']
    position_ids = attention_mask.cumsum(-1) - 1
    embeds = model.model.embed_prefix(inputs['input_ids'], inputs['pixel_values'],
                                      inputs['pixel_attention_mask'])
    cache = model.model.vlm(inputs_embeds=embeds, attention_mask=attention_mask,
                            position_ids=position_ids,
                            token_type_ids=torch.zeros_like(embeds)[:, :, 0],
                            use_cache=True).cache
    prefix_length = cache.get_seq_length()
    batch = embeds.shape[0]

    def velocity(x_t: torch.Tensor, t: float) -> torch.Tensor:
        time = torch.full((batch,), t, dtype=torch.float32, device=x_t.device)
        out = model(state=inputs['state'], noise=x_t, timestep=time,
                    pixel_attention_mask=inputs['pixel_attention_mask'],
                    attention_mask=attention_mask, cache=cache)
        cache.crop(prefix_length - cache.get_seq_length())
        return out.logits
    return velocity


#: per language-model layer ``(keys, values)`` of the prefix
PrefixKV = Tuple[Tuple[torch.Tensor, torch.Tensor], ...]


def pi0_prefix(model: torch.nn.Module, input_ids: torch.Tensor, pixel_values: torch.Tensor,
               pixel_attention_mask: torch.Tensor, attention_mask: torch.Tensor) -> PrefixKV:
    """Return the prefix keys / values of every VLM layer (as :func:`prefix_velocity_fn` does).

    :param model: a ``PI0ForConditionalGeneration``.
    """
    position_ids = attention_mask.cumsum(-1) - 1
    embeds = model.model.embed_prefix(input_ids, pixel_values, pixel_attention_mask)
    cache = model.model.vlm(inputs_embeds=embeds, attention_mask=attention_mask,
                            position_ids=position_ids,
                            token_type_ids=torch.zeros_like(embeds)[:, :, 0],
                            use_cache=True).cache
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def _cache_of(prefix: PrefixKV) -> Any:
    """Return a transformers ``DynamicCache`` holding ``prefix`` (no copy of the tensors)."""
    from transformers.cache_utils import Cache
    from transformers.cache_utils import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = []
    for keys, values in prefix:
        layer = DynamicLayer()
        layer.device = keys.device
        layer.keys, layer.values = keys, values
        layer.is_initialized = True
        layers.append(layer)
    cache = DynamicCache.__new__(DynamicCache)
    Cache.__init__(cache, layers=layers)
    return cache


def pi0_velocity(model: torch.nn.Module, state: torch.Tensor, x_t: torch.Tensor,
                 time: torch.Tensor, pixel_attention_mask: torch.Tensor,
                 attention_mask: torch.Tensor, prefix: PrefixKV) -> torch.Tensor:
    """Return the expert's velocity at ``x_t`` and times ``time (B,)`` against ``prefix``.

    The model call of :func:`prefix_velocity_fn`'s step on a cache made from ``prefix`` for this
    step only (the step's keys / values are appended to that cache, not to ``prefix``).
    """
    out = model(state=state, noise=x_t, timestep=time, pixel_attention_mask=pixel_attention_mask,
                attention_mask=attention_mask, cache=_cache_of(prefix))
    return out.logits


def beta_icdf(u: torch.Tensor, dist: torch.distributions.Beta) -> torch.Tensor:
    """Return the inverse CDF of a Beta distribution at ``u``.

    Closed form for ``Beta(a, 1)``, else a lookup on a 2001-point grid.
    """
    a = float(dist.concentration1)
    b = float(dist.concentration0)
    if b == 1.0:
        return u.pow(1.0 / a)
    grid = torch.linspace(1e-4, 1 - 1e-4, 2001)
    cdf = torch.cumsum(dist.log_prob(grid).exp(), 0)
    cdf = cdf / cdf[-1]
    return grid[torch.searchsorted(cdf, u).clamp(max=grid.numel() - 1)]


def flow_times(config: Any, batch: int,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw ``batch`` training flow times with the config's Beta schedule (CPU, float32).

    :param config: a ``PI0Config`` (``time_sampling_beta_alpha`` / ``_beta``, ``_scale``,
        ``_offset``).
    :param generator: CPU generator for reproducible draws; ``None`` = the global torch RNG.
    """
    beta = torch.distributions.Beta(torch.tensor(config.time_sampling_beta_alpha),
                                    torch.tensor(config.time_sampling_beta_beta))
    if generator is not None:
        u = torch.rand(batch, generator=generator).clamp(1e-6, 1 - 1e-6)
        time_beta = beta_icdf(u, beta)
    else:
        time_beta = beta.sample((batch,))
    return time_beta * config.time_sampling_scale + config.time_sampling_offset
