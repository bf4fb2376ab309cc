"""Normalization of robot state and actions with a checkpoint's statistics. No ROS here.

Every family (π0, π0.5, SmolVLA) normalizes the state before the model and unnormalizes the
model's actions with statistics that come from the (finetuned) checkpoint
(:mod:`retain_ros.policies.norm_stats_files` finds and reads them). The mode is read per feature
from the checkpoint, never guessed:

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

An unknown mode, or a mode whose statistics are missing, raises ``ValueError`` naming where it
came from: it is never treated as mean/std.

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
- :func:`as_norm_stats` ``(stats, state_dim, action_dim)`` (coerce dicts / ``None``).
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np
import torch

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
        """Return a representative value in robot units (the mean, else the range's middle)."""
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
        """Return the first ``dim`` entries (openpi pads its statistics to the model width)."""
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
        """Return a representative robot state (for warm-up)."""
        return self.state.typical()

    def check(self, state_dim: int, action_dim: int) -> None:
        """Raise ``ValueError`` unless the widths match the model and all values are finite."""
        self.state.check(state_dim, 'state', self.source)
        self.action.check(action_dim, 'action', self.source)

    def norm_map(self) -> Dict[str, str]:
        """Return the LeRobot ``norm_map`` of these statistics (``STATE`` / ``ACTION`` -> mode)."""
        return {'VISUAL': IDENTITY, 'STATE': self.state.mode, 'ACTION': self.action.mode}

    def tensors(self) -> Dict[str, np.ndarray]:
        """Return the LeRobot normalizer content: ``observation.state.mean`` ..., float32."""
        out = {}
        for key, feature in ((STATE_KEY, self.state), (ACTION_KEY, self.action)):
            for name, arr in sorted(feature.stats.items()):
                out[f'{key}.{name}'] = np.asarray(arr, np.float32)
        return out


# -- coercion -------------------------------------------------------------------------------------
def feature_from_dict(data: Dict[str, Any], mode: str, where: str, eps: float,
                      convention: str) -> FeatureNorm:
    """Build a :class:`FeatureNorm` from a dict of statistics (other keys are ignored).

    :raises ValueError: the mode's statistics are missing or malformed (names ``where``).
    """
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
            data = nest_flat_stats(data)
        state = data.get(STATE_KEY, data.get('state'))
        action = data.get(ACTION_KEY, data.get('actions'))
        if not isinstance(state, dict) or not isinstance(action, dict):
            raise ValueError('normalization stats dict needs observation.state/state and '
                             f'action/actions entries, got keys {sorted(data)}')
        out = NormStats(
            state=feature_from_dict(state, state.get('mode', MEAN_STD), 'dict', LEROBOT_EPS,
                                    LEROBOT),
            action=feature_from_dict(action, action.get('mode', MEAN_STD), 'dict',
                                     LEROBOT_EPS, LEROBOT),
            source='dict')
    else:
        raise ValueError(f'cannot use {type(stats).__name__} as normalization statistics')
    out.check(state_dim, action_dim)
    return out


def nest_flat_stats(flat: Dict[str, Any]) -> Dict[str, Dict[str, np.ndarray]]:
    """Turn LeRobot's flat ``<feature>.<stat>`` tensors into ``{feature: {stat: array}}``."""
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        feature, _, stat = str(key).rpartition('.')
        out.setdefault(feature, {})[stat] = np.asarray(value)
    return out
