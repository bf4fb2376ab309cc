"""Load a (merged) policy from checkpoint paths: the entry point of the node and the CLI.

``load_merged_policy`` builds the policy from the FINETUNED checkpoint's config and
normalization statistics (RETAIN: stats come from the finetuned model), hands its module to the
merging library's :class:`~retain_ros.merging.live.LiveMerger` (which fills every parameter in
place on the target device), then runs one warm-up prediction.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any
from typing import List
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np

from retain_ros.policies.base import Observation
from retain_ros.policies.base import Policy

LOG = logging.getLogger(__name__)

#: Families this loader can build a policy for.
SUPPORTED_FAMILIES = ('pi0',)


def checkpoint_dir(path: str) -> str:
    """The directory holding a checkpoint's ``config.json`` (``path`` or its parent)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f'{path}: no such checkpoint')
    return path


def detect_family(path: str, family: str = 'auto') -> str:
    """The policy family of a checkpoint (from its ``config.json``) or ``family`` if given.

    :raises ValueError: unsupported or undetectable family.
    """
    if family and family != 'auto':
        if family not in SUPPORTED_FAMILIES:
            raise ValueError(f'family {family!r} has no policy adapter; supported: '
                             f'{", ".join(SUPPORTED_FAMILIES)}')
        return family
    cfg_path = os.path.join(checkpoint_dir(path), 'config.json')
    if not os.path.isfile(cfg_path):
        raise ValueError(f'{cfg_path} is missing: cannot tell the policy family (set family)')
    with open(cfg_path, 'r', encoding='utf-8') as f:
        cfg = json.load(f)
    kind = cfg.get('type') or cfg.get('model_type')
    if kind not in SUPPORTED_FAMILIES:
        raise ValueError(f'{cfg_path}: policy type {kind!r} has no adapter; supported: '
                         f'{", ".join(SUPPORTED_FAMILIES)}')
    return kind


def warm_up(policy: Policy, instruction: str = 'warm up') -> float:
    """Run one prediction on a blank observation; return its milliseconds."""
    images = {}
    size = getattr(getattr(policy, 'spec', None), 'image_size', (224, 224))
    for name in policy.camera_names:
        images[name] = np.zeros((size[0], size[1], 3), dtype=np.uint8)
    stats = getattr(policy, 'stats', None)
    state = (np.asarray(stats.state_mean, dtype=np.float64) if stats is not None
             else np.zeros(policy.state_dim))
    t0 = time.perf_counter()
    chunk = policy.predict(Observation(images=images, instruction=instruction, state=state))
    ms = (time.perf_counter() - t0) * 1e3
    if not np.all(np.isfinite(chunk.actions)):
        LOG.warning('warm-up prediction is not finite: check the checkpoints')
    LOG.info('warm-up prediction: %.1f ms (chunk %s)', ms, chunk.actions.shape)
    return ms


def _build(family: str, config_path: str, device: str, dtype: str, tokenizer_path: str,
           noise_seed: int) -> Policy:
    if family == 'pi0':
        from retain_ros.policies.pi0.modeling_pi0 import Pi0Policy

        directory = checkpoint_dir(config_path)
        policy = Pi0Policy.build(directory, tokenizer_path=tokenizer_path, device=device,
                                 dtype=dtype, stats_dir=directory, noise_seed=noise_seed)
        LOG.info('normalization stats: %s', policy.stats.source)
        return policy
    raise ValueError(f'family {family!r} has no policy adapter')


