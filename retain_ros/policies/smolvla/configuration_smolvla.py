"""SmolVLA configuration: a LeRobot ``config.json`` + the VLM config + the weights' shapes.

A LeRobot SmolVLA checkpoint (``"type": "smolvla"``) names its VLM in ``vlm_model_name`` (a Hub
id such as ``HuggingFaceTB/SmolVLM2-500M-Video-Instruct``, or a folder name relative to the
checkpoint). Nothing is downloaded: the VLM's ``config.json`` is looked up, in order, in

1. ``<checkpoint>/<vlm_model_name>`` (a relative name, as the test fixtures use),
2. ``vlm_model_name`` itself when it is a local folder,
3. ``<checkpoint>/vlm`` (a copy placed beside the checkpoint),
4. the local Hugging Face cache (``huggingface_hub.try_to_load_from_cache``, offline).

The sizes the weights fix (text / vision widths, kept VLM layers, expert width, MLP sizes,
vocabulary, patch size, positions) are read from the ``model.safetensors`` shapes and win over
the configs when they disagree (a warning is logged): LeRobot keeps only the first
``num_vlm_layers`` text layers and derives the expert from the text config.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from dataclasses import field
import json
import logging
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

LOG = logging.getLogger(__name__)

#: Seconds between two actions of a chunk when the config has no ``control_period``.
DEFAULT_CONTROL_PERIOD = 0.1
IMAGE_FEATURE_PREFIX = 'observation.images.'
EMPTY_CAMERA_PREFIX = 'empty_camera_'
STATE_FEATURE = 'observation.state'
ACTION_FEATURE = 'action'
WEIGHTS_FILE = 'model.safetensors'

#: Prefixes of the LeRobot ``SmolVLAPolicy`` state-dict names (= ``model.safetensors`` names).
VLM_PREFIX = 'model.vlm_with_expert.vlm.'
TEXT_PREFIX = VLM_PREFIX + 'model.text_model.'
VISION_PREFIX = VLM_PREFIX + 'model.vision_model.'
EXPERT_PREFIX = 'model.vlm_with_expert.lm_expert.'


@dataclass
class SmolVLASpec:
    """Everything needed to build and drive a SmolVLA.

    :param policy_config: the LeRobot policy ``config.json`` dict.
    :param vlm_config: transformers ``SmolVLMConfig`` (text layers cut to the kept ones).
    :param expert_config: transformers ``LlamaConfig`` of the action expert.
    :param camera_names: camera slots, in the model's order (empty cameras excluded).
    :param empty_cameras: number of ``empty_camera_*`` slots the model fills with blank images.
    :param state_dim: robot state length (before padding).
    :param action_dim: action length (before padding).
    :param cross_attn_layers: VLM layer indices where the expert cross-attends to the VLM's K/V.
    :param vlm_dir: the folder the VLM config came from ('' when none; tokenizer default).
    :param control_period: seconds between two actions of a chunk.
    """

    policy_config: Dict[str, Any]
    vlm_config: Any
    expert_config: Any
    camera_names: List[str]
    state_dim: int
    action_dim: int
    cross_attn_layers: Tuple[int, ...] = ()
    empty_cameras: int = 0
    vlm_dir: str = ''
    control_period: float = DEFAULT_CONTROL_PERIOD
    extra: Dict[str, Any] = field(default_factory=dict)

    def _get(self, key: str, default: Any) -> Any:
        value = self.policy_config.get(key, default)
        return default if value is None else value

    @property
    def chunk_size(self) -> int:
        return int(self._get('chunk_size', 50))

    @property
    def max_state_dim(self) -> int:
        return int(self._get('max_state_dim', 32))

    @property
    def max_action_dim(self) -> int:
        return int(self._get('max_action_dim', 32))

    @property
    def num_steps(self) -> int:
        return int(self._get('num_steps', 10))

    @property
    def min_period(self) -> float:
        return float(self._get('min_period', 4e-3))

    @property
    def max_period(self) -> float:
        return float(self._get('max_period', 4.0))

    @property
    def resize_with_padding(self) -> Optional[Tuple[int, int]]:
        """``(width, height)`` of LeRobot's resize-with-pad, or ``None`` (no resize)."""
        value = self.policy_config.get('resize_imgs_with_padding', (512, 512))
        return None if value is None else (int(value[0]), int(value[1]))

    @property
    def image_size(self) -> Tuple[int, int]:
        """``(height, width)`` of the images the vision tower takes."""
        if self.resize_with_padding is not None:
            return self.resize_with_padding[1], self.resize_with_padding[0]
        side = int(self.vlm_config.vision_config.image_size)
        return side, side

    @property
    def tokenizer_max_length(self) -> int:
        return int(self._get('tokenizer_max_length', 48))

    @property
    def pad_language_to(self) -> str:
        return str(self._get('pad_language_to', 'longest'))

    @property
    def add_image_special_tokens(self) -> bool:
        return bool(self._get('add_image_special_tokens', False))

    @property
    def prefix_length(self) -> int:
        return int(self._get('prefix_length', -1))

    @property
    def attention_mode(self) -> str:
        return str(self._get('attention_mode', 'cross_attn'))

    @property
    def num_vlm_layers(self) -> int:
        return int(self.vlm_config.text_config.num_hidden_layers)

    @property
    def num_expert_layers(self) -> int:
        return int(self.expert_config.num_hidden_layers)


