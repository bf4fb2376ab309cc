"""π0 pre/post-processing: the same steps as transformers ``PI0Processor`` / PaliGemma.

- prompt: ``<image>`` × (image tokens per camera × cameras), then bos + instruction + newline
  as text tokens, right-padded (or truncated) to ``tokenizer_max_length`` text tokens;
  attention mask 1 on images and real text tokens, 0 on padding;
- images: RGB ``uint8`` ``(H, W, 3)``, resized with OpenCV to the model's image size (aspect
  kept, padded with black at the bottom / right when the aspect differs), scaled to [-1, 1], CHW;
- state: ``(x - mean) / (std + eps)``, zero-padded to ``max_state_dim``;
- actions: the model's (normalized, padded) output cut to ``action_dim`` and unnormalized with
  ``x * (std + eps) + mean``; training targets are normalized the same way.

Normalization statistics come from the finetuned checkpoint: LeRobot processor files
(``policy_preprocessor.json`` + ``*_normalizer_processor.safetensors``) or openpi
``assets/<asset_id>/norm_stats.json``; :func:`load_norm_stats` says which file it read.
"""
from __future__ import annotations

from dataclasses import dataclass
import glob
import json
import logging
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import cv2
import numpy as np
import torch

from retain_ros.policies.base import Observation
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec
from retain_ros.policies.pi0.tokenizer_pi0 import TextTokenizer

LOG = logging.getLogger(__name__)

EPS = 1e-8
PREPROCESSOR_JSON = 'policy_preprocessor.json'
POSTPROCESSOR_JSON = 'policy_postprocessor.json'


@dataclass
class NormStats:
    """Mean / std of the robot state and the actions.

    :param state_mean: ``(state_dim,)``.
    :param state_std: ``(state_dim,)``.
    :param action_mean: ``(action_dim,)``.
    :param action_std: ``(action_dim,)``.
    :param source: the file the statistics were read from (for logs), or ``'identity'``.
    """

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    source: str = ''

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> 'NormStats':
        """Statistics that leave values unchanged (mean 0, std 1)."""
        return cls(np.zeros(state_dim), np.ones(state_dim), np.zeros(action_dim),
                   np.ones(action_dim), source='identity')

    @classmethod
    def from_data(cls, states: np.ndarray, actions: np.ndarray, min_std: float = 1e-3,
                  source: str = 'computed') -> 'NormStats':
        """Statistics of a data set: ``states (N, S)``, ``actions (N, ..., A)``."""
        states = np.asarray(states, dtype=np.float64).reshape(-1, np.shape(states)[-1])
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        return cls(states.mean(0), np.maximum(states.std(0), min_std), actions.mean(0),
                   np.maximum(actions.std(0), min_std), source=source)

    def check(self, state_dim: int, action_dim: int) -> None:
        """Raise ``ValueError`` unless the sizes match the model and all values are finite."""
        for name, arr, dim in (('state mean', self.state_mean, state_dim),
                               ('state std', self.state_std, state_dim),
                               ('action mean', self.action_mean, action_dim),
                               ('action std', self.action_std, action_dim)):
            if np.shape(arr) != (dim,):
                raise ValueError(f'norm stats {self.source}: {name} has shape {np.shape(arr)}, '
                                 f'the model expects ({dim},)')
            if not np.all(np.isfinite(arr)):
                raise ValueError(f'norm stats {self.source}: {name} is not finite')

    def tensors(self) -> Dict[str, np.ndarray]:
        """LeRobot normalizer tensors (``observation.state.mean`` ... ``action.std``)."""
        return {'observation.state.mean': np.asarray(self.state_mean, np.float32),
                'observation.state.std': np.asarray(self.state_std, np.float32),
                'action.mean': np.asarray(self.action_mean, np.float32),
                'action.std': np.asarray(self.action_std, np.float32)}


