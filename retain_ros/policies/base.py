"""Policy interface: ``Policy.predict(Observation) -> ActionChunk``. No ROS here.

Every family adapter (π0, π0.5, SmolVLA) implements :class:`Policy`: ``predict_batch``
(explicit flow noise ``(B, chunk_size, max_action_dim)``, optional guidance, actions in robot
units), ``normalize_actions``, ``module`` (what the live merger rewrites), ``camera_names``,
``state_dim``, ``action_dim``, ``max_action_dim``, ``chunk_size``, ``control_period``,
``stats`` (:class:`~retain_ros.policies.normalize.NormStats`, ``stats.source`` names its file) and
``feature_names`` (per-dimension state / action names when the checkpoint has them).
"""
from __future__ import annotations

from abc import ABC
from abc import abstractmethod
from dataclasses import dataclass
from dataclasses import field
import logging
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np


LOG = logging.getLogger(__name__)


def copy_state_into(own: Mapping[str, Any], state: Mapping[str, Any], path: str, what: str,
                    strict: bool = True) -> None:
    """Copy the tensors of ``state`` into the module tensors ``own`` (a ``state_dict()``) in place.

    :param path: where ``state`` was read (for the messages).
    :param what: the model's name in the messages (``π0``, ``SmolVLA``...).
    :param strict: require exactly ``own``'s keys (shapes must always match).
    :raises ValueError: missing / unexpected keys or a shape mismatch (names the first ones);
        nothing is copied then.
    """
    import torch

    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f'{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}'
           for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if bad or (strict and (missing or unexpected)):
        raise ValueError(f'{path}: weights do not fit the {what} built from its config: '
                         f'missing {missing[:5]} ({len(missing)}), unexpected '
                         f'{unexpected[:5]} ({len(unexpected)}), shape mismatch {bad[:5]}')
    with torch.no_grad():
        for key, tensor in state.items():
            if key in own:
                own[key].copy_(tensor.to(own[key].dtype))
    LOG.info('loaded %d %s tensors from %s', len(state), what, path)


@dataclass
class Observation:
    """One observation of the robot.

    :param images: camera name -> RGB image, ``(H, W, 3)`` ``uint8``.
    :param instruction: the language instruction.
    :param state: joint-state vector ``(D,)`` in the policy's joint order (float).
    :param empty_cameras: camera slots of the model that this robot has no camera for (e.g. the
        second wrist slot of a DROID checkpoint on a two-camera robot). Their image may be
        omitted from ``images``; one given is ignored. Each family feeds such a slot what
        LeRobot / openpi feed a missing camera: an image of all -1 after the ``[0, 1] ->
        [-1, 1]`` mapping (= an all-zero ``uint8`` image at the model's resolution) with the
        image mask False, so its tokens are hidden from every other token and skipped by the
        position ids. A name that is not one of the policy's ``camera_names`` raises
        ``ValueError``; at least one slot must keep a camera (as LeRobot requires).
    """

    images: Dict[str, np.ndarray]
    instruction: str
    state: np.ndarray
    empty_cameras: Tuple[str, ...] = ()


@dataclass
class ActionChunk:
    """A chunk of future actions: ``actions[i]`` is the target for time ``(i + 1) * dt``.

    :param actions: ``(H, D)`` float64 array of absolute joint targets.
    :param dt: control period in seconds.
    :param info: timings and other details (``model_ms``, ...).
    """

    actions: np.ndarray
    dt: float
    info: Dict[str, float] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])


def check_observations(observations: Sequence[Observation]) -> None:
    """Refuse an empty batch, a non-:class:`Observation` or a non-string instruction.

    :raises ValueError: naming what is wrong.
    """
    if not observations:
        raise ValueError('empty observation batch')
    for obs in observations:
        if not isinstance(obs, Observation):
            raise ValueError(f'expected Observation, got {type(obs).__name__}')
        if not isinstance(obs.instruction, str):
            raise ValueError(f'instruction must be a str, got {type(obs.instruction)}')


