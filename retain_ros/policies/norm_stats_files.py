"""Where a checkpoint's normalization statistics are and how they are read. No ROS here.

:func:`load_norm_stats` looks in a checkpoint directory (first match wins):

1. LeRobot processor files: ``policy_preprocessor.json`` (its ``normalizer_processor`` step:
   ``norm_map`` by feature type, ``features``, ``eps``, ``state_file``) and, for the actions,
   ``policy_postprocessor.json`` (its ``unnormalizer_processor`` step) when present.
2. transformers-native ``processor_config.json`` (``state_mean`` / ``state_std``,
   ``actions_mean`` / ``actions_std``, as ``PI0Processor.save_pretrained`` writes): MEAN_STD.
3. openpi ``assets/<asset_id>/norm_stats.json`` (or ``norm_stats.json``): the file holds no
   mode, it belongs to the model type, so the caller's ``default_mode`` applies (π0: MEAN_STD,
   π0.5: QUANTILES, as openpi's ``use_quantile_norm``).

An unknown mode, or a mode whose statistics are missing, raises ``ValueError`` naming the file and
the mode. The statistics themselves are :class:`~retain_ros.policies.normalize.NormStats`.
"""
from __future__ import annotations

import glob
import json
import logging
import os
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

from retain_ros.policies.normalize import ACTION_KEY
from retain_ros.policies.normalize import check_mode
from retain_ros.policies.normalize import feature_from_dict
from retain_ros.policies.normalize import FeatureNorm
from retain_ros.policies.normalize import IDENTITY
from retain_ros.policies.normalize import LEROBOT
from retain_ros.policies.normalize import LEROBOT_EPS
from retain_ros.policies.normalize import MEAN_STD
from retain_ros.policies.normalize import nest_flat_stats
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.normalize import OPENPI
from retain_ros.policies.normalize import OPENPI_EPS
from retain_ros.policies.normalize import STATE_KEY

LOG = logging.getLogger(__name__)

PREPROCESSOR_JSON = 'policy_preprocessor.json'
POSTPROCESSOR_JSON = 'policy_postprocessor.json'
HF_PROCESSOR_JSON = 'processor_config.json'


# -- LeRobot processor files ----------------------------------------------------------------------
def _read_json(path: str) -> Dict[str, Any]:
    with open(path, 'r', encoding='utf-8') as f:
        return json.load(f)


def _pipeline_step(path: str, kind: str) -> Optional[Dict[str, Any]]:
    """Return the first step of a LeRobot pipeline json whose registry name has ``kind``."""
    for step in _read_json(path).get('steps', []):
        name = step.get('registry_name', '') or step.get('class', '')
        if kind in name.lower():
            return step
    return None


def _feature_of_type(step: Dict[str, Any], ftype: str, default: str) -> str:
    features = (step.get('config') or {}).get('features') or {}
    for key, value in features.items():
        if isinstance(value, dict) and str(value.get('type', '')).upper() == ftype:
            return key
    return default


