"""Load a (merged) policy from checkpoint paths: the entry point of the node and the CLI.

One API for every family: :func:`load_policy` (one checkpoint) and :func:`load_merged_policy`
(the node's path) detect the family from ``config.json`` (LeRobot ``"type"``: ``pi0`` /
``pi05`` / ``smolvla``; transformers ``"model_type": "pi0"``) and call the family's builder from
:data:`BUILDERS`, imported lazily. Each family package provides

    ``build_policy(checkpoint_dir: str, device: str = 'cpu', dtype: str = 'auto',
    tokenizer_path: str = '', noise_seed: int = 0) -> Policy``

which builds the model from the config and the normalization statistics WITHOUT loading weights:
``load_merged_policy`` hands ``policy.module`` to the merging library's
:class:`~retain_ros.merging.live.LiveMerger` (which fills every parameter in place on the target
device; the module's state-dict names are the checkpoints' canonical names, see
:mod:`retain_ros.merging.dialects`), ``load_policy`` calls ``policy.load_weights(checkpoint_dir)``.
The policy is built from the FINETUNED checkpoint (RETAIN: its statistics), then warmed up.
``compile`` (:mod:`retain_ros.policies.compile`) is applied after the weights are in and before
the warm-up, so the warm-up is the compile and the first real chunk is not.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Sequence
from typing import Tuple
from typing import Union

import numpy as np

from retain_ros.merging.devices import dtype_name
from retain_ros.merging.devices import parse_dtype
from retain_ros.merging.devices import resolve_device
from retain_ros.merging.devices import resolve_dtype
from retain_ros.policies.base import Observation
from retain_ros.policies.base import Policy
from retain_ros.policies.compile import apply_compile
from retain_ros.policies.compile import check_compile_mode

LOG = logging.getLogger(__name__)

#: Family -> ``'module:function'`` of its builder (see the module docstring).
BUILDERS: Dict[str, str] = {
    'pi0': 'retain_ros.policies.pi0:build_policy',
    'pi05': 'retain_ros.policies.pi05:build_policy',
    'smolvla': 'retain_ros.policies.smolvla:build_policy',
}
#: Families this loader can build a policy for.
SUPPORTED_FAMILIES = tuple(BUILDERS)


def builder(family: str) -> Callable[..., Policy]:
    """Return the ``build_policy`` function of ``family`` (imported on first use).

    :raises ValueError: unknown family, or its adapter cannot be imported (names the module).
    """
    if family not in BUILDERS:
        raise ValueError(f'family {family!r} has no policy adapter; supported: '
                         f'{", ".join(SUPPORTED_FAMILIES)}')
    module_name, func = BUILDERS[family].split(':')
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f'family {family!r}: its adapter {BUILDERS[family]} is not available '
                         f'({type(exc).__name__}: {exc})') from exc


def checkpoint_dir(path: str) -> str:
    """Return the directory holding a checkpoint's ``config.json`` (``path`` or its parent)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f'{path}: no such checkpoint')
    return path


