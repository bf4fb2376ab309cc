r"""SmolVLA pre/post-processing, as LeRobot 0.4.4's SmolVLA pipelines and ``prepare_*`` do.

- prompt: the instruction with ``\n`` appended (unless it ends with one); tokenized with the
  checkpoint's tokenizer and its own special-token rule (the SmolVLM tokenizers add no BOS),
  ``padding='longest'`` (the pipeline's ``padding`` / ``max_length`` / ``padding_side`` /
  ``truncation`` when ``policy_preprocessor.json`` has a tokenizer step), right side, truncated
  to ``tokenizer_max_length``;
- images: RGB ``uint8`` ``(H, W, 3)`` -> float ``/ 255`` -> resize-with-pad to
  ``resize_imgs_with_padding`` keeping the aspect (``ratio = max(W / w, H / h)``, size
  ``int(H / ratio) x int(W / ratio)``, bilinear, ``align_corners=False``, no antialias, no clamp)
  with the padding (value 0) on the LEFT and TOP only -> ``x * 2 - 1`` (so padding is -1);
  ``empty_camera_*`` slots get an all -1 image that the attention mask hides;
- empty camera slots (``Observation.empty_cameras``, and the ``empty_camera_*`` features), as
  LeRobot's ``prepare_images``, whose batch then lacks those image features: per observation the
  present cameras come first (model order), then ``min(missing, config empty_cameras)`` slots of
  all -1 with image mask False; further missing slots are dropped (``slot_masks`` False: with
  ``add_image_special_tokens`` their special tokens are hidden too; without, a masked and a
  dropped slot are the same). Rows with fewer present cameras are padded with dropped slots;
- state: the checkpoint's normalization (:mod:`retain_ros.policies.normalize`, MEAN_STD for the
  usual SmolVLA), zero-padded to ``max_state_dim``;
- actions: the model's output cut to ``action_dim`` and unnormalized.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from retain_ros.policies.base import check_observations
from retain_ros.policies.base import Observation
from retain_ros.policies.images import camera_images
from retain_ros.policies.images import EMPTY_VALUE
from retain_ros.policies.images import to_unit_float
from retain_ros.policies.norm_stats_files import PREPROCESSOR_JSON
from retain_ros.policies.normalize import normalized_padded_states
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.prompts import newline_terminated
from retain_ros.policies.smolvla.configuration_smolvla import EMPTY_CAMERA_PREFIX
from retain_ros.policies.smolvla.configuration_smolvla import SmolVLASpec

LOG = logging.getLogger(__name__)

TOKENIZER_DIR = 'tokenizer'
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'tokenizer.model')


def _has_tokenizer(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f))
                                       for f in _TOKENIZER_FILES)


def resolve_tokenizer_path(checkpoint_dir: str, spec: SmolVLASpec,
                           tokenizer_path: str = '') -> Tuple[str, str]:
    """Where the tokenizer comes from: ``(path, why)``.

    Order: ``tokenizer_path``; the pipeline's ``tokenizer_name`` when it is a local folder
    (relative names against the checkpoint); the checkpoint's VLM folder; ``<ckpt>/tokenizer``;
    ``<ckpt>``.

    :raises FileNotFoundError: none holds tokenizer files.
    """
    if tokenizer_path:
        if not os.path.exists(tokenizer_path):
            raise FileNotFoundError(f'tokenizer_path {tokenizer_path!r} does not exist')
        return tokenizer_path, 'tokenizer_path'
    name = str(_tokenizer_step(checkpoint_dir).get('tokenizer_name') or '')
    candidates = []
    if name:
        candidates.append((os.path.join(checkpoint_dir, os.path.expanduser(name)),
                           f'{PREPROCESSOR_JSON} tokenizer_name {name!r}'))
    candidates += [(spec.vlm_dir, 'the VLM folder'),
                   (os.path.join(checkpoint_dir, TOKENIZER_DIR), '<checkpoint>/tokenizer'),
                   (checkpoint_dir, 'the checkpoint folder')]
    for path, why in candidates:
        if path and _has_tokenizer(path):
            return path, why
    raise FileNotFoundError(
        f'no SmolVLA tokenizer: none of {[c for c, _ in candidates if c]} holds tokenizer '
        'files. Pass tokenizer_path = a local copy of the VLM tokenizer (for SmolVLA base '
        'HuggingFaceTB/SmolVLM2-500M-Video-Instruct); nothing is downloaded at run time')


def load_tokenizer(path: str) -> Any:
    """Load a transformers tokenizer from a local folder (never downloads)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _tokenizer_step(checkpoint_dir: str) -> Dict[str, Any]:
    """Return the ``config`` of the pre-processor's ``tokenizer_processor`` step ({} if none)."""
    pre = os.path.join(checkpoint_dir, PREPROCESSOR_JSON)
    if not os.path.isfile(pre):
        return {}
    with open(pre, 'r', encoding='utf-8') as f:
        steps = json.load(f).get('steps', [])
    for step in steps:
        if step.get('registry_name') == 'tokenizer_processor':
            return dict(step.get('config') or {})
    return {}


