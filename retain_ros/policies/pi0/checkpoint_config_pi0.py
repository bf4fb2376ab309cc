"""π0 / π0.5 config of a checkpoint directory: ``config.json``, reconciled with the weights.

:func:`load_pi0_config` reads ``<dir>/config.json`` and
:mod:`~retain_ros.policies.pi0.configuration_pi0` turns it into a
:class:`~retain_ros.policies.pi0.configuration_pi0.Pi0Spec`. When the directory also holds
``model.safetensors`` whose shapes disagree with the LeRobot config's named variant (e.g. a tiny
test checkpoint that keeps ``gemma_2b`` in its config), the widths are read from the weights'
header instead (:func:`widths_from_weights`) and a warning is logged.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
from typing import Any
from typing import Dict
from typing import Tuple

from retain_ros.policies.pi0.configuration_pi0 import LEROBOT_TYPES
from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec

LOG = logging.getLogger(__name__)


def siglip_heads(hidden: int) -> int:
    """Return the SigLIP attention heads of a tower ``hidden`` wide (weight shapes lack them).

    16 for the 1152-wide so400m tower of PaliGemma; head dim 64 (SigLIP base / large) for
    widths that are multiples of 64 from 256 up; head dim 16 for narrower test towers (32 -> 2).
    """
    if hidden == 1152:
        return 16
    if hidden >= 256 and hidden % 64 == 0:
        return hidden // 64
    return max(1, hidden // 16)


_LAYER_RE = re.compile(r'\.layers\.(\d+)\.')


def widths_from_weights(path: str) -> Dict[str, Any]:
    """Read π0 widths from a LeRobot / openpi π0 ``model.safetensors`` (no tensor data loaded).

    SigLIP heads cannot be read from shapes: see :func:`siglip_heads` (override with
    ``model_overrides.vision.num_attention_heads`` in ``config.json``).

    :param path: the safetensors file.
    :return: a ``model_overrides`` dict (``text``, ``dit``, ``vision``, ``vocab_size``,
        ``projection_dim``) plus ``image_resolution`` (int).
    :raises ValueError: the file is not a π0 checkpoint with LeRobot / openpi key names.
    """
    from safetensors import safe_open

    with safe_open(path, 'pt') as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    shapes = {k[len('model.'):] if k.startswith('model.paligemma_with_expert') else k: v
              for k, v in shapes.items()}
    pg = 'paligemma_with_expert.paligemma.'
    ex = 'paligemma_with_expert.gemma_expert.'
    lm = pg + 'model.language_model.'
    vt = pg + 'model.vision_tower.vision_model.'
    try:
        embed = shapes[pg + 'lm_head.weight']

        def gemma(prefix: str, hidden: int) -> Dict[str, int]:
            layers = {int(m.group(1)) for k in shapes if k.startswith(prefix)
                      for m in [_LAYER_RE.search(k[len(prefix) - 1:])] if m}
            head_dim = shapes[prefix + 'layers.0.self_attn.k_proj.weight'][0]
            return dict(hidden_size=hidden, num_hidden_layers=len(layers),
                        intermediate_size=shapes[prefix + 'layers.0.mlp.gate_proj.weight'][0],
                        num_attention_heads=shapes[prefix + 'layers.0.self_attn.q_proj.weight'][0]
                        // head_dim, num_key_value_heads=1, head_dim=head_dim)

        text = gemma(lm, embed[1])
        if ex + 'model.norm.weight' in shapes:
            dit_hidden = shapes[ex + 'model.norm.weight'][0]
        else:                       # pi0.5: adaRMS final norm, dense (3 * width, width)
            dit_hidden = shapes[ex + 'model.norm.dense.weight'][1]
        dit = gemma(ex + 'model.', dit_hidden)
        patch = shapes[vt + 'embeddings.patch_embedding.weight']
        n_pos = shapes[vt + 'embeddings.position_embedding.weight'][0]
        v_hidden = patch[0]
        v_layers = {int(m.group(1)) for k in shapes if k.startswith(vt)
                    for m in [_LAYER_RE.search(k)] if m}
        vision = dict(hidden_size=v_hidden, num_hidden_layers=len(v_layers),
                      intermediate_size=shapes[vt + 'encoder.layers.0.mlp.fc1.weight'][0],
                      num_attention_heads=siglip_heads(v_hidden),
                      patch_size=patch[-1])
        proj = shapes[pg + 'model.multi_modal_projector.linear.weight'][0]
    except KeyError as exc:
        raise ValueError(f'{path}: not a π0 checkpoint with LeRobot key names '
                         f'(missing {exc})') from None
    side = int(round(n_pos ** 0.5)) * int(patch[-1])
    return {'text': text, 'dit': dit, 'vision': vision, 'vocab_size': int(embed[0]),
            'projection_dim': int(proj), 'image_resolution': side}


def _reconcile_with_weights(cfg: Dict[str, Any], weights: str) -> Dict[str, Any]:
    """Use widths from ``weights`` where the LeRobot config's variants disagree with them."""
    try:
        found = widths_from_weights(weights)
    except ValueError as exc:
        LOG.debug('cannot read widths from %s: %s', weights, exc)
        return cfg
    side = found.pop('image_resolution')
    try:
        want = pi0_config_from_dict(cfg).hf_config
    except ValueError as exc:       # e.g. a tiny patch-16 tower under the name gemma_2b
        LOG.debug('config variants do not build (%s); using the weights', exc)
        same = False
    else:
        have = {'text': want.vlm_config.text_config, 'dit': want.dit_config,
                'vision': want.vlm_config.vision_config}
        same = all(int(getattr(have[part], k)) == int(v)
                   for part in have for k, v in found[part].items()
                   if not (part == 'vision' and k == 'num_attention_heads'))
        same = same and int(want.vlm_config.text_config.vocab_size) == found['vocab_size']
        same = same and int(want.vlm_config.vision_config.image_size) == side
    if same:
        return cfg
    LOG.warning('%s: widths in the weights differ from config variants %s / %s; '
                'using the widths read from the weights', weights,
                cfg.get('paligemma_variant'), cfg.get('action_expert_variant'))
    out = copy.deepcopy(cfg)
    over = dict(out.get('model_overrides') or {})
    for key, value in found.items():
        over.setdefault(key, value)
    out['model_overrides'] = over
    out['image_resolution'] = [side, side]
    return out