def detect_family(path: str, family: str = 'auto') -> str:
    """Return the policy family of a checkpoint (from its ``config.json``), or ``family``.

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
    typical = getattr(stats, 'typical_state', None)
    state = (np.asarray(typical(), dtype=np.float64) if typical is not None
             else np.zeros(policy.state_dim))
    t0 = time.perf_counter()
    chunk = policy.predict(Observation(images=images, instruction=instruction, state=state))
    ms = (time.perf_counter() - t0) * 1e3
    if not np.all(np.isfinite(chunk.actions)):
        LOG.warning('warm-up prediction is not finite: check the checkpoints')
    LOG.info('warm-up prediction: %.1f ms (chunk %s)', ms, chunk.actions.shape)
    return ms


def _build(family: str, path: str, device: str, dtype: str, tokenizer_path: str,
           noise_seed: int) -> Policy:
    directory = checkpoint_dir(path)
    policy = builder(family)(directory, device=device, dtype=dtype,
                             tokenizer_path=tokenizer_path, noise_seed=noise_seed)
    LOG.info('%s policy built from %s; normalization stats: %s', family, directory,
             getattr(getattr(policy, 'stats', None), 'source', '?'))
    return policy


def load_merged_policy(pretrained: Union[str, Any], finetuned_paths: Union[str, Sequence[str]],
                       spec: Any, family: str = 'auto', device: str = 'auto',
                       dtype: str = 'auto', keep_sources: str = 'auto',
                       tokenizer_path: str = '', noise_seed: int = 0,
                       warmup: bool = True, compile: str = 'none') -> Tuple[Policy, Any]:
    """Build the policy from the finetuned checkpoint and merge the weights into it on device.

    The model (config, normalization statistics, tokenizer) comes from the LAST finetuned
    checkpoint (the only one for RETAIN; the newest of a sequential chain). Weights:
    ``LiveMerger(policy.module, pretrained, finetuned_paths, spec, keep_sources, device)``
    writes the merged parameters in place.

    :param pretrained: pretrained checkpoint (path or merging ``CheckpointSource``).
    :param finetuned_paths: one path or a list of finetuned checkpoint paths.
    :param spec: a :class:`~retain_ros.merging.spec.MergeSpec`.
    :param family: ``auto`` (from config.json), ``pi0``, ``pi05`` or ``smolvla``.
    :param device: auto | cpu | cuda | cuda:N.
    :param dtype: auto | float32 | bfloat16 | float16; ``auto`` is decided by the memory plan
        (the checkpoint's own dtype, widened to float32 on CPU only when that fits as well).
    :param keep_sources: ``auto`` (the fastest mode that fits) | ``device`` | ``host`` |
        ``disk``; checked against the free memory before the model is allocated
        (:func:`retain_ros.merging.memory.plan_memory`, raises ``MemoryPlanError``).
    :param tokenizer_path: local tokenizer directory; empty = looked up beside the finetuned
        checkpoint (``<ckpt>/tokenizer/``, ``<ckpt>/``, the pipeline's local tokenizer_name).
    :param noise_seed: seed of the sampler's start noise.
    :param warmup: run one prediction before returning (with ``compile``: the compile).
    :param compile: ``none`` | ``default`` | ``reduce-overhead`` (CUDA only) | ``max-autotune``
        (:mod:`retain_ros.policies.compile`); checked before anything is loaded.
    :return: ``(policy, live_merger)``.
    :raises ValueError: an invalid ``compile`` value (names it).
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
    check_compile_mode(compile, resolve_device(device))
    t_open = time.perf_counter()
    pre_src, ft_srcs = open_sources(pretrained, finetuned, fam)
    plan = plan_memory(pre_src, ft_srcs, resolve_device(device), dtype, keep_sources)
    LOG.info('phase open: %.2f s (headers of %d checkpoint(s), memory plan: keep_sources=%s, '
             'dtype=%s)', time.perf_counter() - t_open, 1 + len(ft_srcs), plan.mode,
             dtype_name(plan.dtype))
    LOG.info('building %s from the finetuned checkpoint %s', fam, source_path)
    t0 = time.perf_counter()
    policy = _build(fam, source_path, device, dtype_name(plan.dtype), tokenizer_path,
                    noise_seed)
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
    apply_compile(policy, compile)
    if warmup:
        t2 = time.perf_counter()
        warm_up(policy)
        LOG.info('phase warm-up: %.2f s', time.perf_counter() - t2)
    return policy, merger


def single_checkpoint_dtype(path: str, family: str, device: str, dtype: str) -> str:
    """Return the dtype name a single (unmerged) checkpoint is built in.

    An explicit ``dtype`` is kept; ``auto`` follows
    :func:`retain_ros.merging.devices.resolve_dtype` with the checkpoint's own dtype (read from
    its headers), as the memory plan of a merge does.
    """
    from retain_ros.merging.checkpoint import open_checkpoint
    from retain_ros.merging.memory import checkpoint_dtype

    if parse_dtype(dtype) is not None:
        return dtype
    src = open_checkpoint(path, family=family)
    try:
        own = checkpoint_dtype(src)
    finally:
        src.close()
    return dtype_name(resolve_dtype('auto', resolve_device(device), own))


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
                warmup: bool = True, compile: str = 'none') -> Policy:
    """Load one checkpoint as a policy, without merging.

    :param checkpoint: checkpoint directory (or its ``model.safetensors``).
    :param family: ``auto`` (from config.json), ``pi0``, ``pi05`` or ``smolvla``.
    :param device: auto | cpu | cuda | cuda:N.
    :param dtype: auto | float32 | bfloat16 | float16; ``auto`` keeps the checkpoint's own dtype,
        widened to what the device computes well (see :func:`single_checkpoint_dtype`).
    :param tokenizer_path: local tokenizer directory; empty = looked up beside the checkpoint.
    :param noise_seed: seed of the sampler's start noise.
    :param warmup: run one prediction before returning (with ``compile``: the compile).
    :param compile: as for :func:`load_merged_policy`.
    :return: the policy.
    :raises ValueError: an invalid ``compile`` value (names it).
    """
    fam = detect_family(checkpoint, family)
    check_compile_mode(compile, resolve_device(device))
    dtype = single_checkpoint_dtype(checkpoint, fam, device, dtype)
    policy = _build(fam, checkpoint, device, dtype, tokenizer_path, noise_seed)
    policy.load_weights(checkpoint)
    apply_compile(policy, compile)
    if warmup:
        warm_up(policy)
    return policy