def tokenizer_options(checkpoint_dir: str, spec: SmolVLASpec) -> Dict[str, Any]:
    """Tokenizer call options: the pipeline's tokenizer step, else the policy config."""
    options = {'max_length': spec.tokenizer_max_length, 'padding': spec.pad_language_to,
               'padding_side': 'right', 'truncation': True}
    config = _tokenizer_step(checkpoint_dir)
    for key in options:
        if config.get(key) is not None:
            options[key] = config[key]
    return options


def resize_with_pad_left_top(images: torch.Tensor, width: int, height: int,
                             pad_value: float = 0.0) -> torch.Tensor:
    """Apply LeRobot SmolVLA's resize-with-pad to ``(B, C, H, W)`` float images.

    The image is scaled by ``1 / max(W / width, H / height)`` (sizes truncated to int), bilinear
    (``align_corners=False``, no antialias), then padded with ``pad_value`` on the left and top.
    """
    if images.ndim != 4:
        raise ValueError(f'(B, C, H, W) images expected, got shape {tuple(images.shape)}')
    cur_h, cur_w = int(images.shape[2]), int(images.shape[3])
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    out = F.interpolate(images, size=(new_h, new_w), mode='bilinear', align_corners=False)
    pad_h, pad_w = max(0, height - new_h), max(0, width - new_w)
    return F.pad(out, (pad_w, 0, pad_h, 0), value=pad_value)


