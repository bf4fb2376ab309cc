r"""π0.5 configuration: a LeRobot ``"type": "pi05"`` ``config.json`` -> :class:`Pi05Spec`.

π0.5 has π0's PaliGemma (SigLIP + Gemma) and a Gemma action expert of the same variant names, so
the sizes come from :mod:`retain_ros.policies.pi0.configuration_pi0` (variant tables, or the
widths read from ``model.safetensors`` by :mod:`retain_ros.policies.pi0.checkpoint_config_pi0`
when they disagree, as in tiny test checkpoints that keep ``gemma_2b`` / ``gemma_300m``). The
differences are in the model and the processor:

- the expert's RMSNorms are adaptive (``dense: width -> 3 * width`` = scale, shift, gate,
  conditioned on the flow-time embedding) and its residuals are gated;
- no ``state_proj``: the normalized state is discretized into 256 bins and written into the
  prompt, ``Task: {task}, State: {bins};\nAction: ``;
- ``tokenizer_max_length`` defaults to 200; normalization is QUANTILES in LeRobot (read from the
  checkpoint anyway) and in openpi (``norm_stats.json`` without a mode).
"""
from __future__ import annotations

import copy
import logging
from typing import Any
from typing import Dict

from retain_ros.policies.pi0.checkpoint_config_pi0 import read_config
from retain_ros.policies.pi0.checkpoint_config_pi0 import spec_from_lerobot
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec

LOG = logging.getLogger(__name__)

#: π0.5 default text length (LeRobot / openpi ``max_token_len``).
DEFAULT_TOKENIZER_MAX_LENGTH = 200
#: State bins written into the prompt.
STATE_BINS = 256
#: Spec of a π0.5 (same fields as π0's; ``hf_config`` holds the sizes in a ``PI0Config``).
Pi05Spec = Pi0Spec


def pi05_config_from_dict(cfg: Dict[str, Any], path: str = '<dict>') -> Pi05Spec:
    """Build a :class:`Pi05Spec` from a LeRobot π0.5 policy config dict.

    :param cfg: the parsed ``config.json`` (``"type": "pi05"``).
    :param path: its path (for widths from the weights beside it, and messages).
    :raises ValueError: not a π0.5 config, or inconsistent sizes.
    """
    if cfg.get('type') != 'pi05':
        raise ValueError(f'{path}: not a LeRobot π0.5 config ("type": "pi05"), '
                         f'type={cfg.get("type")!r}')
    cfg = copy.deepcopy(cfg)
    cfg.setdefault('tokenizer_max_length', DEFAULT_TOKENIZER_MAX_LENGTH)
    return spec_from_lerobot(path, cfg)


def load_pi05_config(config_dir: str) -> Pi05Spec:
    """Read ``<config_dir>/config.json`` of a π0.5 checkpoint.

    :raises FileNotFoundError: no config.json.
    :raises ValueError: not a π0.5 config.
    """
    path, cfg = read_config(config_dir)
    spec = pi05_config_from_dict(cfg, path)
    LOG.info('π0.5 config %s: cameras=%s state_dim=%d action_dim=%d chunk=%d image=%s '
             'text hidden=%d expert hidden=%d', path, spec.camera_names, spec.state_dim,
             spec.action_dim, spec.chunk_size, spec.image_size,
             spec.hf_config.vlm_config.text_config.hidden_size,
             spec.hf_config.dit_config.hidden_size)
    return spec