def get_intermediate_size(hidden_dim: int, ffn_dim_multiplier: int = 4,
                          multiple_of: int = 256) -> int:
    """Return LeRobot's expert MLP width for an expert of width ``hidden_dim``."""
    hidden_dim = int(2 * hidden_dim / 3)
    hidden_dim = int(ffn_dim_multiplier * hidden_dim)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


def _read_json(path: str) -> Dict[str, Any]:
    with open(path, 'r', encoding='utf-8') as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object')
    return data


def find_vlm_dir(checkpoint_dir: str, vlm_model_name: str) -> str:
    """Return the local folder holding the VLM's ``config.json`` (see the module docstring).

    :raises FileNotFoundError: none found; the message lists where it looked.
    """
    tried = []
    candidates = []
    if vlm_model_name and not os.path.isabs(vlm_model_name):
        candidates.append(os.path.join(checkpoint_dir, vlm_model_name))
    if vlm_model_name:
        candidates.append(os.path.expanduser(vlm_model_name))
    candidates.append(os.path.join(checkpoint_dir, 'vlm'))
    for cand in candidates:
        tried.append(cand)
        if os.path.isfile(os.path.join(cand, 'config.json')):
            return os.path.abspath(cand)
    if vlm_model_name and '/' in vlm_model_name and not os.path.isabs(vlm_model_name):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(vlm_model_name, 'config.json')
        except Exception:  # noqa: B902 - any cache problem just means "not cached"
            cached = None
        tried.append(f'Hugging Face cache ({vlm_model_name})')
        if isinstance(cached, str) and os.path.isfile(cached):
            return os.path.dirname(cached)
    raise FileNotFoundError(
        f'{checkpoint_dir}: the SmolVLA VLM {vlm_model_name!r} has no local config.json; '
        f'looked in {tried}. Put a copy of the VLM folder (config.json + tokenizer files) at '
        f'{os.path.join(checkpoint_dir, "vlm")} (nothing is downloaded at run time)')


def _shapes(checkpoint_dir: str) -> Dict[str, Tuple[int, ...]]:
    from retain_ros.merging.checkpoint import open_checkpoint

    src = open_checkpoint(checkpoint_dir, family='smolvla')
    try:
        return {k: tuple(src.shape(k)) for k in src.keys()}
    finally:
        src.close()


