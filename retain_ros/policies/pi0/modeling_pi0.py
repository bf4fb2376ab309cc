"""π0 policy: transformers ``PI0ForConditionalGeneration`` behind :class:`Policy`.

``Pi0Policy.build`` makes the model from a checkpoint's ``config.json`` WITHOUT loading weights
(the live merger, or :meth:`Pi0Policy.load_weights`, fills them); ``predict`` runs the processor,
the flow-matching sampler and the unnormalization. ``save_pi0_checkpoint`` writes the LeRobot π0
layout, which LeRobot, transformers (through its pi0 key conversion) and this package all read.

Parameter names of :attr:`Pi0Policy.module` are the canonical π0 keys of the merging library
(``model.vlm.*``, ``model.dit.*``, ``embed_action_time.*``, ``action_out_proj.*``);
:func:`canonical_pi0_key` maps LeRobot / openpi / transformers-saved names onto them.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Union

import numpy as np
import torch

from retain_ros.policies.base import ActionChunk
from retain_ros.policies.base import copy_state_into
from retain_ros.policies.base import Observation
from retain_ros.policies.base import SpecPolicy
from retain_ros.policies.flow import euler_sample
from retain_ros.policies.flow import Guidance
from retain_ros.policies.flow import VelocityFn
from retain_ros.policies.pi0.configuration_pi0 import load_pi0_config
from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec
from retain_ros.policies.pi0.processor_pi0 import as_norm_stats
from retain_ros.policies.pi0.processor_pi0 import load_norm_stats
from retain_ros.policies.pi0.processor_pi0 import NormStats
from retain_ros.policies.pi0.processor_pi0 import Pi0Processor
from retain_ros.policies.pi0.processor_pi0 import POSTPROCESSOR_JSON
from retain_ros.policies.pi0.processor_pi0 import PREPROCESSOR_JSON
from retain_ros.policies.pi0.tokenizer_pi0 import build_byte_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import BYTE_VOCAB_SIZE
from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import resolve_tokenizer_path
from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import TextTokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import TOKENIZER_DIR

LOG = logging.getLogger(__name__)

WEIGHTS_FILE = 'model.safetensors'
PRE_STATS_FILE = 'policy_preprocessor_step_5_normalizer_processor.safetensors'
POST_STATS_FILE = 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'

_PWE = 'model.paligemma_with_expert.'
#: LeRobot's tied-weight alias, written as the safetensors ``__metadata__`` on save.
LEROBOT_TIED_ALIAS = {
    _PWE + 'paligemma.model.language_model.embed_tokens.weight': _PWE + 'paligemma.lm_head.weight',
}
_ROOT_PROJ = ('state_proj', 'action_in_proj', 'action_time_mlp_in', 'action_time_mlp_out',
              'time_mlp_in', 'time_mlp_out')

# (pattern on a name without LeRobot's leading ``model.``, canonical replacement), in order.
_TO_CANONICAL = [
    (re.compile(r'^paligemma_with_expert\.paligemma\.lm_head\.weight$'),
     'model.vlm.language_model.embed_tokens.weight'),
    (re.compile(r'^paligemma_with_expert\.gemma_expert\.lm_head\.weight$'),
     'model.dit.embed_tokens.weight'),
    (re.compile(r'^paligemma_with_expert\.paligemma\.model\.vision_tower\.(?:vision_model\.)?'),
     'model.vlm.vision_tower.'),
    (re.compile(r'^paligemma_with_expert\.paligemma\.model\.language_model\.(?:model\.)?'),
     'model.vlm.language_model.'),
    (re.compile(r'^paligemma_with_expert\.paligemma\.model\.'), 'model.vlm.'),
    (re.compile(r'^paligemma_with_expert\.gemma_expert\.model\.'), 'model.dit.'),
    (re.compile(r'^(%s)\.' % '|'.join(_ROOT_PROJ)), r'embed_action_time.\1.'),
]


def canonical_pi0_key(key: str) -> str:
    """Map a LeRobot / openpi / transformers-saved π0 tensor name to the canonical runtime name.

    :param key: a name as stored in a checkpoint file.
    :return: the ``PI0ForConditionalGeneration`` state-dict name (unchanged if already canonical).
    """
    name = key
    if name.startswith('model.') and (name.startswith('model.paligemma_with_expert.') or any(
            name.startswith(f'model.{p}.') for p in _ROOT_PROJ + ('action_out_proj',))):
        name = name[len('model.'):]
    for pattern, repl in _TO_CANONICAL:
        new = pattern.sub(repl, name, count=1)
        if new != name:
            return new
    return name


def lerobot_pi0_key(key: str) -> str:
    """Map a canonical π0 name to LeRobot's ``model.safetensors`` name (inverse of above)."""
    if key == 'model.vlm.language_model.embed_tokens.weight':
        return _PWE + 'paligemma.lm_head.weight'
    if key == 'model.dit.embed_tokens.weight':
        return _PWE + 'gemma_expert.lm_head.weight'
    for src, dst in (('model.vlm.vision_tower.', 'paligemma.model.vision_tower.vision_model.'),
                     ('model.vlm.', 'paligemma.model.'),
                     ('model.dit.', 'gemma_expert.model.')):
        if key.startswith(src):
            return _PWE + dst + key[len(src):]
    if key.startswith('embed_action_time.'):
        return 'model.' + key[len('embed_action_time.'):]
    return 'model.' + key