class Policy(ABC):
    """A VLA policy adapter. Subclasses set ``name`` and implement :meth:`predict`."""

    name: str = ''

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not getattr(cls, 'name', ''):
            raise TypeError(f'{cls.__name__} must set a class attribute `name`')

    @property
    @abstractmethod
    def module(self):
        """The ``torch.nn.Module`` whose parameters the live merger rewrites in place."""

    @property
    @abstractmethod
    def camera_names(self) -> List[str]:
        """Camera slots the model expects, in order."""

    @property
    @abstractmethod
    def state_dim(self) -> int:
        """Length of the state vector."""

    @property
    @abstractmethod
    def action_dim(self) -> int:
        """Length of one action."""

    @property
    @abstractmethod
    def chunk_size(self) -> int:
        """Number of actions per chunk (H)."""

    @property
    @abstractmethod
    def control_period(self) -> float:
        """Seconds between two actions of a chunk."""

    @property
    def max_action_dim(self) -> int:
        """Width of the model's (padded) action space: the last dim of the flow noise."""
        raise NotImplementedError(f'{type(self).__name__} does not define max_action_dim')

    def normalize_actions(self, actions: Any) -> Any:
        """Robot-unit actions ``(H, action_dim)`` -> model-space tensor ``(H, max_action_dim)``.

        The inverse of the postprocessing (normalization, zero padding), on the policy's device
        and dtype: what real-time chunking compares the flow against.
        """
        raise NotImplementedError(f'{type(self).__name__} does not implement normalize_actions')

    @abstractmethod
    def predict_batch(self, observations: Sequence[Observation], noise: Any = None,
                      guidance: Any = None) -> List[ActionChunk]:
        """Predict one chunk per observation (one batched model call, ``eval()``).

        :param noise: initial flow-matching noise ``(B, chunk_size, max_action_dim)``; default:
            seeded per row, so outputs are reproducible.
        :param guidance: optional velocity guidance (:mod:`retain_ros.policies.flow`).
        :return: actions in robot units, one :class:`ActionChunk` per observation.
        """

    def predict(self, observation: Observation, noise: Any = None,
                guidance: Any = None) -> ActionChunk:
        """Predict one chunk of actions for one observation."""
        if noise is not None:
            noise = np.asarray(noise)[None] if np.ndim(noise) == 2 else noise
        return self.predict_batch([observation], noise=noise, guidance=guidance)[0]

    @property
    def feature_names(self) -> Optional[Dict[str, List[str]]]:
        """Per-dimension names ``{'state': [...], 'action': [...]}``, or ``None`` (default).

        Only when the checkpoint's files carry them (see :func:`feature_names_from_config`).
        """
        return None

    def reset(self) -> None:
        """Forget episode state (none by default)."""


def _names(feature: Any, dim: Optional[int]) -> Optional[List[str]]:
    names = feature.get('names') if isinstance(feature, Mapping) else None
    if isinstance(names, Mapping) and len(names) == 1:
        names = next(iter(names.values()))  # LeRobot dataset style {'motors': [...]}
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return None
    if dim is not None and len(names) != dim:
        LOG.warning('ignoring %d feature names for %d dimensions', len(names), dim)
        return None
    return list(names)


def feature_names_from_config(config: Mapping[str, Any], state_dim: Optional[int] = None,
                              action_dim: Optional[int] = None
                              ) -> Optional[Dict[str, List[str]]]:
    """State / action dimension names from a policy ``config.json`` dict, if it has them.

    Read from ``input_features['observation.state'].names`` and
    ``output_features['action'].names`` (a list of strings, or LeRobot's dataset style
    ``{'motors': [...]}``). What LeRobot writes: the dataset's ``meta/info.json`` has ``names``,
    but a policy checkpoint does not; ``config.json`` features and the normalizer steps'
    ``features`` in ``policy_*processor.json`` are ``PolicyFeature`` s (``type`` and ``shape``
    only) and the statistics safetensors hold only ``<feature>.<stat>`` tensors. So LeRobot
    (and openpi ``norm_stats.json``) checkpoints, the test fixtures included, give ``None``;
    a config whose features were given ``names`` (e.g. copied from the data set) gives them.

    :param config: the checkpoint's policy config dict.
    :param state_dim: expected number of state names (a mismatch gives ``None``).
    :param action_dim: expected number of action names.
    :return: ``{'state': [...], 'action': [...]}`` when both are present, else ``None``.
    """
    inputs = config.get('input_features') or {}
    outputs = config.get('output_features') or {}
    state = _names(inputs.get('observation.state'), state_dim)
    action = _names(outputs.get('action'), action_dim)
    if state is None or action is None:
        return None
    return {'state': state, 'action': action}


class SpecPolicy(Policy):
    """A policy whose robot I/O sizes come from its ``spec`` (a family's configuration object).

    ``spec`` must have ``camera_names``, ``state_dim``, ``action_dim``, ``chunk_size``,
    ``control_period`` and ``max_action_dim``.
    """

    name = 'spec'
    spec: Any

    @property
    def camera_names(self) -> List[str]:
        return list(self.spec.camera_names)

    @property
    def state_dim(self) -> int:
        return int(self.spec.state_dim)

    @property
    def action_dim(self) -> int:
        return int(self.spec.action_dim)

    @property
    def chunk_size(self) -> int:
        return int(self.spec.chunk_size)

    @property
    def control_period(self) -> float:
        return float(self.spec.control_period)

    @property
    def max_action_dim(self) -> int:
        return int(self.spec.max_action_dim)

    @property
    def feature_names(self) -> Optional[Dict[str, List[str]]]:
        """See :func:`feature_names_from_config` (read from ``spec.policy_config``)."""
        config = getattr(self.spec, 'policy_config', None) or {}
        return feature_names_from_config(config, self.state_dim, self.action_dim)
