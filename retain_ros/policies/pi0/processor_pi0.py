"""π0 pre/post-processing: the same steps as transformers ``PI0Processor`` / PaliGemma.

- prompt: ``<image>`` × (image tokens per camera × cameras), then bos + instruction + newline
  as text tokens, right-padded (or truncated) to ``tokenizer_max_length`` text tokens;
  attention mask 1 on images and real text tokens, 0 on padding;
- images: RGB ``uint8`` ``(H, W, 3)``, ``x / 255``, resized with openpi's resize-with-pad to the
  model's image size when it differs (aspect kept, centred padding), ``x * 2 - 1``, CHW; LeRobot
  checkpoints pad before the mapping (pads are -3, LeRobot 0.4.4), others after (pads -1); see
  :mod:`retain_ros.policies.images`;
- empty camera slots (``Observation.empty_cameras``): an all -1 image with image mask False, as
  LeRobot / openpi; every slot keeps its image tokens in ``input_ids`` (so
  ``pixel_attention_mask``, which transformers uses only to route the image tokens to the
  cameras that HAVE tokens, stays all True) and the slot's tokens get ``attention_mask`` 0: hidden
  from every token (prefix and expert) and skipped by the ``cumsum - 1`` position ids, which is
  exactly LeRobot's ``pad_masks`` for a False ``img_mask``. ``image_masks`` ``(B, n_cams)`` is
  returned too;
- state: normalized with the checkpoint's mode (:mod:`retain_ros.policies.normalize`; LeRobot
  π0: MEAN_STD ``(x - mean) / (std + 1e-8)``), zero-padded to ``max_state_dim``;
- actions: the model's (normalized, padded) output cut to ``action_dim`` and unnormalized with
  the same statistics; training targets are normalized the same way.

Normalization statistics come from the finetuned checkpoint (LeRobot processor files, a
transformers ``processor_config.json``, or openpi ``assets/<asset_id>/norm_stats.json``);
:func:`~retain_ros.policies.norm_stats_files.load_norm_stats` says which file it read.
"""
from __future__ import annotations

import logging
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import cv2
import numpy as np
import torch

from retain_ros.policies.base import check_observations
from retain_ros.policies.base import Observation
from retain_ros.policies.images import pi_camera_inputs
from retain_ros.policies.normalize import normalized_padded_states
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec
from retain_ros.policies.pi0.tokenizer_pi0 import TextTokenizer
from retain_ros.policies.prompts import newline_terminated

LOG = logging.getLogger(__name__)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 RGB image keeping its aspect, padding black (OpenCV; demo data sets only).

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
        self._prompt_cache: Dict[str, List[int]] = {}

    # -- text ---------------------------------------------------------------------------------
    def text_ids(self, instruction: str) -> List[int]:
        """Ids of bos + instruction + newline (added only when missing), truncated.

        The prompt rule is :func:`~retain_ros.policies.prompts.newline_terminated`; the ids are
        cut to ``tokenizer_max_length``.
        """
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            image_id = self.spec.image_token_id
            body = [i for i in self.tokenizer.encode(newline_terminated(instruction))
                    if i != image_id]
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
    def camera_inputs(self, batch: Sequence[Dict[str, np.ndarray]],
                      empty: Optional[Sequence[Sequence[str]]] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(B, n_cams, 3, h, w)`` float32 images and ``(B, n_cams)`` bool image masks.

        :param empty: per observation, its ``empty_cameras`` (all -1, mask False).
        """
        height, width = self.spec.image_size
        return pi_camera_inputs(batch, self.spec.camera_names, height, width,
                                self.spec.image_pad_order, empty)

    def pixel_values(self, batch: Sequence[Dict[str, np.ndarray]],
                     empty: Optional[Sequence[Sequence[str]]] = None) -> torch.Tensor:
        """``(B, n_cams, 3, h, w)`` float32 (LeRobot / openpi resize-with-pad, [-1, 1] + pads)."""
        return self.camera_inputs(batch, empty)[0]

    def image_token_mask(self, image_masks: torch.Tensor) -> torch.Tensor:
        """``(B, n_cams)`` image masks -> ``(B, n_cams * image_seq_length)`` long token mask."""
        return image_masks.to(torch.long).repeat_interleave(self.spec.image_seq_length, dim=1)

    # -- state / actions ----------------------------------------------------------------------
    def state(self, states: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalize and zero-pad states to ``(B, max_state_dim)``."""
        return normalized_padded_states(self.stats, states, self.spec.state_dim,
                                        self.spec.max_state_dim)

    def normalize_actions(self, actions: np.ndarray) -> torch.Tensor:
        """Normalize and zero-pad action chunks ``(B, H, D)`` to ``(B, H, max_action_dim)``."""
        act = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        if act.ndim != 3 or act.shape[1:] != (self.spec.chunk_size, self.spec.action_dim):
            raise ValueError(f'action chunks must be (B, {self.spec.chunk_size}, '
                             f'{self.spec.action_dim}), got {tuple(act.shape)}')
        act = self.stats.normalize_actions(act)
        return torch.nn.functional.pad(act, (0, self.spec.max_action_dim - self.spec.action_dim))

    def unnormalize_actions(self, model_actions: torch.Tensor) -> np.ndarray:
        """Model output ``(B, H, max_action_dim)`` -> ``(B, H, action_dim)`` float64."""
        act = model_actions[..., :self.spec.action_dim].detach().to('cpu', torch.float32)
        act = self.stats.unnormalize_actions(act)
        return act.numpy().astype(np.float64)

    # -- all together -------------------------------------------------------------------------
    def __call__(self, observations: Sequence[Observation]) -> Dict[str, torch.Tensor]:
        """Model inputs for a batch of observations (CPU tensors, float32).

        ``input_ids`` / ``attention_mask`` (0 on padding and on empty slots' image tokens),
        ``pixel_values``, ``pixel_attention_mask`` (all True), ``image_masks``, ``state``.
        """
        check_observations(observations)
        inputs = self.tokenize([o.instruction for o in observations])
        pixels, masks = self.camera_inputs([o.images for o in observations],
                                           [o.empty_cameras for o in observations])
        n_img = self.spec.image_seq_length * len(self.spec.camera_names)
        inputs['attention_mask'][:, :n_img] = self.image_token_mask(masks)
        inputs['pixel_values'] = pixels
        inputs['pixel_attention_mask'] = torch.ones(len(observations),
                                                    len(self.spec.camera_names), dtype=torch.bool)
        inputs['image_masks'] = masks
        inputs['state'] = self.state([o.state for o in observations])
        return inputs
