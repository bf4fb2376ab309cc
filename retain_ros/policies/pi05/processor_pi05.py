r"""π0.5 pre/post-processing (LeRobot 0.4.4 / openpi order).

1. state: normalized with the checkpoint's mode (QUANTILES in LeRobot π0.5), zero-padded to
   ``max_state_dim``, discretized into 256 bins: ``digitize(s, linspace(-1, 1, 257)[:-1]) - 1``
   (padding -> 128; values outside [-1, 1] give -1 or 255, as in LeRobot);
2. prompt: ``Task: {task}, State: {bins separated by spaces};\nAction: `` where ``task`` is the
   instruction stripped, with ``_`` and ``\n`` replaced by spaces;
3. text: bos + prompt, truncated / right-padded to ``tokenizer_max_length`` (200);
4. images: as π0 (:mod:`retain_ros.policies.images`, LeRobot pads -3 quirk for LeRobot
   checkpoints); the prefix is image tokens of every camera then the text, no state token;
   an empty camera slot (``Observation.empty_cameras``) is all -1 with its image tokens masked
   out of the prefix (``attention_mask`` 0: hidden, not counted in the positions), as LeRobot;
5. actions: the first ``action_dim`` dims of the sampler output, unnormalized.
"""
from __future__ import annotations

from typing import Dict
from typing import List
from typing import Sequence

import numpy as np
import torch

from retain_ros.policies.base import check_observations
from retain_ros.policies.base import Observation
from retain_ros.policies.pi0.processor_pi0 import Pi0Processor
from retain_ros.policies.pi05.configuration_pi05 import STATE_BINS

#: Left bin edges of the state discretization (openpi ``PaligemmaTokenizer``).
BIN_EDGES = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Discretize a normalized, padded state ``(B, D)`` into int64 bins ``(B, D)``."""
    return (np.digitize(np.asarray(state), bins=BIN_EDGES) - 1).astype(np.int64)


def pi05_prompt(instruction: str, bins: Sequence[int]) -> str:
    """Return the LeRobot / openpi π0.5 prompt with the discretized state."""
    task = instruction.strip().replace('_', ' ').replace('\n', ' ')
    return f'Task: {task}, State: {" ".join(str(int(b)) for b in bins)};\nAction: '


class Pi05Processor(Pi0Processor):
    """Observations -> π0.5 model inputs; model outputs -> actions in robot units."""

    def prompts(self, observations: Sequence[Observation]) -> List[str]:
        """Return the full prompt of each observation of a batch, state bins included."""
        bins = discretize_state(self.state([o.state for o in observations]).numpy())
        return [pi05_prompt(o.instruction, b) for o, b in zip(observations, bins)]

    def __call__(self, observations: Sequence[Observation]) -> Dict[str, torch.Tensor]:
        """Return the model inputs of a batch.

        ``input_ids`` / ``text_mask`` ``(B, max_len)``, ``attention_mask`` ``(B, n_img +
        max_len)`` (the prefix; 0 on empty slots' image tokens), ``pixel_values``,
        ``image_masks`` ``(B, n_cams)``, ``state`` (normalized, padded), ``state_bins``.
        """
        check_observations(observations)
        state = self.state([o.state for o in observations])
        bins = discretize_state(state.numpy())
        max_len = self.spec.tokenizer_max_length
        ids = torch.full((len(observations), max_len), self.tokenizer.pad_token_id,
                         dtype=torch.long)
        text_mask = torch.zeros_like(ids)
        for row, (obs, b) in enumerate(zip(observations, bins)):
            body = self.tokenizer.encode(pi05_prompt(obs.instruction, b))
            text = ([self.tokenizer.bos_token_id] + body)[:max_len]
            ids[row, :len(text)] = torch.as_tensor(text, dtype=torch.long)
            text_mask[row, :len(text)] = 1
        pixels, masks = self.camera_inputs([o.images for o in observations],
                                           [o.empty_cameras for o in observations])
        prefix_mask = torch.cat([self.image_token_mask(masks), text_mask], dim=1)
        return {'input_ids': ids, 'text_mask': text_mask, 'attention_mask': prefix_mask,
                'pixel_values': pixels, 'image_masks': masks,
                'state': state, 'state_bins': torch.from_numpy(bins)}