def _layers(shapes: Dict[str, Tuple[int, ...]], prefix: str) -> int:
    """Count the ``<prefix><i>.*`` layers in the weights (0 when none)."""
    found = set()
    for key in shapes:
        if key.startswith(prefix):
            head = key[len(prefix):].split('.', 1)[0]
            if head.isdigit():
                found.add(int(head))
    return max(found) + 1 if found else 0


def _override(cfg: Any, key: str, value: Optional[int], what: str) -> None:
    if value is None:
        return
    old = getattr(cfg, key, None)
    if old != value:
        if old is not None:
            LOG.warning('SmolVLA %s.%s: config says %s, the weights %s; using the weights',
                        what, key, old, value)
        setattr(cfg, key, value)


def _sizes_from_weights(shapes: Dict[str, Tuple[int, ...]], text: Any, vision: Any) -> None:
    def shape(key: str) -> Optional[Tuple[int, ...]]:
        return shapes.get(key)

    emb = shape(TEXT_PREFIX + 'embed_tokens.weight')
    if emb is not None:
        _override(text, 'vocab_size', emb[0], 'text_config')
        _override(text, 'hidden_size', emb[1], 'text_config')
    n_text = _layers(shapes, TEXT_PREFIX + 'layers.')
    _override(text, 'num_hidden_layers', n_text or None, 'text_config')
    gate = shape(TEXT_PREFIX + 'layers.0.mlp.gate_proj.weight')
    if gate is not None:
        _override(text, 'intermediate_size', gate[0], 'text_config')
    head_dim = int(getattr(text, 'head_dim', None) or text.hidden_size // text.num_attention_heads)
    q = shape(TEXT_PREFIX + 'layers.0.self_attn.q_proj.weight')
    k = shape(TEXT_PREFIX + 'layers.0.self_attn.k_proj.weight')
    if q is not None and k is not None:
        if q[0] % head_dim or k[0] % head_dim:
            raise ValueError(f'SmolVLA text q/k projections {q} / {k} do not fit head_dim '
                             f'{head_dim} of the VLM config')
        _override(text, 'num_attention_heads', q[0] // head_dim, 'text_config')
        _override(text, 'num_key_value_heads', k[0] // head_dim, 'text_config')
    patch = shape(VISION_PREFIX + 'embeddings.patch_embedding.weight')
    if patch is not None:
        _override(vision, 'hidden_size', patch[0], 'vision_config')
        _override(vision, 'patch_size', patch[2], 'vision_config')
    pos = shape(VISION_PREFIX + 'embeddings.position_embedding.weight')
    if pos is not None and patch is not None:
        side = int(round(pos[0] ** 0.5))
        if side * side != pos[0]:
            raise ValueError(f'SmolVLA vision position embedding {pos} is not a square grid')
        _override(vision, 'image_size', side * patch[2], 'vision_config')
    n_vis = _layers(shapes, VISION_PREFIX + 'encoder.layers.')
    _override(vision, 'num_hidden_layers', n_vis or None, 'vision_config')
    fc1 = shape(VISION_PREFIX + 'encoder.layers.0.mlp.fc1.weight')
    if fc1 is not None:
        _override(vision, 'intermediate_size', fc1[0], 'vision_config')


def _expert_config(text: Any, cfg: Dict[str, Any], shapes: Dict[str, Tuple[int, ...]]) -> Any:
    expert = copy.deepcopy(text)
    expert.head_dim = int(getattr(text, 'head_dim', None)
                          or text.hidden_size // text.num_attention_heads)
    width = int(text.hidden_size * float(cfg.get('expert_width_multiplier', 0.75)))
    expert.hidden_size = width
    expert.intermediate_size = get_intermediate_size(width)
    num_expert_layers = int(cfg.get('num_expert_layers', -1) or -1)
    expert.num_hidden_layers = (num_expert_layers if num_expert_layers > 0
                                else int(text.num_hidden_layers))
    norm = shapes.get(EXPERT_PREFIX + 'norm.weight')
    if norm is not None:
        _override(expert, 'hidden_size', norm[0], 'expert')
    gate = shapes.get(EXPERT_PREFIX + 'layers.0.mlp.gate_proj.weight')
    if gate is not None:
        _override(expert, 'intermediate_size', gate[0], 'expert')
    n_exp = _layers(shapes, EXPERT_PREFIX + 'layers.')
    _override(expert, 'num_hidden_layers', n_exp or None, 'expert')
    if text.num_hidden_layers % expert.num_hidden_layers:
        raise ValueError(f'SmolVLA: {text.num_hidden_layers} VLM layers are not a multiple of '
                         f'{expert.num_hidden_layers} expert layers')
    return expert


def _cross_layers(cfg: Dict[str, Any], expert: Any, text: Any,
                  shapes: Dict[str, Tuple[int, ...]]) -> Tuple[int, ...]:
    """Expert layers whose K/V projections take the VLM's K/V (LeRobot's rule), checked."""
    mode = str(cfg.get('attention_mode', 'cross_attn'))
    every = int(cfg.get('self_attn_every_n_layers', -1) or -1)
    if 'cross' not in mode:
        cross: Tuple[int, ...] = ()
    else:
        cross = tuple(i for i in range(expert.num_hidden_layers)
                      if not (every > 0 and i % every == 0))
    kv_width = int(text.num_key_value_heads) * int(expert.head_dim)
    for i in range(expert.num_hidden_layers):
        k = shapes.get(f'{EXPERT_PREFIX}layers.{i}.self_attn.k_proj.weight')
        if k is None:
            continue
        want = kv_width if i in cross else int(expert.hidden_size)
        if k[1] != want:
            kind = 'cross' if i in cross else 'self'
            raise ValueError(f'SmolVLA expert layer {i} ({kind}-attention by attention_mode='
                             f'{mode!r}, self_attn_every_n_layers={every}) has k_proj input '
                             f'width {k[1]}, expected {want}')
    return cross


def _cameras(cfg: Dict[str, Any]) -> Tuple[List[str], int]:
    cams, empty = [], 0
    for key, feat in (cfg.get('input_features') or {}).items():
        if not key.startswith(IMAGE_FEATURE_PREFIX):
            continue
        if str((feat or {}).get('type', 'VISUAL')).upper() != 'VISUAL':
            continue
        name = key[len(IMAGE_FEATURE_PREFIX):]
        if name.startswith(EMPTY_CAMERA_PREFIX):
            empty += 1
        else:
            cams.append(name)
    if not cams:
        raise ValueError('SmolVLA config.json has no observation.images.* input feature')
    # LeRobot fills the image features missing from the batch (the empty_camera_* ones) with
    # blank images, at most ``empty_cameras`` of them
    return cams, min(empty, int(cfg.get('empty_cameras', 0) or 0))


def _feature_dim(features: Dict[str, Any], key: str, what: str) -> int:
    feat = (features or {}).get(key)
    if not feat or not feat.get('shape'):
        raise ValueError(f'SmolVLA config.json has no {what} feature {key!r}')
    return int(feat['shape'][-1])


def smolvla_spec_from_dict(cfg: Dict[str, Any], vlm_config: Dict[str, Any],
                           shapes: Optional[Dict[str, Tuple[int, ...]]] = None,
                           vlm_dir: str = '') -> SmolVLASpec:
    """Build a :class:`SmolVLASpec` from the policy config, the VLM config and weight shapes.

    :param cfg: the LeRobot policy ``config.json`` dict (``"type": "smolvla"``).
    :param vlm_config: the VLM's ``config.json`` dict (``"model_type": "smolvlm"``).
    :param shapes: checkpoint name -> shape (sizes from the weights win); ``None``: configs only.
    :param vlm_dir: the folder ``vlm_config`` came from.
    """
    from transformers import SmolVLMConfig

    kind = str(cfg.get('type') or cfg.get('model_type') or '')
    if kind != 'smolvla':
        raise ValueError(f'not a SmolVLA config (type {kind!r})')
    shapes = shapes or {}
    vlm = dict(vlm_config)
    vlm.pop('transformers_version', None)
    if vlm.get('model_type') not in (None, 'smolvlm', 'idefics3'):
        raise ValueError(f'SmolVLA VLM config has model_type {vlm.get("model_type")!r}, '
                         'expected smolvlm')
    text_cfg = dict(vlm.get('text_config') or {})
    num_vlm_layers = int(cfg.get('num_vlm_layers', -1) or -1)
    if num_vlm_layers > 0:
        text_cfg['num_hidden_layers'] = min(num_vlm_layers,
                                            int(text_cfg.get('num_hidden_layers', 10 ** 6)))
    config = SmolVLMConfig(text_config=text_cfg, vision_config=vlm.get('vision_config') or {},
                           scale_factor=int(vlm.get('scale_factor', 2)),
                           image_token_id=int(vlm.get('image_token_id', 128257)),
                           tie_word_embeddings=False)
    config.text_config.tie_word_embeddings = False
    _sizes_from_weights(shapes, config.text_config, config.vision_config)
    expert = _expert_config(config.text_config, cfg, shapes)
    cross = _cross_layers(cfg, expert, config.text_config, shapes)
    cams, empty = _cameras(cfg)
    state_dim = _feature_dim(cfg.get('input_features'), STATE_FEATURE, 'state')
    action_dim = _feature_dim(cfg.get('output_features'), ACTION_FEATURE, 'action')
    spec = SmolVLASpec(policy_config=dict(cfg), vlm_config=config, expert_config=expert,
                       camera_names=cams, state_dim=state_dim, action_dim=action_dim,
                       cross_attn_layers=cross, empty_cameras=empty, vlm_dir=vlm_dir,
                       control_period=float(cfg.get('control_period', DEFAULT_CONTROL_PERIOD)))
    if state_dim > spec.max_state_dim or action_dim > spec.max_action_dim:
        raise ValueError(f'SmolVLA state/action dims {state_dim}/{action_dim} exceed '
                         f'max_state_dim/max_action_dim {spec.max_state_dim}/'
                         f'{spec.max_action_dim}')
    state_proj = shapes.get('model.state_proj.weight')
    if state_proj is not None and state_proj[1] != spec.max_state_dim:
        raise ValueError(f'SmolVLA state_proj takes {state_proj[1]} values, config '
                         f'max_state_dim is {spec.max_state_dim}')
    action_in = shapes.get('model.action_in_proj.weight')
    if action_in is not None and action_in[1] != spec.max_action_dim:
        raise ValueError(f'SmolVLA action_in_proj takes {action_in[1]} values, config '
                         f'max_action_dim is {spec.max_action_dim}')
    return spec


def load_smolvla_config(checkpoint_dir: str) -> SmolVLASpec:
    """Read ``<checkpoint_dir>/config.json``, the VLM config and the weights' shapes.

    :raises FileNotFoundError: no config.json, or no local VLM config.
    :raises ValueError: not a SmolVLA config, or inconsistent sizes.
    """
    path = os.path.join(checkpoint_dir, 'config.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no SmolVLA config.json')
    cfg = _read_json(path)
    vlm_dir = find_vlm_dir(checkpoint_dir, str(cfg.get('vlm_model_name') or ''))
    vlm_config = _read_json(os.path.join(vlm_dir, 'config.json'))
    weights = os.path.join(checkpoint_dir, WEIGHTS_FILE)
    has_weights = os.path.isfile(weights) or any(
        n.endswith('.safetensors.index.json') for n in os.listdir(checkpoint_dir))
    shapes = _shapes(checkpoint_dir) if has_weights else {}
    LOG.info('SmolVLA config %s; VLM config from %s', path, vlm_dir)
    return smolvla_spec_from_dict(cfg, vlm_config, shapes, vlm_dir=vlm_dir)