def resolve_device(device: str = 'auto') -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch device (checked to exist)."""
    device = (device or 'auto').strip().lower()
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if not re.fullmatch(r'cpu|cuda(:\d+)?', device):
        raise ValueError(f'device must be auto, cpu, cuda or cuda:N, got {device!r}')
    dev = torch.device(device)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {device!r} requested but CUDA is not available')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {device!r}: only {torch.cuda.device_count()} CUDA device(s)')
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` (bfloat16 on a bf16-capable GPU, else float32) | float32 | bfloat16 | float16."""
    dtype = (dtype or 'auto').strip().lower()
    table = {'float32': torch.float32, 'fp32': torch.float32, 'bfloat16': torch.bfloat16,
             'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16}
    if dtype == 'auto':
        if device.type == 'cuda' and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in table:
        raise ValueError(f'dtype must be auto, float32, bfloat16 or float16, got {dtype!r}')
    return table[dtype]


def sinusoidal_time_embedding(time: torch.Tensor, dim: int, min_period: float,
                              max_period: float) -> torch.Tensor:
    """openpi / LeRobot flow-time embedding ``[sin(2π t / p), cos(2π t / p)]``, float64 math.

    LeRobot and openpi compute it in float64 (float32 on MPS) and cast afterwards;
    transformers' ``PI0TimestepEmbeddings`` does it in float32, which moves the velocities by
    ~6e-5 on the reference checkpoint. Returns float64 (float32 on MPS), ``(B, dim)``.
    """
    if dim % 2:
        raise ValueError(f'time embedding width {dim} must be even')
    wide = torch.float32 if time.device.type == 'mps' else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=wide, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scale = 1.0 / period * 2 * math.pi
    arg = scale[None, :] * time[:, None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


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


class Pi0Policy(SpecPolicy):
    """π0 VLA policy (transformers ``PI0ForConditionalGeneration``).

    :param spec: model spec (config, cameras, sizes).
    :param model: the ``PI0ForConditionalGeneration``.
    :param processor: the pre/post-processor (tokenizer + normalization statistics).
    :param noise_seed: seed of the flow-matching start noise (same noise on every call).
    """

    name = 'pi0'

    def __init__(self, spec: Pi0Spec, model: torch.nn.Module, processor: Pi0Processor,
                 noise_seed: int = 0):
        self.spec = spec
        self.model = model
        self.processor = processor
        self.noise_seed = int(noise_seed)
        param = next(model.parameters())
        self.device = param.device
        self.dtype = param.dtype

    @classmethod
    def build(cls, config_dir: str, tokenizer_path: str = '', device: str = 'cpu',
              dtype: str = 'float32', stats_dir: Optional[str] = None, noise_seed: int = 0,
              init_weights: bool = False, stats: Any = None,
              init_seed: Optional[int] = None) -> 'Pi0Policy':
        """Build a π0 from a checkpoint directory's ``config.json``, without loading weights.

        :param config_dir: checkpoint directory with ``config.json``.
        :param tokenizer_path: local tokenizer directory; empty = ``<config_dir>/tokenizer``.
        :param device: auto | cpu | cuda | cuda:N.
        :param dtype: auto | float32 | bfloat16 | float16.
        :param stats_dir: where the normalization statistics are (default ``config_dir``).
        :param noise_seed: seed of the sampler's start noise.
        :param init_weights: random-initialize the weights (for training from scratch).
        :param stats: statistics to use instead of reading ``stats_dir``.
        :param init_seed: seed of the random initialization.
        :return: the policy (weights uninitialized unless ``init_weights``).
        """
        spec = load_pi0_config(config_dir)
        tokenizer = load_tokenizer(default_tokenizer_path(config_dir, tokenizer_path))
        if stats is None and not spec.dims_from_config:
            # transformers-native directory: the robot widths are those of its statistics
            stats = load_norm_stats(stats_dir or config_dir)
            spec.set_dims(stats.state.dim, stats.action.dim)
            LOG.info('state / action widths %d / %d from %s', spec.state_dim,
                     spec.action_dim, stats.source)
        elif stats is None:
            stats = load_norm_stats(stats_dir or config_dir, spec.state_dim, spec.action_dim)
        stats = as_norm_stats(stats, spec.state_dim, spec.action_dim)
        dev = resolve_device(device)
        tdt = resolve_dtype(dtype, dev)
        model = build_pi0_module(spec, dev, tdt, init_weights=init_weights, seed=init_seed)
        LOG.info('π0 built on %s (%s): %.1fM parameters', dev, tdt,
                 sum(p.numel() for p in model.parameters()) / 1e6)
        return cls(spec, model, Pi0Processor(spec, tokenizer, stats), noise_seed=noise_seed)

    @classmethod
    def from_config(cls, config: Union[Dict[str, Any], Pi0Spec], tokenizer_path: str = '',
                    stats: Any = None, device: str = 'cpu', dtype: str = 'float32',
                    init_weights: bool = True, init_seed: Optional[int] = None,
                    noise_seed: int = 0,
                    tokenizer: Optional[TextTokenizer] = None) -> 'Pi0Policy':
        """Build a π0 from an in-memory config (e.g. :func:`tiny_pi0_config`) or spec.

        :param config: a ``config.json`` dict or a :class:`Pi0Spec`.
        :param tokenizer_path: local tokenizer; empty = the built-in byte tokenizer (tiny π0).
        :param stats: normalization statistics (anything :func:`as_norm_stats` takes);
            default identity.
        :param device: auto | cpu | cuda | cuda:N.
        :param dtype: auto | float32 | bfloat16 | float16.
        :param init_weights: random-initialize the weights (default; for training).
        :param init_seed: seed of the initialization (default: the current torch RNG state).
        :param noise_seed: seed of the sampler's start noise.
        :param tokenizer: a tokenizer object (instead of ``tokenizer_path``).
        :return: the policy.
        """
        spec = config if isinstance(config, Pi0Spec) else pi0_config_from_dict(config)
        if tokenizer is None:
            tokenizer = (load_tokenizer(tokenizer_path) if tokenizer_path
                         else TextTokenizer(build_byte_tokenizer()))
        stats = as_norm_stats(stats, spec.state_dim, spec.action_dim)
        dev = resolve_device(device)
        model = build_pi0_module(spec, dev, resolve_dtype(dtype, dev), init_weights, init_seed)
        return cls(spec, model, Pi0Processor(spec, tokenizer, stats), noise_seed=noise_seed)

    @classmethod
    def from_spec(cls, spec: Pi0Spec, tokenizer: TextTokenizer, stats: Any,
                  device: str = 'cpu', dtype: str = 'float32', init_weights: bool = True,
                  init_seed: Optional[int] = None, noise_seed: int = 0) -> 'Pi0Policy':
        """:meth:`from_config` with a spec and a tokenizer object."""
        return cls.from_config(spec, stats=stats, device=device, dtype=dtype,
                               init_weights=init_weights, init_seed=init_seed,
                               noise_seed=noise_seed, tokenizer=tokenizer)

    # -- Policy API -------------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def normalize_actions(self, actions: Any) -> torch.Tensor:
        """Robot-unit actions ``(H, action_dim)`` -> model space ``(H, max_action_dim)``."""
        act = np.asarray(actions, dtype=np.float64)
        if act.ndim != 2 or act.shape[1] != self.action_dim:
            raise ValueError(f'actions must be (H, {self.action_dim}), got {act.shape}')
        norm = self.processor.stats.normalize_actions(torch.as_tensor(act, dtype=torch.float32))
        norm = torch.nn.functional.pad(norm, (0, self.max_action_dim - self.action_dim))
        return norm.to(self.device, self.dtype)

    @property
    def stats(self) -> NormStats:
        """Normalization statistics in use (``stats.source`` names their file)."""
        return self.processor.stats

    def _noise(self, batch: int) -> torch.Tensor:
        rows = []
        for i in range(batch):
            gen = torch.Generator(device='cpu').manual_seed(self.noise_seed + i)
            rows.append(torch.randn(self.spec.chunk_size, self.spec.max_action_dim, generator=gen))
        return torch.stack(rows).to(self.device, self.dtype)

    def _inputs(self, observations: Sequence[Observation]) -> Dict[str, torch.Tensor]:
        inputs = self.processor(observations)
        out = {}
        for key, value in inputs.items():
            if value.is_floating_point():
                value = value.to(self.dtype)
            out[key] = value.to(self.device, non_blocking=True)
        return out

    def _noise_tensor(self, batch: int, noise: Any = None) -> torch.Tensor:
        if noise is None:
            return self._noise(batch)
        noise = torch.as_tensor(noise)
        want = (batch, self.spec.chunk_size, self.spec.max_action_dim)
        if tuple(noise.shape) != want:
            raise ValueError(f'noise must have shape {want} (batch, chunk_size, max_action_dim), '
                             f'got {tuple(noise.shape)}')
        return noise.to(self.device, self.dtype)

    def _velocity_fn(self, inputs: Dict[str, torch.Tensor]) -> VelocityFn:
        """The expert's velocity ``v(x_t, t)`` against the prefix computed once (KV cache)."""
        model = self.model
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

    def predict_batch(self, observations: Sequence[Observation], noise: Any = None,
                      guidance: Optional[Guidance] = None) -> List[ActionChunk]:
        """Predict one chunk per observation in one batched model call.

        :param noise: initial flow noise ``(B, chunk_size, max_action_dim)`` (array or tensor);
            default: row ``i`` seeded with ``noise_seed + i`` (row 0 equals :meth:`predict`).
        :param guidance: optional velocity guidance (:mod:`retain_ros.policies.flow`), e.g. RTC.
        """
        t0 = time.perf_counter()
        inputs = self._inputs(observations)
        self.model.eval()
        start = self._noise_tensor(len(observations), noise)
        t1 = time.perf_counter()
        with torch.no_grad():
            velocity = self._velocity_fn(inputs)
        steps = int(self.model.config.num_inference_steps)
        # guidance (RTC) differentiates through the velocity; plain sampling needs no graph
        with torch.set_grad_enabled(guidance is not None):
            actions, _ = euler_sample(velocity, start, steps, guidance=guidance)
        actions = actions.detach()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        chunks = self.processor.unnormalize_actions(actions)
        t3 = time.perf_counter()
        info = {'model_ms': (t2 - t1) * 1e3, 'preprocess_ms': (t1 - t0) * 1e3,
                'postprocess_ms': (t3 - t2) * 1e3, 'total_ms': (t3 - t0) * 1e3}
        return [ActionChunk(actions=c, dt=self.control_period, info=dict(info)) for c in chunks]

    def training_loss(self, observations: Sequence[Observation], action_chunks: np.ndarray,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Flow-matching loss of a batch (same processor path as :meth:`predict`).

        Actions are normalized with the policy's statistics; noise ``~ N(0, 1)`` and time
        ``~ Beta(1.5, 1) * 0.999 + 0.001`` (π0's schedule) are drawn from ``generator`` (CPU) or
        the global torch RNG; the MSE between predicted and target velocity is averaged over
        the real action dimensions only (padding excluded), as LeRobot does. Does not change
        train/eval mode (the caller sets ``module.train()``; predict sets ``eval()``).

        :param observations: ``B`` observations.
        :param action_chunks: ``(B, chunk_size, action_dim)`` absolute actions.
        :param generator: optional CPU generator for reproducible noise / time.
        :return: scalar loss tensor (with grad).
        """
        if len(observations) != len(action_chunks):
            raise ValueError(f'{len(observations)} observations but {len(action_chunks)} '
                             'action chunks')
        inputs = self._inputs(observations)
        actions = self.processor.normalize_actions(action_chunks).to(self.device, self.dtype)
        batch = actions.shape[0]
        noise = torch.randn(actions.shape, generator=generator).to(self.device, self.dtype)
        cfg = self.spec.hf_config
        beta = torch.distributions.Beta(torch.tensor(cfg.time_sampling_beta_alpha),
                                        torch.tensor(cfg.time_sampling_beta_beta))
        if generator is not None:
            u = torch.rand(batch, generator=generator).clamp(1e-6, 1 - 1e-6)
            time_beta = _beta_icdf(u, beta)
        else:
            time_beta = beta.sample((batch,))
        timestep = (time_beta * cfg.time_sampling_scale + cfg.time_sampling_offset)
        timestep = timestep.to(self.device, torch.float32)
        out = self.model(state=inputs['state'], input_ids=inputs['input_ids'],
                         pixel_values=inputs['pixel_values'],
                         attention_mask=inputs['attention_mask'],
                         pixel_attention_mask=inputs['pixel_attention_mask'],
                         noise=noise, timestep=timestep, actions=actions)
        target = (noise - actions)[..., :self.action_dim].float()
        pred = out.logits[..., :self.action_dim].float()
        return torch.nn.functional.mse_loss(pred, target)

    # -- weights ----------------------------------------------------------------------------------
    def load_weights(self, path: str, strict: bool = True) -> None:
        """Copy weights from a π0 safetensors file / checkpoint dir into :attr:`module` in place.

        :param path: ``model.safetensors`` or a directory holding it (LeRobot / openpi /
            transformers-saved / canonical names).
        :param strict: require exactly the module's keys and shapes.
        :raises ValueError: missing / unexpected keys or shape mismatch (names the first ones).
        """
        copy_state_into(self.model.state_dict(), read_pi0_state_dict(path), path, 'π0', strict)


def _beta_icdf(u: torch.Tensor, dist: torch.distributions.Beta) -> torch.Tensor:
    """Inverse CDF of a Beta distribution at ``u`` (closed form for Beta(a, 1), else a grid)."""
    a = float(dist.concentration1)
    b = float(dist.concentration0)
    if b == 1.0:
        return u.pow(1.0 / a)
    grid = torch.linspace(1e-4, 1 - 1e-4, 2001)
    cdf = torch.cumsum(dist.log_prob(grid).exp(), 0)
    cdf = cdf / cdf[-1]
    return grid[torch.searchsorted(cdf, u).clamp(max=grid.numel() - 1)]


def default_tokenizer_path(checkpoint_dir: str, tokenizer_path: str = '') -> str:
    """See :func:`~retain_ros.policies.pi0.tokenizer_pi0.resolve_tokenizer_path`."""
    return resolve_tokenizer_path(checkpoint_dir, tokenizer_path)


def read_pi0_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a π0 safetensors file (or ``<dir>/model.safetensors``) with canonical key names."""
    from safetensors.torch import load_file

    file = os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f'no π0 weights at {file}')
    out: Dict[str, torch.Tensor] = {}
    for key, tensor in load_file(file).items():
        name = canonical_pi0_key(key)
        if name in out and not torch.equal(out[name], tensor):
            raise ValueError(f'{file}: {key} and another tensor both map to {name} and differ')
        out[name] = tensor
    return out


def _preprocessor_json(spec: Pi0Spec) -> Dict[str, Any]:
    features = dict(spec.policy_config.get('input_features', {}))
    features.update(spec.policy_config.get('output_features', {}))
    return {'name': 'policy_preprocessor', 'steps': [
        {'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
        {'registry_name': 'to_batch_processor', 'config': {}},
        {'registry_name': 'pi0_new_line_processor', 'config': {}},
        {'registry_name': 'tokenizer_processor', 'config': {
            'max_length': spec.tokenizer_max_length, 'task_key': 'task',
            'padding_side': 'right', 'padding': 'max_length', 'truncation': True,
            'tokenizer_name': TOKENIZER_DIR}},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}},
        {'registry_name': 'normalizer_processor', 'config': {
            'eps': 1e-08, 'features': features,
            'norm_map': spec.policy_config.get('normalization_mapping', {})},
         'state_file': PRE_STATS_FILE},
    ]}


def _postprocessor_json(spec: Pi0Spec) -> Dict[str, Any]:
    return {'name': 'policy_postprocessor', 'steps': [
        {'registry_name': 'unnormalizer_processor', 'config': {
            'eps': 1e-08, 'features': dict(spec.policy_config.get('output_features', {})),
            'norm_map': spec.policy_config.get('normalization_mapping', {})},
         'state_file': POST_STATS_FILE},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu', 'float_dtype': None}},
    ]}


def save_pi0_checkpoint(policy: Any, out_dir: str, stats: Any = None,
                        state_dict: Optional[Dict[str, torch.Tensor]] = None,
                        tokenizer_dir: Optional[str] = None,
                        extra_config: Optional[Dict[str, Any]] = None,
                        spec: Optional[Pi0Spec] = None) -> str:
    """Write a checkpoint in LeRobot π0 layout.

    Files: ``config.json`` (LeRobot policy config + ``control_period``), ``model.safetensors``
    (LeRobot names; the tied text embedding stored once as ``...paligemma.lm_head.weight`` with
    LeRobot's ``__metadata__`` alias; the expert's embedding as ``...gemma_expert.lm_head``),
    ``policy_preprocessor.json`` / ``policy_postprocessor.json`` + normalizer safetensors,
    ``tokenizer/`` (the policy's tokenizer directory; the byte tokenizer when there is none and
    the model's vocabulary is the byte vocabulary).

    :param policy: a :class:`Pi0Policy`, a ``PI0ForConditionalGeneration`` module or a
        canonical-key state dict (the last two need ``spec``).
    :param out_dir: target directory (created; existing files overwritten).
    :param stats: statistics to write (anything :func:`as_norm_stats` takes; default: the
        policy's).
    :param state_dict: canonical-key weights to write instead of the module's.
    :param tokenizer_dir: tokenizer directory to copy (default: the policy's).
    :param extra_config: keys merged into ``config.json``.
    :param spec: the model spec (default: the policy's).
    :return: ``out_dir``.
    """
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    is_policy = isinstance(policy, Pi0Policy)
    spec = spec or (policy.spec if is_policy else None)
    if spec is None:
        raise ValueError('save_pi0_checkpoint needs spec= when given a module or state dict')
    if stats is None and not is_policy:
        raise ValueError('save_pi0_checkpoint needs stats= when given a module or state dict')
    stats = as_norm_stats(policy.stats if stats is None else stats, spec.state_dim,
                          spec.action_dim)
    config = dict(spec.policy_config)
    config['control_period'] = spec.control_period
    config.update(extra_config or {})
    with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
        json.dump(config, f, indent=4)

    if state_dict is not None:
        state = state_dict
    elif is_policy:
        state = policy.module.state_dict()
    elif isinstance(policy, torch.nn.Module):
        state = policy.state_dict()
    else:
        state = dict(policy)
    tensors = {}
    for key, tensor in state.items():
        tensors[lerobot_pi0_key(key)] = tensor.detach().to('cpu').contiguous().clone()
    save_file(tensors, os.path.join(out_dir, WEIGHTS_FILE), metadata=dict(LEROBOT_TIED_ALIAS))

    numpy_stats = stats.tensors()
    save_numpy(numpy_stats, os.path.join(out_dir, PRE_STATS_FILE))
    save_numpy(numpy_stats, os.path.join(out_dir, POST_STATS_FILE))
    for name, data in ((PREPROCESSOR_JSON, _preprocessor_json(spec)),
                       (POSTPROCESSOR_JSON, _postprocessor_json(spec))):
        with open(os.path.join(out_dir, name), 'w', encoding='utf-8') as f:
            json.dump(data, f, indent=2)

    src = tokenizer_dir or (policy.processor.tokenizer.path if is_policy else '')
    if src and os.path.isfile(src):
        src = os.path.dirname(src)
    dst = os.path.join(out_dir, TOKENIZER_DIR)
    if not src and spec.hf_config.vlm_config.text_config.vocab_size == BYTE_VOCAB_SIZE:
        save_byte_tokenizer(dst)
    elif not src:
        LOG.warning('no tokenizer to copy into %s; pass tokenizer_dir', dst)
    elif os.path.abspath(src) != os.path.abspath(dst):
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    LOG.info('saved π0 checkpoint (LeRobot layout) to %s', out_dir)
    return out_dir


def build_policy(checkpoint_dir: str, device: str = 'cpu', dtype: str = 'auto',
                 tokenizer_path: str = '', noise_seed: int = 0) -> Pi0Policy:
    """Family builder for :mod:`retain_ros.policies.loader` (weights not loaded)."""
    return Pi0Policy.build(checkpoint_dir, tokenizer_path=tokenizer_path, device=device,
                           dtype=dtype, stats_dir=checkpoint_dir, noise_seed=noise_seed)