def as_norm_stats(stats: Any, state_dim: int, action_dim: int) -> NormStats:
    """Coerce statistics into :class:`NormStats` and check their sizes.

    Accepts a :class:`NormStats`; ``None`` (identity); LeRobot-style nested dicts
    ``{'observation.state': {'mean', 'std'}, 'action': {...}}``; flat LeRobot tensor dicts
    (``observation.state.mean`` ...); openpi dicts ``{'state': ..., 'actions': ...}``
    (optionally under ``norm_stats``).

    :raises ValueError: unknown form or wrong sizes.
    """
    if stats is None:
        out = NormStats.identity(state_dim, action_dim)
    elif isinstance(stats, NormStats):
        out = stats
    elif isinstance(stats, dict):
        data = stats.get('norm_stats', stats)
        if 'observation.state.mean' in data:
            out = _from_tensors({k: np.asarray(v) for k, v in data.items()}, 'dict')
        else:
            state = data.get('observation.state', data.get('state'))
            action = data.get('action', data.get('actions'))
            if not isinstance(state, dict) or not isinstance(action, dict):
                raise ValueError('normalization stats dict needs observation.state/state and '
                                 f'action/actions entries, got keys {sorted(data)}')
            out = NormStats(*(np.asarray(v, np.float64).reshape(-1) for v in (
                state['mean'], state['std'], action['mean'], action['std'])), source='dict')
    else:
        raise ValueError(f'cannot use {type(stats).__name__} as normalization statistics')
    out.check(state_dim, action_dim)
    return out


def _from_tensors(values: Dict[str, np.ndarray], source: str) -> NormStats:
    keys = ('observation.state.mean', 'observation.state.std', 'action.mean', 'action.std')
    missing = [k for k in keys if k not in values]
    if missing:
        raise ValueError(f'{source}: missing normalization tensors {missing}')
    return NormStats(*(np.asarray(values[k], dtype=np.float64).reshape(-1) for k in keys),
                     source=source)


def _lerobot_stats_file(stats_dir: str) -> Optional[str]:
    pre = os.path.join(stats_dir, PREPROCESSOR_JSON)
    if os.path.isfile(pre):
        with open(pre, 'r', encoding='utf-8') as f:
            steps = json.load(f).get('steps', [])
        for step in steps:
            if 'normalizer' in step.get('registry_name', '') and step.get('state_file'):
                path = os.path.join(stats_dir, step['state_file'])
                if not os.path.isfile(path):
                    raise FileNotFoundError(f'{pre} names {step["state_file"]}, which is missing')
                return path
    found = sorted(glob.glob(os.path.join(stats_dir, 'policy_preprocessor*normalizer*'
                                                     '.safetensors')))
    found += sorted(glob.glob(os.path.join(stats_dir, 'policy_postprocessor*normalizer*'
                                                      '.safetensors')))
    return found[0] if found else None


def load_lerobot_stats(path: str) -> NormStats:
    """Read a LeRobot ``*_normalizer_processor.safetensors`` file."""
    from safetensors.numpy import load_file

    return _from_tensors(load_file(path), path)


def load_openpi_stats(path: str) -> NormStats:
    """Read an openpi ``norm_stats.json`` (``{"norm_stats": {"state": ..., "actions": ...}}``)."""
    with open(path, 'r', encoding='utf-8') as f:
        data = json.load(f)
    stats = data.get('norm_stats', data)
    try:
        state, actions = stats['state'], stats['actions']
        return NormStats(np.asarray(state['mean'], np.float64), np.asarray(state['std'],
                                                                           np.float64),
                         np.asarray(actions['mean'], np.float64),
                         np.asarray(actions['std'], np.float64), source=path)
    except (KeyError, TypeError) as exc:
        raise ValueError(f'{path}: not an openpi norm_stats.json (missing {exc})') from None