def _lerobot_feature(pipeline: str, step: Dict[str, Any], ftype: str,
                     default_key: str) -> Tuple[FeatureNorm, str]:
    from safetensors.numpy import load_file

    config = step.get('config') or {}
    norm_map = config.get('norm_map') or {}
    where = f'{pipeline} (norm_map[{ftype!r}])'
    mode = check_mode(norm_map.get(ftype, IDENTITY), where)
    eps = float(config.get('eps', LEROBOT_EPS))
    key = _feature_of_type(step, ftype, default_key)
    state_file = step.get('state_file')
    if not state_file:
        if mode != IDENTITY:
            raise ValueError(f'{pipeline}: {mode} normalization of {key!r} but the step names '
                             'no state_file')
        shape = ((config.get('features') or {}).get(key) or {}).get('shape') or [0]
        return FeatureNorm(IDENTITY, dim=int(shape[-1])), pipeline
    path = os.path.join(os.path.dirname(pipeline), state_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{pipeline} names {state_file}, which is missing')
    tensors = load_file(path)
    stats = {name[len(key) + 1:]: arr for name, arr in tensors.items()
             if name.startswith(key + '.') and '.' not in name[len(key) + 1:]}
    if not stats and mode != IDENTITY:
        raise ValueError(f'{path}: no statistics for {key!r} ({mode} normalization in '
                         f'{os.path.basename(pipeline)})')
    try:
        feature = FeatureNorm(mode, stats, eps=eps, convention=LEROBOT)
    except ValueError as exc:
        raise ValueError(f'{path} ({key}, {mode} from {os.path.basename(pipeline)}): '
                         f'{exc}') from None
    return feature, path


def load_lerobot_stats(directory: str) -> NormStats:
    """Read LeRobot 0.4 processor files (pre-processor; post-processor for the actions)."""
    pre = os.path.join(directory, PREPROCESSOR_JSON)
    post = os.path.join(directory, POSTPROCESSOR_JSON)
    step = _pipeline_step(pre, 'normalizer')
    if step is None:
        raise ValueError(f'{pre}: no normalizer_processor step')
    state, state_src = _lerobot_feature(pre, step, 'STATE', STATE_KEY)
    action_step, action_pipe = step, pre
    if os.path.isfile(post):
        post_step = _pipeline_step(post, 'unnormalizer')
        if post_step is not None:
            action_step, action_pipe = post_step, post
    action, action_src = _lerobot_feature(action_pipe, action_step, 'ACTION', ACTION_KEY)
    source = state_src if state_src == action_src else f'{state_src} + {action_src}'
    return NormStats(state=state, action=action, source=source)


def load_lerobot_stats_file(path: str, mode: str = MEAN_STD) -> NormStats:
    """Read one ``*_normalizer_processor.safetensors`` file with a mode given by the caller."""
    from safetensors.numpy import load_file

    nested = nest_flat_stats(load_file(path))
    if STATE_KEY not in nested or ACTION_KEY not in nested:
        raise ValueError(f'{path}: missing {STATE_KEY} / {ACTION_KEY} statistics')
    mode = check_mode(mode, path)
    return NormStats(state=feature_from_dict(nested[STATE_KEY], mode, path, LEROBOT_EPS,
                                             LEROBOT),
                     action=feature_from_dict(nested[ACTION_KEY], mode, path, LEROBOT_EPS,
                                              LEROBOT), source=path)


# -- openpi / transformers ------------------------------------------------------------------------
def load_openpi_stats(path: str, mode: str = MEAN_STD) -> NormStats:
    """Read an openpi ``norm_stats.json`` (``{"norm_stats": {"state": ..., "actions": ...}}``).

    :param mode: the model type's mode (π0 MEAN_STD, π0.5 QUANTILES); the file has none.
    """
    mode = check_mode(mode, path)
    data = _read_json(path)
    stats = data.get('norm_stats', data)
    try:
        state, actions = stats['state'], stats['actions']
        return NormStats(state=feature_from_dict(state, mode, path, OPENPI_EPS, OPENPI),
                         action=feature_from_dict(actions, mode, path, OPENPI_EPS, OPENPI),
                         source=path)
    except (KeyError, TypeError) as exc:
        raise ValueError(f'{path}: not an openpi norm_stats.json (missing {exc})') from None


def load_hf_processor_stats(path: str) -> Optional[NormStats]:
    """Read ``state_mean/std`` + ``actions_mean/std`` of a transformers ``processor_config.json``.

    :return: ``None`` when the file holds no statistics.
    """
    data = _read_json(path)
    keys = ('state_mean', 'state_std', 'actions_mean', 'actions_std')
    if not any(data.get(k) is not None for k in keys):
        return None
    missing = [k for k in keys if data.get(k) is None]
    if missing:
        raise ValueError(f'{path}: normalization statistics incomplete, missing {missing}')
    mode = check_mode(data.get('normalization_mode', MEAN_STD), path)
    eps = float(data.get('eps', LEROBOT_EPS))
    if mode != MEAN_STD:
        raise ValueError(f'{path}: normalization mode {mode!r} with mean/std statistics')
    return NormStats(state=FeatureNorm(MEAN_STD, {'mean': data['state_mean'],
                                                  'std': data['state_std']}, eps=eps),
                     action=FeatureNorm(MEAN_STD, {'mean': data['actions_mean'],
                                                   'std': data['actions_std']}, eps=eps),
                     source=path)


def load_norm_stats(path: str, state_dim: Optional[int] = None,
                    action_dim: Optional[int] = None,
                    default_mode: str = MEAN_STD) -> NormStats:
    """Find and read the normalization statistics of a checkpoint directory.

    Order: LeRobot processor files, transformers ``processor_config.json`` with statistics,
    openpi ``assets/*/norm_stats.json`` / ``norm_stats.json`` (mode ``default_mode``). openpi
    statistics wider than the model are cut to ``state_dim`` / ``action_dim``.

    :param path: the (finetuned) checkpoint directory, or a stats file (``*.json`` openpi,
        ``processor_config.json``, ``*.safetensors`` LeRobot normalizer with ``default_mode``).
    :param state_dim: expected state width (checked).
    :param action_dim: expected action width (checked).
    :param default_mode: mode for files that hold none (openpi, bare safetensors).
    :return: the statistics; ``source`` names the file(s).
    :raises FileNotFoundError: no statistics found.
    :raises ValueError: unknown mode, malformed or wrong-sized statistics.
    """
    stats: Optional[NormStats] = None
    openpi = False
    if os.path.isfile(path):
        if os.path.basename(path) == HF_PROCESSOR_JSON:
            stats = load_hf_processor_stats(path)
            if stats is None:
                raise ValueError(f'{path}: no normalization statistics in it')
        elif path.endswith('.json'):
            stats, openpi = load_openpi_stats(path, default_mode), True
        else:
            stats = load_lerobot_stats_file(path, default_mode)
    elif os.path.isfile(os.path.join(path, PREPROCESSOR_JSON)):
        stats = load_lerobot_stats(path)
    else:
        hf = os.path.join(path, HF_PROCESSOR_JSON)
        if os.path.isfile(hf):
            stats = load_hf_processor_stats(hf)
        bare = sorted(glob.glob(os.path.join(path, 'policy_*processor*normalizer*'
                                                   '.safetensors')))
        if stats is None and bare:
            LOG.warning('%s: a LeRobot normalizer file without its pipeline json; assuming the '
                        "family's mode %s", bare[0], default_mode)
            stats = load_lerobot_stats_file(bare[0], default_mode)
        if stats is None:
            found = sorted(glob.glob(os.path.join(path, 'assets', '*', 'norm_stats.json')))
            found += sorted(glob.glob(os.path.join(path, 'norm_stats.json')))
            if not found:
                raise FileNotFoundError(
                    f'no normalization statistics in {path!r}: expected LeRobot '
                    f'{PREPROCESSOR_JSON} + *_normalizer_processor.safetensors, a transformers '
                    f'{HF_PROCESSOR_JSON} with state_mean/std, or openpi '
                    'assets/<asset_id>/norm_stats.json')
            if len(found) > 1:
                LOG.warning('several norm_stats.json in %s; using %s', path, found[0])
            stats, openpi = load_openpi_stats(found[0], default_mode), True
    if openpi:
        if state_dim is not None and stats.state.dim > state_dim:
            stats.state = stats.state.cut(state_dim)
        if action_dim is not None and stats.action.dim > action_dim:
            stats.action = stats.action.cut(action_dim)
    if state_dim is not None and action_dim is not None:
        stats.check(state_dim, action_dim)
    LOG.info('normalization stats: state %s, action %s from %s', stats.state.mode,
             stats.action.mode, stats.source)
    return stats