class SmolVLAProcessor:
    """Turns :class:`Observation` batches into SmolVLA inputs and model outputs into actions.

    :param spec: the model spec.
    :param tokenizer: a transformers tokenizer.
    :param stats: normalization statistics (checked against the spec's widths).
    :param options: tokenizer call options (:func:`tokenizer_options`).
    """

    def __init__(self, spec: SmolVLASpec, tokenizer: Any, stats: NormStats,
                 options: Optional[Dict[str, Any]] = None):
        stats.check(spec.state_dim, spec.action_dim)
        self.spec = spec
        self.tokenizer = tokenizer
        self.stats = stats
        self.options = dict(options or {'max_length': spec.tokenizer_max_length,
                                        'padding': spec.pad_language_to,
                                        'padding_side': 'right', 'truncation': True})
        if getattr(tokenizer, 'pad_token_id', None) is None and self.options['padding']:
            raise ValueError('the SmolVLA tokenizer has no pad token; it cannot pad a batch')

    # -- text ---------------------------------------------------------------------------------
    def tokenize(self, instructions: Sequence[str]) -> Dict[str, torch.Tensor]:
        """``lang_tokens`` (int64) and ``lang_masks`` (bool), ``(B, L)``."""
        out = self.tokenizer([newline_terminated(t) for t in instructions],
                             max_length=int(self.options['max_length']),
                             truncation=bool(self.options['truncation']),
                             padding=self.options['padding'],
                             padding_side=self.options['padding_side'], return_tensors='pt')
        return {'lang_tokens': out['input_ids'].to(torch.long),
                'lang_masks': out['attention_mask'].to(torch.bool)}

    def special_token_id(self, attribute: str, token: str) -> int:
        """Id of an image special token (``fake_image_token`` / ``global_image_token``)."""
        value = getattr(self.tokenizer, f'{attribute}_id', None)
        if isinstance(value, int):
            return value
        value = self.tokenizer.convert_tokens_to_ids(getattr(self.tokenizer, attribute, token))
        if value is None or value == getattr(self.tokenizer, 'unk_token_id', -1):
            raise ValueError(f'the SmolVLA tokenizer has no {token} token '
                             '(add_image_special_tokens needs it)')
        return int(value)

    # -- images -------------------------------------------------------------------------------
    def vision_inputs(self, batch: Sequence[Dict[str, np.ndarray]],
                      device: Optional[torch.device] = None,
                      empty: Optional[Sequence[Sequence[str]]] = None
                      ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per camera slot: ``(B, 3, h, w)`` float32 images in [-1, 1] and ``(B,)`` bool masks.

        Without empty cameras: the real cameras (in :attr:`SmolVLASpec.camera_names` order),
        then the ``empty_camera_*`` slots (all -1, mask False). See :meth:`camera_slots`.
        """
        images, masks, _ = self.camera_slots(batch, device, empty)
        return images, masks

    def empty_camera_names(self) -> List[str]:
        """Names of the checkpoint's ``empty_camera_*`` slots (always empty)."""
        return [f'{EMPTY_CAMERA_PREFIX}{i}' for i in range(self.spec.empty_cameras)]

    def camera_slots(self, batch: Sequence[Dict[str, np.ndarray]],
                     device: Optional[torch.device] = None,
                     empty: Optional[Sequence[Sequence[str]]] = None
                     ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Images, image masks and slot masks per slot (``len(camera_names) + empty_cameras``).

        Row ``b``: its present cameras in model order (mask True), then
        ``min(n_missing, config empty_cameras)`` all -1 slots (mask False), then dropped slots
        (both masks False), where ``n_missing`` counts its empty named slots and the
        ``empty_camera_*`` features (LeRobot ``prepare_images``).

        :param empty: per observation, its ``empty_cameras``.
        :raises ValueError: bad images / ``empty_cameras`` (named), or slot sizes that differ
            with no resize.
        """
        names = self.spec.camera_names
        rows = len(batch)
        also = self.empty_camera_names()
        present: List[List[int]] = []
        per_cam: List[List[Tuple[int, torch.Tensor]]] = [[] for _ in names]
        for b, images in enumerate(batch):
            imgs = camera_images(images, names, empty[b] if empty is not None else (), also)
            present.append([i for i, img in enumerate(imgs) if img is not None])
            for i in present[-1]:
                per_cam[i].append((b, to_unit_float(imgs[i]).permute(2, 0, 1)))
        done: List[Dict[int, torch.Tensor]] = [
            self._camera_tensors(name, cam, device) for name, cam in zip(names, per_cam)]
        cap = int(self.spec.policy_config.get('empty_cameras', 0) or 0)
        n_slots = len(names) + self.spec.empty_cameras
        slots: List[List[torch.Tensor]] = [[] for _ in range(n_slots)]
        img_masks = torch.zeros(n_slots, rows, dtype=torch.bool)
        slot_masks = torch.zeros(n_slots, rows, dtype=torch.bool)
        for b in range(rows):
            shown = [done[i][b] for i in present[b]]
            blank = torch.full_like(shown[-1], EMPTY_VALUE)
            n_missing = len(names) - len(shown) + self.spec.empty_cameras
            used = len(shown) + min(n_missing, cap)
            img_masks[:len(shown), b] = True
            slot_masks[:used, b] = True
            for s in range(n_slots):
                slots[s].append(shown[s] if s < len(shown) else blank)
        out = []
        for s, images in enumerate(slots):
            shapes = sorted({tuple(t.shape) for t in images})
            if len(shapes) > 1:
                raise ValueError(f'camera slot {s}: image sizes {shapes} differ across the '
                                 'batch and the model has no resize')
            out.append(torch.stack(images))
        dev = out[0].device
        return (out, [m.to(dev) for m in img_masks], [m.to(dev) for m in slot_masks])

    def _camera_tensors(self, name: str, cam: List[Tuple[int, torch.Tensor]],
                        device: Optional[torch.device]) -> Dict[int, torch.Tensor]:
        """Row -> ``(3, h, w)`` image in [-1, 1] of one camera (resize-with-pad, ``x * 2 - 1``)."""
        if not cam:
            return {}
        size = self.spec.resize_with_padding
        tensors = [t.to(device) if device is not None else t for _, t in cam]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1 and size is None:
            raise ValueError(f'camera {name!r}: images of one batch differ in size '
                             f'{sorted(shapes)} and the model has no resize')
        if len(shapes) == 1:
            x = torch.stack(tensors)
            if size is not None:
                x = resize_with_pad_left_top(x, size[0], size[1], 0.0)
        else:
            x = torch.cat([resize_with_pad_left_top(t[None], size[0], size[1], 0.0)
                           for t in tensors])
        x = x * 2.0 - 1.0
        return {b: x[j] for j, (b, _) in enumerate(cam)}

    # -- state / actions ----------------------------------------------------------------------
    def state(self, states: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalize and zero-pad states to ``(B, max_state_dim)`` float32."""
        return normalized_padded_states(self.stats, states, self.spec.state_dim,
                                        self.spec.max_state_dim)

    def normalize_actions(self, actions: Any) -> torch.Tensor:
        """Robot-unit actions ``(..., action_dim)`` -> model space ``(..., max_action_dim)``."""
        act = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        if act.ndim < 1 or act.shape[-1] != self.spec.action_dim:
            raise ValueError(f'actions must end with {self.spec.action_dim} values, got shape '
                             f'{tuple(act.shape)}')
        act = self.stats.normalize_actions(act)
        return F.pad(act, (0, self.spec.max_action_dim - self.spec.action_dim))

    def unnormalize_actions(self, model_actions: torch.Tensor) -> np.ndarray:
        """Model output ``(B, H, max_action_dim)`` -> ``(B, H, action_dim)`` float64."""
        act = model_actions[..., :self.spec.action_dim].detach().to('cpu', torch.float32)
        return self.stats.unnormalize_actions(act).numpy().astype(np.float64)

    # -- all together -------------------------------------------------------------------------
    def __call__(self, observations: Sequence[Observation],
                 device: Optional[torch.device] = None) -> Dict[str, Any]:
        """Return the model inputs of a batch, on ``device``.

        ``images`` / ``img_masks`` / ``slot_masks`` (lists per slot), ``lang_tokens``,
        ``lang_masks``, ``state``.
        """
        check_observations(observations)
        images, masks, slot_masks = self.camera_slots(
            [o.images for o in observations], device, [o.empty_cameras for o in observations])
        inputs: Dict[str, Any] = {'images': images, 'img_masks': masks,
                                  'slot_masks': slot_masks}
        inputs.update(self.tokenize([o.instruction for o in observations]))
        inputs['state'] = self.state([o.state for o in observations])
        if device is not None:
            for key in ('lang_tokens', 'lang_masks', 'state'):
                inputs[key] = inputs[key].to(device)
        return inputs
