"""π0 configuration: a LeRobot / transformers ``config.json`` dict -> :class:`Pi0Spec`.

A π0 checkpoint's ``config.json`` comes in one of two dialects:

- LeRobot's policy config (``"type": "pi0"``): model widths are named by
  ``paligemma_variant`` / ``action_expert_variant`` (see :data:`GEMMA_VARIANTS`); cameras, state
  and action sizes come from ``input_features`` / ``output_features``.
- transformers' ``PI0Config`` (``"model_type": "pi0"``): widths are explicit. Camera names,
  state / action sizes may be given in the optional keys ``camera_names``, ``state_dim``,
  ``action_dim`` (defaults: ``['base']``; the widths of the normalization statistics of a
  ``PI0Processor.save_pretrained`` ``processor_config.json``, else ``max_state_dim`` /
  ``max_action_dim``). Its images are preprocessed the openpi way (pads -1).

Both may carry the optional keys ``control_period`` (seconds between two actions of a chunk; **0.1
s when absent**, LeRobot configs have no such field) and ``model_overrides`` (explicit widths, see
:func:`lerobot_to_hf_kwargs`). Reading a checkpoint directory (and reconciling the variant
widths with its ``model.safetensors``) is :mod:`~retain_ros.policies.pi0.checkpoint_config_pi0`.

The built-in tiny π0 (:func:`tiny_pi0_config`, variant ``retain_tiny``) uses the same code path
as a full-size π0 with small widths and the byte-level tokenizer of
:mod:`retain_ros.policies.pi0.tokenizer_pi0`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.policies.pi0.tokenizer_pi0 import BYTE_VOCAB_SIZE

#: Default seconds between two actions of a chunk when the config has no ``control_period``.
DEFAULT_CONTROL_PERIOD = 0.1

#: Gemma widths by LeRobot variant name (``paligemma_variant`` / ``action_expert_variant``).
GEMMA_VARIANTS: Dict[str, Dict[str, int]] = {
    'gemma_2b': dict(hidden_size=2048, num_hidden_layers=18, intermediate_size=16384,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256),
    'gemma_300m': dict(hidden_size=1024, num_hidden_layers=18, intermediate_size=4096,
                       num_attention_heads=8, num_key_value_heads=1, head_dim=256),
    'retain_tiny': dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=32),
}

#: SigLIP widths by ``paligemma_variant`` (the vision tower belongs to the PaliGemma variant).
VISION_VARIANTS: Dict[str, Dict[str, int]] = {
    'gemma_2b': dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                     num_attention_heads=16, patch_size=14),
    'retain_tiny': dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, patch_size=8),
}

#: Text vocabulary size by ``paligemma_variant`` (image token id = vocabulary size).
VOCAB_SIZES: Dict[str, int] = {'gemma_2b': 257152, 'retain_tiny': BYTE_VOCAB_SIZE}

#: Default image side by ``paligemma_variant`` (LeRobot: ``image_resolution``).
IMAGE_SIZES: Dict[str, int] = {'gemma_2b': 224, 'retain_tiny': 64}

GEMMA_ACTIVATION = 'gelu_pytorch_tanh'
IMAGE_FEATURE_PREFIX = 'observation.images.'
STATE_FEATURE = 'observation.state'
ACTION_FEATURE = 'action'
#: LeRobot policy types whose config this module reads (π0.5 shares π0's sizes and features).
LEROBOT_TYPES = ('pi0', 'pi05')


@dataclass
class Pi0Spec:
    """Everything needed to build and drive a π0: the transformers config plus robot I/O.

    :param hf_config: transformers ``PI0Config``.
    :param camera_names: camera slots, in the order the model sees them.
    :param state_dim: length of the robot state vector (before padding).
    :param action_dim: length of one action (before padding).
    :param image_size: ``(height, width)`` of the images the vision tower takes.
    :param tokenizer_max_length: text tokens (bos + instruction + newline), padded/truncated.
    :param control_period: seconds between two actions of a chunk.
    :param policy_config: the LeRobot-style policy config dict (written back on save).
    :param image_pad_order: ``lerobot`` (LeRobot checkpoints: resize-with-pad pads with -1 before
        ``x * 2 - 1``, pads reach the tower as -3) or ``openpi`` (pads are -1); see
        :mod:`retain_ros.policies.images`. ``config.json`` may set it explicitly.
    """

    hf_config: Any
    camera_names: List[str]
    state_dim: int
    action_dim: int
    image_size: Tuple[int, int]
    tokenizer_max_length: int = 48
    control_period: float = DEFAULT_CONTROL_PERIOD
    policy_config: Dict[str, Any] = field(default_factory=dict)
    image_pad_order: str = 'lerobot'
    dims_from_config: bool = True

    def set_dims(self, state_dim: int, action_dim: int) -> None:
        """Set the robot state / action widths (e.g. from a transformers processor's stats)."""
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.policy_config.setdefault('input_features', {})[STATE_FEATURE] = {
            'type': 'STATE', 'shape': [self.state_dim]}
        self.policy_config.setdefault('output_features', {})[ACTION_FEATURE] = {
            'type': 'ACTION', 'shape': [self.action_dim]}
        _check_dims(self)

    @property
    def chunk_size(self) -> int:
        return int(self.hf_config.chunk_size)

    @property
    def max_state_dim(self) -> int:
        return int(self.hf_config.max_state_dim)

    @property
    def max_action_dim(self) -> int:
        return int(self.hf_config.max_action_dim)

    @property
    def image_token_id(self) -> int:
        return int(self.hf_config.vlm_config.image_token_id)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per camera (patches of the vision tower)."""
        vision = self.hf_config.vlm_config.vision_config
        return (int(vision.image_size) // int(vision.patch_size)) ** 2


def tiny_pi0_config(state_dim: int, action_dim: int, chunk_size: int = 10,
                    camera_names: Sequence[str] = ('base',), image_size: int = 64,
                    num_inference_steps: int = 5, tokenizer_max_length: int = 48,
                    control_period: float = DEFAULT_CONTROL_PERIOD,
                    max_dim: Optional[int] = None) -> Dict[str, Any]:
    """Return a LeRobot-style π0 policy config for the built-in tiny π0 (``retain_tiny``).

    Widths: Gemma (VLM and action expert) hidden 64, 2 layers, MLP 128, 2 heads, 1 KV head,
    head dim 32; SigLIP hidden 64, 2 layers, MLP 128, 2 heads, patch 8 (a 64 px image gives
    64 image tokens); text vocabulary = the byte tokenizer's size.

    :param state_dim: robot state length.
    :param action_dim: action length.
    :param chunk_size: actions per chunk.
    :param camera_names: camera slots (``observation.images.<name>`` features).
    :param image_size: square image side in pixels (a multiple of the patch size 8).
    :param num_inference_steps: flow-matching denoising steps.
    :param tokenizer_max_length: text tokens per prompt.
    :param control_period: seconds between two actions.
    :param max_dim: padded state / action size (default ``max(state_dim, action_dim)``).
    :return: a JSON-able dict, the ``config.json`` of a tiny π0 checkpoint.
    """
    if image_size % VISION_VARIANTS['retain_tiny']['patch_size']:
        raise ValueError(f'image_size={image_size} must be a multiple of 8 (the patch size)')
    if not camera_names:
        raise ValueError('camera_names must name at least one camera')
    max_dim = int(max_dim or max(state_dim, action_dim))
    if max_dim < max(state_dim, action_dim):
        raise ValueError(f'max_dim={max_dim} < state_dim={state_dim} / action_dim={action_dim}')
    features = {f'{IMAGE_FEATURE_PREFIX}{name}': {'type': 'VISUAL',
                                                  'shape': [3, image_size, image_size]}
                for name in camera_names}
    features[STATE_FEATURE] = {'type': 'STATE', 'shape': [int(state_dim)]}
    return {
        'type': 'pi0',
        'n_obs_steps': 1,
        'input_features': features,
        'output_features': {ACTION_FEATURE: {'type': 'ACTION', 'shape': [int(action_dim)]}},
        'device': 'cpu',
        'paligemma_variant': 'retain_tiny',
        'action_expert_variant': 'retain_tiny',
        'dtype': 'float32',
        'chunk_size': int(chunk_size),
        'n_action_steps': int(chunk_size),
        'max_state_dim': max_dim,
        'max_action_dim': max_dim,
        'num_inference_steps': int(num_inference_steps),
        'time_sampling_beta_alpha': 1.5,
        'time_sampling_beta_beta': 1.0,
        'time_sampling_scale': 0.999,
        'time_sampling_offset': 0.001,
        'min_period': 0.004,
        'max_period': 4.0,
        'image_resolution': [int(image_size), int(image_size)],
        'empty_cameras': 0,
        'normalization_mapping': {'VISUAL': 'IDENTITY', 'STATE': 'MEAN_STD',
                                  'ACTION': 'MEAN_STD'},
        'tokenizer_max_length': int(tokenizer_max_length),
        'control_period': float(control_period),
    }


def _gemma(widths: Dict[str, int], vocab_size: Optional[int] = None) -> Dict[str, Any]:
    out = dict(model_type='gemma', hidden_activation=GEMMA_ACTIVATION, **widths)
    if vocab_size is not None:
        out['vocab_size'] = int(vocab_size)
    return out


def _variant(table: Dict[str, Dict[str, int]], name: str, what: str) -> Dict[str, int]:
    if name not in table:
        raise ValueError(f'unknown {what} {name!r}; known: {sorted(table)} '
                         '(or give explicit widths in "model_overrides")')
    return dict(table[name])


def _features(cfg: Dict[str, Any]) -> Tuple[List[str], int, int, Optional[Tuple[int, int]]]:
    inputs = cfg.get('input_features') or {}
    outputs = cfg.get('output_features') or {}
    cams = [k[len(IMAGE_FEATURE_PREFIX):] for k in inputs if k.startswith(IMAGE_FEATURE_PREFIX)]
    if not cams:
        raise ValueError('config input_features has no "observation.images.<camera>" feature')
    if STATE_FEATURE not in inputs:
        raise ValueError(f'config input_features has no "{STATE_FEATURE}"')
    if ACTION_FEATURE not in outputs:
        raise ValueError(f'config output_features has no "{ACTION_FEATURE}"')
    state_dim = int(inputs[STATE_FEATURE]['shape'][-1])
    action_dim = int(outputs[ACTION_FEATURE]['shape'][-1])
    shape = inputs[IMAGE_FEATURE_PREFIX + cams[0]].get('shape')
    feat_size = (int(shape[-2]), int(shape[-1])) if shape and len(shape) == 3 else None
    return cams, state_dim, action_dim, feat_size


def _check_dims(spec: Pi0Spec) -> None:
    if spec.state_dim > spec.max_state_dim:
        raise ValueError(f'state_dim={spec.state_dim} > max_state_dim={spec.max_state_dim}')
    if spec.action_dim > spec.max_action_dim:
        raise ValueError(f'action_dim={spec.action_dim} > max_action_dim={spec.max_action_dim}')
    vision = spec.hf_config.vlm_config.vision_config
    if int(vision.image_size) % int(vision.patch_size):
        raise ValueError(f'image size {vision.image_size} is not a multiple of the patch size '
                         f'{vision.patch_size}')
    if spec.image_pad_order not in ('lerobot', 'openpi'):
        raise ValueError(f'image_pad_order must be lerobot or openpi, got '
                         f'{spec.image_pad_order!r}')
    if spec.control_period <= 0:
        raise ValueError(f'control_period={spec.control_period} must be > 0')


def lerobot_to_hf_kwargs(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Translate a LeRobot π0 policy config into ``PI0Config`` keyword arguments.

    ``model_overrides`` (optional) may hold ``text``, ``dit``, ``vision`` dicts of widths and
    ``vocab_size`` / ``projection_dim``, which replace the variant's values.

    :param cfg: the LeRobot policy config dict.
    :return: kwargs for ``transformers.PI0Config``.
    """
    pg_name = cfg.get('paligemma_variant', 'gemma_2b')
    ex_name = cfg.get('action_expert_variant', 'gemma_300m')
    over = cfg.get('model_overrides') or {}
    text = _variant(GEMMA_VARIANTS, pg_name, 'paligemma_variant') if pg_name in GEMMA_VARIANTS \
        or 'text' not in over else {}
    text.update(over.get('text', {}))
    dit = _variant(GEMMA_VARIANTS, ex_name, 'action_expert_variant') if ex_name in GEMMA_VARIANTS \
        or 'dit' not in over else {}
    dit.update(over.get('dit', {}))
    vision = _variant(VISION_VARIANTS, pg_name, 'paligemma_variant') \
        if pg_name in VISION_VARIANTS or 'vision' not in over else {}
    vision.update(over.get('vision', {}))
    vocab = int(over.get('vocab_size', VOCAB_SIZES.get(pg_name, 0)) or 0)
    if vocab <= 0:
        raise ValueError(f'no vocabulary size for paligemma_variant {pg_name!r}; '
                         'set model_overrides.vocab_size')
    res = cfg.get('image_resolution') or [IMAGE_SIZES.get(pg_name, 224)] * 2
    if int(res[0]) != int(res[1]):
        raise ValueError(f'image_resolution {res} must be square for the SigLIP tower')
    vision_cfg = dict(model_type='siglip_vision_model', image_size=int(res[0]),
                      vision_use_head=False, **vision)
    vlm = dict(model_type='paligemma', text_config=_gemma(text, vocab), vision_config=vision_cfg,
               projection_dim=int(over.get('projection_dim', text['hidden_size'])),
               image_token_id=int(over.get('image_token_id', vocab)))
    kwargs = dict(vlm_config=vlm, dit_config=_gemma(dit))
    for key in ('chunk_size', 'max_state_dim', 'max_action_dim', 'num_inference_steps',
                'time_sampling_beta_alpha', 'time_sampling_beta_beta', 'time_sampling_scale',
                'time_sampling_offset', 'min_period', 'max_period'):
        if key in cfg:
            kwargs[key] = cfg[key]
    return kwargs


_HF_EXTRA_KEYS = ('camera_names', 'state_dim', 'action_dim', 'control_period',
                  'tokenizer_max_length', 'policy_config', 'image_pad_order')


def pi0_config_from_dict(cfg: Dict[str, Any]) -> Pi0Spec:
    """Build a :class:`Pi0Spec` from a ``config.json`` dict (LeRobot or transformers dialect).

    :param cfg: the parsed ``config.json``.
    :return: the spec.
    :raises ValueError: unknown dialect, unknown variant or inconsistent sizes.
    """
    from transformers import PI0Config

    cfg = copy.deepcopy(cfg)
    if cfg.get('type') in LEROBOT_TYPES:
        cams, state_dim, action_dim, _ = _features(cfg)
        hf = PI0Config(**lerobot_to_hf_kwargs(cfg))
        policy_config = cfg
        max_len = int(cfg.get('tokenizer_max_length', 48))
        period = float(cfg.get('control_period', DEFAULT_CONTROL_PERIOD))
        order = str(cfg.get('image_pad_order', 'lerobot'))
        dims_given = True
    elif cfg.get('model_type') == 'pi0':
        extra = {k: cfg.pop(k) for k in _HF_EXTRA_KEYS if k in cfg}
        for key in ('architectures', 'transformers_version', 'dtype', 'torch_dtype'):
            cfg.pop(key, None)
        hf = PI0Config(**{k: v for k, v in cfg.items() if k != 'model_type'})
        cams = list(extra.get('camera_names', ['base']))
        state_dim = int(extra.get('state_dim', hf.max_state_dim))
        action_dim = int(extra.get('action_dim', hf.max_action_dim))
        max_len = int(extra.get('tokenizer_max_length', 48))
        period = float(extra.get('control_period', DEFAULT_CONTROL_PERIOD))
        policy_config = extra.get('policy_config') or _policy_config_from_hf(
            hf, cams, state_dim, action_dim, max_len, period)
        order = str(extra.get('image_pad_order', 'openpi'))
        dims_given = 'state_dim' in extra and 'action_dim' in extra
    else:
        raise ValueError('config.json is neither a LeRobot π0 policy config ("type": "pi0") '
                         'nor a transformers PI0Config ("model_type": "pi0"): '
                         f'type={cfg.get("type")!r} model_type={cfg.get("model_type")!r}')
    size = int(hf.vlm_config.vision_config.image_size)
    spec = Pi0Spec(hf_config=hf, camera_names=cams, state_dim=state_dim, action_dim=action_dim,
                   image_size=(size, size), tokenizer_max_length=max_len, control_period=period,
                   policy_config=policy_config, image_pad_order=order,
                   dims_from_config=dims_given)
    _check_dims(spec)
    return spec


def _policy_config_from_hf(hf, cams, state_dim, action_dim, max_len, period) -> Dict[str, Any]:
    """LeRobot-style policy config for a transformers config (explicit widths as overrides)."""
    text = hf.vlm_config.text_config
    vision = hf.vlm_config.vision_config
    dit = hf.dit_config
    gemma_keys = ('hidden_size', 'num_hidden_layers', 'intermediate_size', 'num_attention_heads',
                  'num_key_value_heads', 'head_dim')
    out = {
        'type': 'pi0',
        'input_features': {
            **{f'{IMAGE_FEATURE_PREFIX}{c}': {'type': 'VISUAL',
                                              'shape': [3, vision.image_size, vision.image_size]}
               for c in cams},
            STATE_FEATURE: {'type': 'STATE', 'shape': [state_dim]}},
        'output_features': {ACTION_FEATURE: {'type': 'ACTION', 'shape': [action_dim]}},
        'paligemma_variant': 'custom',
        'action_expert_variant': 'custom',
        'model_overrides': {
            'text': {k: int(getattr(text, k)) for k in gemma_keys},
            'dit': {k: int(getattr(dit, k)) for k in gemma_keys},
            'vision': {k: int(getattr(vision, k)) for k in (
                'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
                'patch_size')},
            'vocab_size': int(text.vocab_size),
            'projection_dim': int(hf.vlm_config.projection_dim),
            'image_token_id': int(hf.vlm_config.image_token_id),
        },
        'image_resolution': [int(vision.image_size)] * 2,
        'tokenizer_max_length': max_len,
        'control_period': period,
        'normalization_mapping': {'VISUAL': 'IDENTITY', 'STATE': 'MEAN_STD',
                                  'ACTION': 'MEAN_STD'},
    }
    for key in ('chunk_size', 'max_state_dim', 'max_action_dim', 'num_inference_steps',
                'time_sampling_beta_alpha', 'time_sampling_beta_beta', 'time_sampling_scale',
                'time_sampling_offset', 'min_period', 'max_period'):
        out[key] = getattr(hf, key)
    out['n_action_steps'] = out['chunk_size']
    return out
