"""π0 checkpoints on disk: read the weights with canonical names, write the LeRobot π0 layout.

:func:`save_pi0_checkpoint` writes what LeRobot, transformers (through its π0 key conversion) and
this package all read; :func:`read_pi0_state_dict` reads any π0 key dialect (LeRobot, openpi,
transformers-saved, canonical) through :func:`retain_ros.merging.dialects.canonical_pi0_key`,
the same mapping the merger uses.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any
from typing import Dict
from typing import Optional

import torch

from retain_ros.merging.dialects import canonical_pi0_key
from retain_ros.merging.dialects import lerobot_pi0_key
from retain_ros.merging.dialects import LEROBOT_TIED_ALIAS
from retain_ros.policies.base import SpecPolicy
from retain_ros.policies.norm_stats_files import POSTPROCESSOR_JSON
from retain_ros.policies.norm_stats_files import PREPROCESSOR_JSON
from retain_ros.policies.normalize import as_norm_stats
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec
from retain_ros.policies.pi0.tokenizer_pi0 import BYTE_VOCAB_SIZE
from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import TOKENIZER_DIR

LOG = logging.getLogger(__name__)

WEIGHTS_FILE = 'model.safetensors'
PRE_STATS_FILE = 'policy_preprocessor_step_5_normalizer_processor.safetensors'
POST_STATS_FILE = 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'


def read_pi0_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a π0 safetensors file (or ``<dir>/model.safetensors``) with canonical key names.

    :raises FileNotFoundError: no weights file.
    :raises ValueError: two stored tensors map to the same name and differ.
    """
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


def _is_pi0_policy(policy: Any) -> bool:
    """Tell whether ``policy`` is a π0-family policy (its spec is a :class:`Pi0Spec`)."""
    return isinstance(policy, SpecPolicy) and isinstance(getattr(policy, 'spec', None), Pi0Spec)


def _copy_tokenizer(src: str, dst: str, spec: Pi0Spec) -> None:
    """Copy the tokenizer directory ``src`` to ``dst`` (the byte tokenizer when there is none)."""
    if src and os.path.isfile(src):
        src = os.path.dirname(src)
    if not src and spec.hf_config.vlm_config.text_config.vocab_size == BYTE_VOCAB_SIZE:
        save_byte_tokenizer(dst)
    elif not src:
        LOG.warning('no tokenizer to copy into %s; pass tokenizer_dir', dst)
    elif os.path.abspath(src) != os.path.abspath(dst):
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy2(os.path.join(src, name), os.path.join(dst, name))


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

    :param policy: a π0 / π0.5 policy, a ``PI0ForConditionalGeneration`` module or a
        canonical-key state dict (the last two need ``spec``).
    :param out_dir: target directory (created; existing files overwritten).
    :param stats: statistics to write (anything
        :func:`~retain_ros.policies.normalize.as_norm_stats` takes; default: the policy's).
    :param state_dict: canonical-key weights to write instead of the module's.
    :param tokenizer_dir: tokenizer directory to copy (default: the policy's).
    :param extra_config: keys merged into ``config.json``.
    :param spec: the model spec (default: the policy's).
    :return: ``out_dir``.
    """
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    is_policy = _is_pi0_policy(policy)
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
    _copy_tokenizer(src, os.path.join(out_dir, TOKENIZER_DIR), spec)
    LOG.info('saved π0 checkpoint (LeRobot layout) to %s', out_dir)
    return out_dir