def load_norm_stats(stats_dir: str, state_dim: Optional[int] = None,
                    action_dim: Optional[int] = None) -> NormStats:
    """Find and read the normalization statistics of a checkpoint directory.

    Looks for LeRobot processor files first, then openpi ``assets/*/norm_stats.json`` (or a
    ``norm_stats.json`` in the directory itself). openpi pads its statistics to the model's
    width; they are cut to ``state_dim`` / ``action_dim`` when given.

    :param stats_dir: the (finetuned) checkpoint directory, or a stats file.
    :param state_dim: expected state length (checked).
    :param action_dim: expected action length (checked).
    :return: the statistics; ``source`` names the file.
    :raises FileNotFoundError: no statistics found.
    :raises ValueError: malformed or wrong-sized statistics.
    """
    if os.path.isfile(stats_dir):
        stats = (load_openpi_stats(stats_dir) if stats_dir.endswith('.json')
                 else load_lerobot_stats(stats_dir))
    else:
        path = _lerobot_stats_file(stats_dir)
        if path is not None:
            stats = load_lerobot_stats(path)
        else:
            found = sorted(glob.glob(os.path.join(stats_dir, 'assets', '*', 'norm_stats.json')))
            found += sorted(glob.glob(os.path.join(stats_dir, 'norm_stats.json')))
            if not found:
                raise FileNotFoundError(
                    f'no normalization statistics in {stats_dir!r}: expected LeRobot '
                    f'{PREPROCESSOR_JSON} + *_normalizer_processor.safetensors or openpi '
                    'assets/<asset_id>/norm_stats.json')
            if len(found) > 1:
                LOG.warning('several norm_stats.json in %s; using %s', stats_dir, found[0])
            stats = load_openpi_stats(found[0])
            if state_dim is not None and stats.state_mean.shape[0] > state_dim:
                stats.state_mean = stats.state_mean[:state_dim]
                stats.state_std = stats.state_std[:state_dim]
            if action_dim is not None and stats.action_mean.shape[0] > action_dim:
                stats.action_mean = stats.action_mean[:action_dim]
                stats.action_std = stats.action_std[:action_dim]
    if state_dim is not None and action_dim is not None:
        stats.check(state_dim, action_dim)
    LOG.info('normalization stats: %s', stats.source)
    return stats


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB image to ``(height, width)`` keeping its aspect, padding with black.

    :param image: ``(H, W, 3)`` ``uint8``.
    :return: ``(height, width, 3)`` ``uint8``.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    scale = min(height / h, width / w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    if (nh, nw) == (height, width):
        return resized
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[:nh, :nw] = resized
    return out


class Pi0Processor:
    """Turns :class:`Observation` batches into π0 model inputs and model outputs into actions.

    :param spec: the model spec.
    :param tokenizer: the text tokenizer.
    :param stats: normalization statistics (checked against the spec's sizes).
    """

    def __init__(self, spec: Pi0Spec, tokenizer: TextTokenizer, stats: NormStats):
        stats.check(spec.state_dim, spec.action_dim)
        self.spec = spec
        self.tokenizer = tokenizer
        self.stats = stats
        self._state_mean = torch.as_tensor(stats.state_mean, dtype=torch.float32)
        self._state_std = torch.as_tensor(stats.state_std, dtype=torch.float32)
        self._action_mean = torch.as_tensor(stats.action_mean, dtype=torch.float32)
        self._action_std = torch.as_tensor(stats.action_std, dtype=torch.float32)
        self._prompt_cache: Dict[str, List[int]] = {}

    # -- text ---------------------------------------------------------------------------------
    def text_ids(self, instruction: str) -> List[int]:
        """Ids of bos + instruction + newline, truncated to ``tokenizer_max_length``."""
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            image_id = self.spec.image_token_id
            body = [i for i in self.tokenizer.encode(f'{instruction}\n') if i != image_id]
            ids = ([self.tokenizer.bos_token_id] + body)[:self.spec.tokenizer_max_length]
            if len(self._prompt_cache) < 256:
                self._prompt_cache[instruction] = ids
        return ids

    def tokenize(self, instructions: Sequence[str]) -> Dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` ``(B, n_img + tokenizer_max_length)``."""
        n_img = self.spec.image_seq_length * len(self.spec.camera_names)
        max_len = self.spec.tokenizer_max_length
        ids = torch.full((len(instructions), n_img + max_len), self.tokenizer.pad_token_id,
                         dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:, :n_img] = self.spec.image_token_id
        mask[:, :n_img] = 1
        for row, text in enumerate(instructions):
            text_ids = self.text_ids(text)
            ids[row, n_img:n_img + len(text_ids)] = torch.as_tensor(text_ids, dtype=torch.long)
            mask[row, n_img:n_img + len(text_ids)] = 1
        return {'input_ids': ids, 'attention_mask': mask}

    # -- images -------------------------------------------------------------------------------
    def image_array(self, images: Dict[str, np.ndarray]) -> np.ndarray:
        """Check and resize one observation's images: ``(n_cams, h, w, 3)`` ``uint8``."""
        if not isinstance(images, dict):
            raise ValueError(f'observation images must be a dict camera -> image, '
                             f'got {type(images).__name__}')
        missing = [c for c in self.spec.camera_names if c not in images]
        if missing:
            raise ValueError(f'missing camera image(s) {missing}; the model expects '
                             f'{self.spec.camera_names}, got {sorted(images)}')
        height, width = self.spec.image_size
        out = np.empty((len(self.spec.camera_names), height, width, 3), dtype=np.uint8)
        for i, name in enumerate(self.spec.camera_names):
            img = images[name]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                raise ValueError(f'camera {name!r}: image must be a uint8 numpy array, got '
                                 f'{getattr(img, "dtype", type(img).__name__)}')
            if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
                raise ValueError(f'camera {name!r}: image must be (H, W, 3) RGB, got shape '
                                 f'{img.shape}')
            out[i] = resize_image(img, height, width)
        return out

    def pixel_values(self, batch: Sequence[Dict[str, np.ndarray]]) -> torch.Tensor:
        """``(B, n_cams, 3, h, w)`` float32 in [-1, 1]."""
        arr = np.stack([self.image_array(images) for images in batch])
        pix = torch.from_numpy(arr).permute(0, 1, 4, 2, 3).to(torch.float32)
        return pix.mul_(2.0 / 255.0).sub_(1.0)

    # -- state / actions ----------------------------------------------------------------------
    def state(self, states: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalized, zero-padded states ``(B, max_state_dim)``."""
        rows = []
        for s in states:
            s = np.asarray(s, dtype=np.float64).reshape(-1) if s is not None else None
            if s is None or s.shape[0] != self.spec.state_dim:
                raise ValueError(f'state must have {self.spec.state_dim} values, got '
                                 f'{None if s is None else s.shape[0]}')
            if not np.all(np.isfinite(s)):
                raise ValueError('state has non-finite values')
            rows.append(s)
        st = torch.as_tensor(np.stack(rows), dtype=torch.float32)
        st = (st - self._state_mean) / (self._state_std + EPS)
        return torch.nn.functional.pad(st, (0, self.spec.max_state_dim - self.spec.state_dim))

    def normalize_actions(self, actions: np.ndarray) -> torch.Tensor:
        """Normalized, zero-padded action chunks ``(B, H, max_action_dim)`` from ``(B, H, D)``."""
        act = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        if act.ndim != 3 or act.shape[1:] != (self.spec.chunk_size, self.spec.action_dim):
            raise ValueError(f'action chunks must be (B, {self.spec.chunk_size}, '
                             f'{self.spec.action_dim}), got {tuple(act.shape)}')
        act = (act - self._action_mean) / (self._action_std + EPS)
        return torch.nn.functional.pad(act, (0, self.spec.max_action_dim - self.spec.action_dim))

    def unnormalize_actions(self, model_actions: torch.Tensor) -> np.ndarray:
        """Model output ``(B, H, max_action_dim)`` -> ``(B, H, action_dim)`` float64."""
        act = model_actions[..., :self.spec.action_dim].detach().to('cpu', torch.float32)
        act = act * (self._action_std + EPS) + self._action_mean
        return act.numpy().astype(np.float64)

    # -- all together -------------------------------------------------------------------------
    def __call__(self, observations: Sequence[Observation]) -> Dict[str, torch.Tensor]:
        """Model inputs for a batch of observations (CPU tensors, float32)."""
        if not observations:
            raise ValueError('empty observation batch')
        for obs in observations:
            if not isinstance(obs, Observation):
                raise ValueError(f'expected Observation, got {type(obs).__name__}')
            if not isinstance(obs.instruction, str):
                raise ValueError(f'instruction must be a str, got {type(obs.instruction)}')
        inputs = self.tokenize([o.instruction for o in observations])
        inputs['pixel_values'] = self.pixel_values([o.images for o in observations])
        inputs['pixel_attention_mask'] = torch.ones(len(observations),
                                                    len(self.spec.camera_names), dtype=torch.bool)
        inputs['state'] = self.state([o.state for o in observations])
        return inputs