def read_config(config_dir: str) -> Tuple[str, Dict[str, Any]]:
    """``(path, parsed config.json)`` of a checkpoint directory (or the file itself)."""
    path = config_dir
    if os.path.isdir(path):
        path = os.path.join(path, 'config.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no config.json at {path}')
    with open(path, 'r', encoding='utf-8') as f:
        return path, json.load(f)


def spec_from_lerobot(path: str, cfg: Dict[str, Any]) -> Pi0Spec:
    """Build the spec of a π0 / π0.5 config dict, widths reconciled with ``model.safetensors``."""
    weights = os.path.join(os.path.dirname(path), 'model.safetensors')
    if cfg.get('type') in LEROBOT_TYPES and os.path.isfile(weights):
        cfg = _reconcile_with_weights(cfg, weights)
    return pi0_config_from_dict(cfg)


def load_pi0_config(config_dir: str) -> Pi0Spec:
    """Read ``<config_dir>/config.json`` into a :class:`Pi0Spec`.

    :param config_dir: a checkpoint directory (or the ``config.json`` path itself).
    :return: the spec.
    :raises FileNotFoundError: no config.json.
    :raises ValueError: not a π0 config.
    """
    path, cfg = read_config(config_dir)
    if cfg.get('type', 'pi0') != 'pi0' and cfg.get('model_type') != 'pi0':
        raise ValueError(f'{path}: type {cfg.get("type")!r} is not a π0 config')
    spec = spec_from_lerobot(path, cfg)
    LOG.info('π0 config %s: cameras=%s state_dim=%d action_dim=%d chunk=%d image=%s '
             'text hidden=%d', path, spec.camera_names, spec.state_dim, spec.action_dim,
             spec.chunk_size, spec.image_size, spec.hf_config.vlm_config.text_config.hidden_size)
    return spec
