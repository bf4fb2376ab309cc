"""π0 policy: transformers ``PI0ForConditionalGeneration`` behind :class:`Policy`.

``Pi0Policy.build`` makes the model from a checkpoint's ``config.json`` WITHOUT loading weights
(the live merger, or :meth:`Pi0Policy.load_weights`, fills them); ``predict`` runs the processor,
the flow-matching sampler and the unnormalization. The pieces live beside this module:

- :mod:`~retain_ros.policies.pi0.backbone_pi0`: the network (parameter names are the canonical
  π0 keys of :mod:`retain_ros.merging.dialects`);
- :mod:`~retain_ros.policies.pi0.flow_pi0`: the expert's velocity against the cached prefix,
  the training time draws;
- :mod:`~retain_ros.policies.pi0.checkpoint_pi0`: read the weights, write the LeRobot layout.
"""
from __future__ import annotations

import logging
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np
import torch

from retain_ros.merging.devices import resolve_device
from retain_ros.merging.devices import resolve_dtype
from retain_ros.policies.base import ActionChunk
from retain_ros.policies.base import copy_state_into
from retain_ros.policies.base import Observation
from retain_ros.policies.base import SpecPolicy
from retain_ros.policies.flow import Guidance
from retain_ros.policies.flow import sample_chunks
from retain_ros.policies.flow import seeded_noise
from retain_ros.policies.flow import VelocityFn
from retain_ros.policies.norm_stats_files import load_norm_stats
from retain_ros.policies.normalize import as_norm_stats
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.pi0.backbone_pi0 import build_pi0_module
from retain_ros.policies.pi0.checkpoint_config_pi0 import load_pi0_config
from retain_ros.policies.pi0.checkpoint_pi0 import read_pi0_state_dict
from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec
from retain_ros.policies.pi0.flow_pi0 import flow_times
from retain_ros.policies.pi0.flow_pi0 import pi0_prefix
from retain_ros.policies.pi0.flow_pi0 import pi0_velocity
from retain_ros.policies.pi0.flow_pi0 import prefix_velocity_fn
from retain_ros.policies.pi0.processor_pi0 import Pi0Processor
from retain_ros.policies.pi0.tokenizer_pi0 import build_byte_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import resolve_tokenizer_path
from retain_ros.policies.pi0.tokenizer_pi0 import TextTokenizer

LOG = logging.getLogger(__name__)


class Pi0Policy(SpecPolicy):
    """π0 VLA policy (transformers ``PI0ForConditionalGeneration``).

    :param spec: model spec (config, cameras, sizes).
    :param model: the ``PI0ForConditionalGeneration``.
    :param processor: the pre/post-processor (tokenizer + normalization statistics).
    :param noise_seed: seed of the flow-matching start noise (same noise on every call).
    """

    name = 'pi0'
    #: the ``compile`` option in effect (:meth:`set_compile`)
    compile_mode = 'none'
    _steps: Optional[Tuple[Callable, Callable]] = None

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
        tokenizer = load_tokenizer(resolve_tokenizer_path(config_dir, tokenizer_path))
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
        noise = seeded_noise(batch, self.spec.chunk_size, self.spec.max_action_dim,
                             self.noise_seed)
        return noise.to(self.device, self.dtype)

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
        """Return the expert's velocity ``v(x_t, t)`` against the prefix computed once."""
        return prefix_velocity_fn(self.model, inputs)

    # -- compile ----------------------------------------------------------------------------------
    def set_compile(self, mode: str) -> None:
        """Compile the prefix pass and the velocity step (``none`` = back to eager).

        See :mod:`retain_ros.policies.compile`; the compile itself happens on the first
        prediction (the warm-up). Sampling with guidance (RTC) stays eager.

        :raises ValueError: invalid mode, or ``reduce-overhead`` on a CPU device.
        """
        from retain_ros.policies.compile import check_compile_mode

        mode = check_compile_mode(mode, self.device)
        self._steps = None if mode == 'none' else self._compile_steps(mode)
        self.compile_mode = mode

    def _compile_steps(self, mode: str) -> Tuple[Callable, Callable]:
        """Return the compiled ``(prefix, velocity step)`` (:mod:`.flow_pi0`'s functions)."""
        from retain_ros.policies.compile import compile_fn

        model = self.model

        def prefix(input_ids, pixel_values, pixel_attention_mask, attention_mask):
            return pi0_prefix(model, input_ids, pixel_values, pixel_attention_mask,
                              attention_mask)

        def step(state, x_t, timestep, pixel_attention_mask, attention_mask, kv):
            return pi0_velocity(model, state, x_t, timestep, pixel_attention_mask,
                                attention_mask, kv)
        return (compile_fn(prefix, mode, 'π0 prefix pass'),
                compile_fn(step, mode, 'π0 velocity step'))

    def _compiled_velocity_fn(self, inputs: Dict[str, torch.Tensor]) -> VelocityFn:
        """Return ``v(x_t, t)`` of the compiled steps (the prefix computed once, here)."""
        prefix_fn, step_fn = self._steps
        kv = prefix_fn(inputs['input_ids'], inputs['pixel_values'],
                       inputs['pixel_attention_mask'], inputs['attention_mask'])
        batch = inputs['attention_mask'].shape[0]

        def velocity(x_t: torch.Tensor, t: float) -> torch.Tensor:
            timestep = torch.full((batch,), t, dtype=torch.float32, device=x_t.device)
            return step_fn(inputs['state'], x_t, timestep, inputs['pixel_attention_mask'],
                           inputs['attention_mask'], kv)
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
            if self._steps is not None and guidance is None:
                velocity = self._compiled_velocity_fn(inputs)
            else:
                velocity = self._velocity_fn(inputs)
        steps = int(self.model.config.num_inference_steps)
        return sample_chunks(velocity, start, steps, guidance, self.processor, self.control_period,
                             t0, t1)

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
        timestep = flow_times(self.spec.hf_config, batch, generator)
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


def build_policy(checkpoint_dir: str, device: str = 'cpu', dtype: str = 'auto',
                 tokenizer_path: str = '', noise_seed: int = 0) -> Pi0Policy:
    """Family builder for :mod:`retain_ros.policies.loader` (weights not loaded)."""
    return Pi0Policy.build(checkpoint_dir, tokenizer_path=tokenizer_path, device=device,
                           dtype=dtype, stats_dir=checkpoint_dir, noise_seed=noise_seed)
