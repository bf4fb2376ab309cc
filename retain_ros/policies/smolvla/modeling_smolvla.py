"""SmolVLA policy: the SmolVLA network behind :class:`Policy` (LeRobot layout checkpoints).

``SmolVLAPolicy.build`` makes the network (:mod:`~retain_ros.policies.smolvla.backbone_smolvla`)
from a checkpoint's ``config.json`` WITHOUT loading weights (the live merger, or
:meth:`SmolVLAPolicy.load_weights`, fills them); ``predict`` runs the processor, the
flow-matching sampler (Euler from ``t = 1``) and the unnormalization.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

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
from retain_ros.policies.smolvla.backbone_smolvla import build_smolvla_module
from retain_ros.policies.smolvla.backbone_smolvla import SmolVLAModule
from retain_ros.policies.smolvla.configuration_smolvla import load_smolvla_config
from retain_ros.policies.smolvla.configuration_smolvla import SmolVLASpec
from retain_ros.policies.smolvla.configuration_smolvla import WEIGHTS_FILE
from retain_ros.policies.smolvla.processor_smolvla import load_tokenizer
from retain_ros.policies.smolvla.processor_smolvla import resolve_tokenizer_path
from retain_ros.policies.smolvla.processor_smolvla import SmolVLAProcessor
from retain_ros.policies.smolvla.processor_smolvla import tokenizer_options

LOG = logging.getLogger(__name__)


def read_smolvla_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a SmolVLA checkpoint (dir, ``model.safetensors`` or sharded index)."""
    from retain_ros.merging.checkpoint import open_checkpoint

    src = open_checkpoint(path, family='smolvla')
    try:  # copies: the source's tensors are views of a file mapping that close() unmaps
        return {k: src.get(k).clone() for k in src.keys()}
    finally:
        src.close()


class SmolVLAPolicy(SpecPolicy):
    """SmolVLA VLA policy (LeRobot layout checkpoints).

    :param spec: model spec.
    :param module: the :class:`SmolVLAModule`.
    :param processor: the pre/post-processor (tokenizer + normalization statistics).
    :param noise_seed: seed of the flow-matching start noise (same noise on every call).
    """

    name = 'smolvla'
    #: the ``compile`` option in effect (:meth:`set_compile`)
    compile_mode = 'none'

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
        self._steps: Optional[Tuple[Callable, Callable]] = None
        self._eager_padding = processor.options.get('padding')
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
        dev = resolve_device(device)
        tdt = resolve_dtype(dtype, dev)
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
        """Map robot-unit actions ``(H, action_dim)`` to model space ``(H, max_action_dim)``.

        The result is float32, on the policy's device.
        """
        return self.processor.normalize_actions(actions).to(self.device)

    def inputs(self, observations: Sequence[Observation]) -> Dict[str, Any]:
        """Model inputs of a batch (on the policy's device)."""
        return self.processor(observations, self.device)

    def _noise(self, batch: int, noise: Any) -> torch.Tensor:
        want = (batch, self.spec.chunk_size, self.spec.max_action_dim)
        if noise is None:
            return seeded_noise(batch, want[1], want[2], self.noise_seed).to(self.device)
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

    # -- compile ----------------------------------------------------------------------------------
    def set_compile(self, mode: str) -> None:
        """Compile the prefix pass and the velocity step (``none`` = back to eager).

        See :mod:`retain_ros.policies.compile`. Compiled, the instruction is padded to
        ``tokenizer_max_length`` instead of the pipeline's ``longest`` (padding is masked out:
        same actions, within float rounding), so a new instruction length does not recompile.
        Sampling with guidance (RTC) stays eager.

        :raises ValueError: invalid mode, or ``reduce-overhead`` on a CPU device.
        """
        from retain_ros.policies.compile import check_compile_mode
        from retain_ros.policies.compile import compile_fn

        mode = check_compile_mode(mode, self.device)
        self._steps = None
        self.processor.options['padding'] = self._eager_padding
        if mode != 'none':
            model = self._module.model
            special = self._special_ids

            def prefix(inputs):
                return model.prefix(inputs, special)

            self._steps = (compile_fn(prefix, mode, 'SmolVLA prefix pass'),
                           compile_fn(model.velocity, mode, 'SmolVLA velocity step'))
            if self._eager_padding:
                self.processor.options['padding'] = 'max_length'
        self.compile_mode = mode

    def _compiled_velocity_fn(self, inputs: Dict[str, Any]) -> VelocityFn:
        prefix_fn, step_fn = self._steps
        with torch.no_grad():
            cache, prefix_pad = prefix_fn(inputs)

        def velocity(x_t: torch.Tensor, t: float) -> torch.Tensor:
            times = torch.full((x_t.shape[0],), t, dtype=torch.float32, device=x_t.device)
            return step_fn(x_t, times, cache, prefix_pad)
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
        if self._steps is not None and guidance is None:
            velocity = self._compiled_velocity_fn(inputs)
        else:
            velocity = self.velocity_fn(inputs)
        return sample_chunks(velocity, start, self.spec.num_steps, guidance, self.processor,
                             self.control_period, t0, t1)

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
    """Build a SmolVLA from ``checkpoint_dir`` without loading its weights.

    The family entry point of :mod:`retain_ros.policies.loader`: the live merger fills the
    weights; :meth:`SmolVLAPolicy.load_weights` loads one checkpoint.
    """
    return SmolVLAPolicy.build(checkpoint_dir, device=device, dtype=dtype,
                               tokenizer_path=tokenizer_path, noise_seed=noise_seed)
