"""Normalization of robot state and actions, read from a checkpoint. No ROS here.

Every family (π0, π0.5, SmolVLA) normalizes the state before the model and unnormalizes the
model's actions with statistics that come from the (finetuned) checkpoint. The mode is read per
feature from the checkpoint, never guessed:

=============  ============================================  ===================================
mode           normalize                                     stats
=============  ============================================  ===================================
IDENTITY       ``x``                                         none
MEAN_STD       ``(x - mean) / (std + eps)``                  ``mean``, ``std``
MIN_MAX        ``2 (x - min) / (max - min) - 1``             ``min``, ``max``
QUANTILES      ``2 (x - q01) / (q99 - q01) - 1``             ``q01``, ``q99``
QUANTILE10     ``2 (x - q10) / (q90 - q10) - 1``             ``q10``, ``q90``
=============  ============================================  ===================================

Two conventions, because the two reference code bases differ in where ``eps`` goes:

- ``lerobot`` (LeRobot 0.4.x ``NormalizerProcessorStep``, ``eps`` from the pipeline json, 1e-8):
  MEAN_STD unnormalizes with ``x * std + mean``; a zero range ``max - min`` (or ``q99 - q01``)
  is replaced by ``eps``.
- ``openpi`` (``norm_stats.json``, eps 1e-6): ``(x - mean) / (std + eps)``,
  ``(x - q01) / (q99 - q01 + eps) * 2 - 1`` and their exact inverses.

Where the statistics come from (:func:`load_norm_stats`, first match wins):

1. LeRobot processor files: ``policy_preprocessor.json`` (its ``normalizer_processor`` step:
   ``norm_map`` by feature type, ``features``, ``eps``, ``state_file``) and, for the actions,
   ``policy_postprocessor.json`` (its ``unnormalizer_processor`` step) when present.
2. transformers-native ``processor_config.json`` (``state_mean`` / ``state_std``,
   ``actions_mean`` / ``actions_std``, as ``PI0Processor.save_pretrained`` writes): MEAN_STD.
3. openpi ``assets/<asset_id>/norm_stats.json`` (or ``norm_stats.json``): the file holds no
   mode, it belongs to the model type, so the caller's ``default_mode`` applies (π0: MEAN_STD,
   π0.5: QUANTILES, as openpi's ``use_quantile_norm``).

An unknown mode, or a mode whose statistics are missing, raises ``ValueError`` naming the file and
the mode: it is never treated as mean/std.

API (stable; every family uses it):

- :class:`FeatureNorm` ``(mode, stats, eps, convention)``: ``normalize(x)`` /
  ``unnormalize(x)`` on torch tensors whose last dimension is the feature's width (float32 math
  on the tensor's device), ``typical()`` (a representative value), ``dim``.
- :class:`NormStats` ``(state_mean, state_std, action_mean, action_std, source)`` (MEAN_STD,
  LeRobot convention, the historic constructor) or
  ``NormStats(state=FeatureNorm, action=FeatureNorm, source=...)``; ``normalize_state(x)``,
  ``normalize_actions(x)``, ``unnormalize_actions(x)``, ``typical_state()``,
  ``check(state_dim, action_dim)``, ``tensors()`` (LeRobot normalizer safetensors content),
  ``norm_map()`` (``{'STATE': mode, 'ACTION': mode}``), ``identity()``, ``from_data()``;
  ``source`` names the file(s) read.
- :func:`load_norm_stats` ``(path, state_dim=None, action_dim=None, default_mode='MEAN_STD')``
  and :func:`as_norm_stats` ``(stats, state_dim, action_dim)`` (coerce dicts / ``None``).
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import glob
import json
import logging
import os
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np
import torch

LOG = logging.getLogger(__name__)

IDENTITY = 'IDENTITY'
MEAN_STD = 'MEAN_STD'
MIN_MAX = 'MIN_MAX'
QUANTILES = 'QUANTILES'
QUANTILE10 = 'QUANTILE10'
#: Statistics each mode needs.
MODE_STATS: Dict[str, Tuple[str, ...]] = {
    IDENTITY: (), MEAN_STD: ('mean', 'std'), MIN_MAX: ('min', 'max'),
    QUANTILES: ('q01', 'q99'), QUANTILE10: ('q10', 'q90'),
}
MODES = tuple(MODE_STATS)
LEROBOT = 'lerobot'
OPENPI = 'openpi'
LEROBOT_EPS = 1e-8
OPENPI_EPS = 1e-6

PREPROCESSOR_JSON = 'policy_preprocessor.json'
POSTPROCESSOR_JSON = 'policy_postprocessor.json'
HF_PROCESSOR_JSON = 'processor_config.json'
STATE_KEY = 'observation.state'
ACTION_KEY = 'action'


def normalized_padded_states(stats: Any, states: Any, state_dim: int,
                             max_state_dim: int) -> torch.Tensor:
    """States ``(B, state_dim)`` -> normalized with ``stats``, zero-padded ``(B, max_state_dim)``.

    :raises ValueError: a state of the wrong length, missing or non-finite.
    """
    rows = []
    for s in states:
        s = np.asarray(s, dtype=np.float64).reshape(-1) if s is not None else None
        if s is None or s.shape[0] != state_dim:
            raise ValueError(f'state must have {state_dim} values, got '
                             f'{None if s is None else s.shape[0]}')
        if not np.all(np.isfinite(s)):
            raise ValueError('state has non-finite values')
        rows.append(s)
    st = stats.normalize_state(torch.as_tensor(np.stack(rows), dtype=torch.float32))
    return torch.nn.functional.pad(st, (0, max_state_dim - state_dim))


def check_mode(mode: Any, where: str) -> str:
    """Return ``mode`` upper-cased if it is a known normalization mode.

    :raises ValueError: unknown mode (names ``where``, the file it came from).
    """
    name = str(mode).upper() if isinstance(mode, str) else mode
    if name not in MODE_STATS:
        raise ValueError(f'{where}: unknown normalization mode {mode!r}; known: '
                         f'{", ".join(MODES)} (refusing to guess)')
    return name


@dataclass
class FeatureNorm:
    """Normalization of one feature (state or action).

    :param mode: one of :data:`MODES`.
    :param stats: statistic name -> ``(dim,)`` array (``mean``, ``std``, ``q01`` ...).
    :param eps: the ``eps`` of the convention.
    :param convention: ``lerobot`` or ``openpi`` (see the module docstring).
    :param dim: feature width (required for IDENTITY without stats).
    """

    mode: str
    stats: Dict[str, np.ndarray] = field(default_factory=dict)
    eps: float = LEROBOT_EPS
    convention: str = LEROBOT
    dim: Optional[int] = None

    def __post_init__(self):
        self.mode = check_mode(self.mode, 'FeatureNorm')
        if self.convention not in (LEROBOT, OPENPI):
            raise ValueError(f'convention must be {LEROBOT!r} or {OPENPI!r}, '
                             f'got {self.convention!r}')
        self.stats = {k: np.asarray(v, dtype=np.float64).reshape(-1)
                      for k, v in self.stats.items()}
        missing = [k for k in MODE_STATS[self.mode] if k not in self.stats]
        if missing:
            raise ValueError(f'{self.mode} normalization needs the statistics {missing}, '
                             f'have {sorted(self.stats)}')
        if self.dim is None:
            need = MODE_STATS[self.mode] or tuple(self.stats)
            if not need:
                raise ValueError('IDENTITY normalization without statistics needs dim=')
            self.dim = int(self.stats[need[0]].shape[0])
        for key in MODE_STATS[self.mode]:
            if self.stats[key].shape != (self.dim,):
                raise ValueError(f'{self.mode} statistic {key!r} has shape '
                                 f'{self.stats[key].shape}, expected ({self.dim},)')
        self._cache: Dict[Tuple[str, str], torch.Tensor] = {}

    def _t(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, str(like.device))
        value = self._cache.get(key)
        if value is None:
            value = torch.as_tensor(self.stats[name], dtype=torch.float32, device=like.device)
            self._cache[key] = value
        return value

    def _range(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        lo_name, hi_name = MODE_STATS[self.mode]
        lo, hi = self._t(lo_name, x), self._t(hi_name, x)
        denom = hi - lo
        if self.convention == LEROBOT:
            denom = torch.where(denom == 0, torch.full_like(denom, self.eps), denom)
        else:
            denom = denom + self.eps
        return lo, denom

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f'{self.mode} normalization of width {self.dim} got a tensor of '
                             f'shape {tuple(x.shape)}')
        return x.to(torch.float32)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Robot units -> model space (float32)."""
        x = self._check(torch.as_tensor(x))
        if self.mode == IDENTITY:
            return x
        if self.mode == MEAN_STD:
            return (x - self._t('mean', x)) / (self._t('std', x) + self.eps)
        lo, denom = self._range(x)
        if self.convention == LEROBOT:
            return 2.0 * (x - lo) / denom - 1.0
        return (x - lo) / denom * 2.0 - 1.0

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> robot units (float32)."""
        x = self._check(torch.as_tensor(x))
        if self.mode == IDENTITY:
            return x
        if self.mode == MEAN_STD:
            std = self._t('std', x)
            if self.convention == OPENPI:
                std = std + self.eps
            return x * std + self._t('mean', x)
        lo, denom = self._range(x)
        if self.convention == LEROBOT:
            return (x + 1.0) * denom / 2.0 + lo
        return (x + 1.0) / 2.0 * denom + lo

    def typical(self) -> np.ndarray:
        """A representative value in robot units (the mean, else the middle of the range)."""
        if 'mean' in self.stats:
            return self.stats['mean'].copy()
        for lo, hi in (('q01', 'q99'), ('min', 'max'), ('q10', 'q90')):
            if lo in self.stats and hi in self.stats:
                return (self.stats[lo] + self.stats[hi]) / 2.0
        return np.zeros(self.dim)

    def check(self, dim: int, what: str, source: str) -> None:
        """Raise ``ValueError`` unless the width is ``dim`` and every statistic is finite."""
        if self.dim != dim:
            raise ValueError(f'norm stats {source}: {what} has width {self.dim}, the model '
                             f'expects {dim}')
        for key, arr in self.stats.items():
            if key in MODE_STATS[self.mode] and not np.all(np.isfinite(arr)):
                raise ValueError(f'norm stats {source}: {what} {key} is not finite')

    def cut(self, dim: int) -> 'FeatureNorm':
        """The first ``dim`` entries (openpi pads its statistics to the model width)."""
        return FeatureNorm(self.mode, {k: v[:dim] for k, v in self.stats.items()}, self.eps,
                           self.convention, dim=min(dim, self.dim))


class NormStats:
    """State and action normalization of a policy.

    ``NormStats(state_mean, state_std, action_mean, action_std, source)`` is MEAN_STD in the
    LeRobot convention; pass ``state=`` / ``action=`` :class:`FeatureNorm` for any other mode.

    :param source: the file(s) the statistics were read from (for logs), or ``'identity'``.
    """

    def __init__(self, state_mean: Any = None, state_std: Any = None, action_mean: Any = None,
                 action_std: Any = None, source: str = '', *,
                 state: Optional[FeatureNorm] = None, action: Optional[FeatureNorm] = None):
        if state is None:
            if state_mean is None or state_std is None:
                raise ValueError('NormStats needs state_mean and state_std, or state=')
            state = FeatureNorm(MEAN_STD, {'mean': state_mean, 'std': state_std})
        if action is None:
            if action_mean is None or action_std is None:
                raise ValueError('NormStats needs action_mean and action_std, or action=')
            action = FeatureNorm(MEAN_STD, {'mean': action_mean, 'std': action_std})
        self.state = state
        self.action = action
        self.source = source

    def __repr__(self) -> str:
        return (f'NormStats(state={self.state.mode}[{self.state.dim}], '
                f'action={self.action.mode}[{self.action.dim}], source={self.source!r})')

    # -- historic MEAN_STD accessors ----------------------------------------------------------
    def _stat(self, feature: FeatureNorm, name: str) -> np.ndarray:
        if name not in feature.stats:
            raise AttributeError(f'{self.source}: {feature.mode} statistics have no {name!r}')
        return feature.stats[name]

    @property
    def state_mean(self) -> np.ndarray:
        return self._stat(self.state, 'mean')

    @property
    def state_std(self) -> np.ndarray:
        return self._stat(self.state, 'std')

    @property
    def action_mean(self) -> np.ndarray:
        return self._stat(self.action, 'mean')

    @property
    def action_std(self) -> np.ndarray:
        return self._stat(self.action, 'std')

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> 'NormStats':
        """Statistics that leave values unchanged (MEAN_STD with mean 0, std 1)."""
        return cls(np.zeros(state_dim), np.ones(state_dim), np.zeros(action_dim),
                   np.ones(action_dim), source='identity')

    @classmethod
    def from_data(cls, states: np.ndarray, actions: np.ndarray, min_std: float = 1e-3,
                  source: str = 'computed') -> 'NormStats':
        """MEAN_STD statistics of a data set: ``states (N, S)``, ``actions (N, ..., A)``.

        Also records min / max / q01 / q99 (written to the normalizer files, as LeRobot does).
        """
        states = np.asarray(states, dtype=np.float64).reshape(-1, np.shape(states)[-1])
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])

        def describe(x: np.ndarray) -> Dict[str, np.ndarray]:
            return {'mean': x.mean(0), 'std': np.maximum(x.std(0), min_std), 'min': x.min(0),
                    'max': x.max(0), 'q01': np.quantile(x, 0.01, axis=0),
                    'q99': np.quantile(x, 0.99, axis=0)}

        return cls(state=FeatureNorm(MEAN_STD, describe(states)),
                   action=FeatureNorm(MEAN_STD, describe(actions)), source=source)

    # -- use ----------------------------------------------------------------------------------
    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        """Robot state ``(..., state_dim)`` -> model space (float32)."""
        return self.state.normalize(state)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot actions ``(..., action_dim)`` -> model space (float32)."""
        return self.action.normalize(actions)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Model actions ``(..., action_dim)`` -> robot units (float32)."""
        return self.action.unnormalize(actions)

    def typical_state(self) -> np.ndarray:
        """A representative robot state (for warm-up)."""
        return self.state.typical()

    def check(self, state_dim: int, action_dim: int) -> None:
        """Raise ``ValueError`` unless the widths match the model and all values are finite."""
        self.state.check(state_dim, 'state', self.source)
        self.action.check(action_dim, 'action', self.source)

    def norm_map(self) -> Dict[str, str]:
        """LeRobot ``norm_map`` of these statistics (``STATE`` / ``ACTION`` -> mode)."""
        return {'VISUAL': IDENTITY, 'STATE': self.state.mode, 'ACTION': self.action.mode}

    def tensors(self) -> Dict[str, np.ndarray]:
        """LeRobot normalizer tensors (``observation.state.mean`` ... ``action.q99``), float32."""
        out = {}
        for key, feature in ((STATE_KEY, self.state), (ACTION_KEY, self.action)):
            for name, arr in sorted(feature.stats.items()):
                out[f'{key}.{name}'] = np.asarray(arr, np.float32)
        return out


# -- coercion -------------------------------------------------------------------------------------
def _feature_from_dict(data: Dict[str, Any], mode: str, where: str, eps: float,
                       convention: str) -> FeatureNorm:
    stats = {k: v for k, v in data.items() if k in ('mean', 'std', 'min', 'max', 'q01', 'q99',
                                                    'q10', 'q90')}
    try:
        return FeatureNorm(mode, stats, eps=eps, convention=convention)
    except ValueError as exc:
        raise ValueError(f'{where}: {exc}') from None


def as_norm_stats(stats: Any, state_dim: int, action_dim: int) -> NormStats:
    """Coerce statistics into :class:`NormStats` and check their widths.

    Accepts a :class:`NormStats`; ``None`` (identity); LeRobot-style nested dicts
    ``{'observation.state': {'mean', 'std'}, 'action': {...}}`` (optionally with ``'mode'``);
    flat LeRobot tensor dicts (``observation.state.mean`` ...); openpi dicts
    ``{'state': ..., 'actions': ...}`` (optionally under ``norm_stats``). Dicts without a mode
    are MEAN_STD.

    :raises ValueError: unknown form or wrong widths.
    """
    if stats is None:
        out = NormStats.identity(state_dim, action_dim)
    elif isinstance(stats, NormStats):
        out = stats
    elif isinstance(stats, dict):
        data = stats.get('norm_stats', stats)
        if any('.' in str(k) and str(k).startswith((STATE_KEY + '.', ACTION_KEY + '.'))
               for k in data):
            data = _nest(data)
        state = data.get(STATE_KEY, data.get('state'))
        action = data.get(ACTION_KEY, data.get('actions'))
        if not isinstance(state, dict) or not isinstance(action, dict):
            raise ValueError('normalization stats dict needs observation.state/state and '
                             f'action/actions entries, got keys {sorted(data)}')
        out = NormStats(
            state=_feature_from_dict(state, state.get('mode', MEAN_STD), 'dict', LEROBOT_EPS,
                                     LEROBOT),
            action=_feature_from_dict(action, action.get('mode', MEAN_STD), 'dict',
                                      LEROBOT_EPS, LEROBOT),
            source='dict')
    else:
        raise ValueError(f'cannot use {type(stats).__name__} as normalization statistics')
    out.check(state_dim, action_dim)
    return out


def _nest(flat: Dict[str, Any]) -> Dict[str, Dict[str, np.ndarray]]:
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        feature, _, stat = str(key).rpartition('.')
        out.setdefault(feature, {})[stat] = np.asarray(value)
    return out


# -- LeRobot processor files ----------------------------------------------------------------------
def _read_json(path: str) -> Dict[str, Any]:
    with open(path, 'r', encoding='utf-8') as f:
        return json.load(f)


def _pipeline_step(path: str, kind: str) -> Optional[Dict[str, Any]]:
    """The first step of a LeRobot pipeline json whose registry name contains ``kind``."""
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

    nested = _nest(load_file(path))
    if STATE_KEY not in nested or ACTION_KEY not in nested:
        raise ValueError(f'{path}: missing {STATE_KEY} / {ACTION_KEY} statistics')
    mode = check_mode(mode, path)
    return NormStats(state=_feature_from_dict(nested[STATE_KEY], mode, path, LEROBOT_EPS,
                                              LEROBOT),
                     action=_feature_from_dict(nested[ACTION_KEY], mode, path, LEROBOT_EPS,
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
        return NormStats(state=_feature_from_dict(state, mode, path, OPENPI_EPS, OPENPI),
                         action=_feature_from_dict(actions, mode, path, OPENPI_EPS, OPENPI),
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