def load_merged_policy(pretrained: Union[str, Any], finetuned_paths: Union[str, Sequence[str]],
                       spec: Any, family: str = 'auto', device: str = 'auto',
                       dtype: str = 'auto', keep_sources: str = 'auto',
                       tokenizer_path: str = '', noise_seed: int = 0,
                       warmup: bool = True) -> Tuple[Policy, Any]:
    """Build the policy from the finetuned checkpoint and merge the weights into it on device.

    The model (config, normalization statistics, tokenizer default ``<finetuned>/tokenizer``)
    comes from the LAST finetuned checkpoint (the only one for RETAIN; the newest of a
    sequential chain). Weights: ``LiveMerger(policy.module, pretrained, finetuned_paths, spec,
    keep_sources, device)`` writes the merged parameters in place.

    :param pretrained: pretrained checkpoint (path or merging ``CheckpointSource``).
    :param finetuned_paths: one path or a list of finetuned checkpoint paths.
    :param spec: a :class:`~retain_ros.merging.spec.MergeSpec`.
    :param family: ``auto`` (from config.json) or ``pi0``.
    :param device: auto | cpu | cuda | cuda:N.
    :param dtype: auto | float32 | bfloat16 | float16; ``auto`` is decided by the memory plan
        (the checkpoint's own dtype, widened to float32 on CPU only when that fits as well).
    :param keep_sources: ``auto`` (the fastest mode that fits) | ``device`` | ``host`` |
        ``disk``; checked against the free memory before the model is allocated
        (:func:`retain_ros.merging.memory.plan_memory`, raises ``MemoryPlanError``).
    :param tokenizer_path: local tokenizer directory; empty = ``<finetuned>/tokenizer``.
    :param noise_seed: seed of the sampler's start noise.
    :param warmup: run one prediction before returning.
    :return: ``(policy, live_merger)``.
    """
    from retain_ros.merging.engine import open_sources
    from retain_ros.merging.live import LiveMerger
    from retain_ros.merging.memory import plan_memory

    if isinstance(finetuned_paths, (str, os.PathLike)):
        finetuned_paths = [finetuned_paths]
    finetuned: List[Any] = list(finetuned_paths)
    if not finetuned:
        raise ValueError('load_merged_policy needs at least one finetuned checkpoint')
    source = finetuned[-1]
    source_path = getattr(source, 'path', source)
    fam = detect_family(source_path, family)
    t_open = time.perf_counter()
    pre_src, ft_srcs = open_sources(pretrained, finetuned, fam)
    plan = plan_memory(pre_src, ft_srcs, _target_device(device), dtype, keep_sources)
    LOG.info('phase open: %.2f s (headers of %d checkpoint(s), memory plan: keep_sources=%s, '
             'dtype=%s)', time.perf_counter() - t_open, 1 + len(ft_srcs), plan.mode,
             str(plan.dtype).replace('torch.', ''))
    LOG.info('building %s from the finetuned checkpoint %s', fam, source_path)
    t0 = time.perf_counter()
    policy = _build(fam, source_path, device, str(plan.dtype).replace('torch.', ''),
                    tokenizer_path, noise_seed)
    build_ms = (time.perf_counter() - t0) * 1e3
    stats = getattr(policy, 'stats', None)
    if stats is not None:
        LOG.info('normalization stats from the finetuned checkpoint: %s', stats.source)
    param = next(policy.module.parameters())
    t1 = time.perf_counter()
    merger = LiveMerger(policy.module, pre_src, ft_srcs, spec, keep_sources=plan.mode,
                        device=param.device, family=fam, plan=plan)
    LOG.info('phase merge: %.2f s; policy built in %.0f ms on %s (%s); merged: %s',
             time.perf_counter() - t1, build_ms, param.device, param.dtype, _describe(merger))
    if warmup:
        t2 = time.perf_counter()
        warm_up(policy)
        LOG.info('phase warm-up: %.2f s', time.perf_counter() - t2)
    return policy, merger


def _target_device(device: str):
    """The torch device ``device`` (auto | cpu | cuda | cuda:N) resolves to."""
    import torch

    name = (device or 'auto').strip().lower()
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def _describe(merger: Any) -> str:
    state = getattr(merger, 'state', None)
    if state is None:
        return '?'
    try:
        return json.dumps(state.to_dict(), sort_keys=True)
    except (AttributeError, TypeError, ValueError):
        return repr(state)


def load_policy(checkpoint: str, family: str = 'auto', device: str = 'auto',
                dtype: str = 'auto', tokenizer_path: str = '', noise_seed: int = 0,
                warmup: bool = True) -> Policy:
    """Load one checkpoint as a policy, without merging.

    :param checkpoint: checkpoint directory (or its ``model.safetensors``).
    :param family: ``auto`` or ``pi0``.
    :param device: auto | cpu | cuda | cuda:N.
    :param dtype: auto | float32 | bfloat16 | float16.
    :param tokenizer_path: local tokenizer directory; empty = ``<checkpoint>/tokenizer``.
    :param noise_seed: seed of the sampler's start noise.
    :param warmup: run one prediction before returning.
    :return: the policy.
    """
    fam = detect_family(checkpoint, family)
    policy = _build(fam, checkpoint, device, dtype, tokenizer_path, noise_seed)
    policy.load_weights(checkpoint)
    if warmup:
        warm_up(policy)
    return policy
