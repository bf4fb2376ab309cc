"""Policies of three sizes for ``benchmarks/policy_latency.py``: π0, π0.5 and SmolVLA.

- ``tiny`` (CPU, float32): π0 = the project's tiny π0 (random weights, written with
  ``write_random_tiny_pi0``); π0.5 / SmolVLA = the LeRobot 0.4.4 fixtures in test/data
  (``pi05_ref``, ``smolvla_ref``), loaded with :func:`retain_ros.policies.loader.load_policy`.
- ``mid`` (random weights, a few hundred million parameters, the families' real layouts with
  narrower / fewer layers; chunk 50, 10 flow steps as the full models): π0 and π0.5 =
  PaliGemma with a SigLIP-B/14 tower (768 wide, 12 layers, 224 px) and a 12-layer Gemma of
  width 1024 (:data:`MID_TEXT`), expert 512 wide, 12 layers (:data:`MID_EXPERT`); SmolVLA = the
  widths published for SmolVLM2-500M (:data:`SMOLVLM2_500M`: SmolLM2-360M text, SigLIP-B/16),
  LeRobot's 16 VLM layers and 0.75-wide expert, at 256 px instead of 512. The embedding tables
  are as large as the tokenizers used here (a byte tokenizer, the fixtures' tiny ones), not
  257k / 49k rows: a table lookup costs nothing per step, it would only inflate the count.
- ``full`` (random weights): π0 = transformers' default ``PI0Config`` (checked by
  ``benchmarks/full_size.py``'s ``assert_default_pi0``: gemma_2b + gemma_300m, 224 px); π0.5 =
  the fixture's config with its own variants (gemma_2b + gemma_300m) and LeRobot's π0.5
  defaults; SmolVLA = LeRobot's SmolVLA defaults (16 VLM layers, expert 0.75 wide, 512 px) over
  ``HuggingFaceTB/SmolVLM2-500M-Video-Instruct``'s config.json when it is local (the Hugging
  Face cache, or ``--smolvla-vlm DIR``), else over :data:`SMOLVLM2_500M` (widths as published,
  vocabulary 49280; the tokenizer is then the fixture's tiny one, which changes nothing but the
  prompt's token ids).

Cameras: each config gets exactly the first ``cameras`` of :data:`CAMERAS` (the weights of all
three families do not depend on the camera count). ``meta=True`` builds the module on torch's
meta device (no memory, no weights): what ``--dry-run`` uses to print the parameter counts.
"""
from __future__ import annotations

import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), 'test', 'data')
SIZES = ('tiny', 'mid', 'full')
FAMILIES = ('pi0', 'pi05', 'smolvla')
CAMERAS = ('base', 'wrist', 'side')
FIXTURES = {'pi05': 'pi05_ref', 'smolvla': 'smolvla_ref'}
IMAGE_PREFIX = 'observation.images.'
SMOLVLA_VLM = 'HuggingFaceTB/SmolVLM2-500M-Video-Instruct'
#: LeRobot's π0.5 / SmolVLA config defaults the mid / full models take over the fixtures' values
PI05_FULL = {'chunk_size': 50, 'n_action_steps': 50, 'num_inference_steps': 10,
             'image_resolution': [224, 224]}
SMOLVLA_FULL = {'vlm_model_name': SMOLVLA_VLM, 'num_vlm_layers': 16, 'chunk_size': 50,
                'n_action_steps': 50, 'num_steps': 10, 'resize_imgs_with_padding': [512, 512],
                'expert_width_multiplier': 0.75, 'self_attn_every_n_layers': 2,
                'attention_mode': 'cross_attn', 'tokenizer_max_length': 48}
#: mid-size π0 / π0.5 widths (``model_overrides``; head_dim shared by the VLM and the expert)
MID_TEXT = dict(hidden_size=1024, num_hidden_layers=12, intermediate_size=4096,
                num_attention_heads=8, num_key_value_heads=1, head_dim=128)
MID_EXPERT = dict(hidden_size=512, num_hidden_layers=12, intermediate_size=2048,
                  num_attention_heads=8, num_key_value_heads=1, head_dim=128)
MID_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, patch_size=14)
#: SmolVLM2-500M's published widths: SmolLM2-360M text, SigLIP-B/16-512 vision, 4x pixel shuffle
SMOLVLM2_500M = {
    'text': dict(hidden_size=960, intermediate_size=2560, num_attention_heads=15,
                 num_key_value_heads=5, head_dim=64, num_hidden_layers=32, vocab_size=49280,
                 rope_theta=100000.0, max_position_embeddings=8192),
    'vision': dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                   num_hidden_layers=12, patch_size=16, image_size=512),
    'scale_factor': 4}


def camera_config(cfg: dict, cameras: int) -> dict:
    """Return ``cfg`` with exactly the first ``cameras`` of :data:`CAMERAS` as image features.

    Kept cameras keep their shape; an added camera (``side``) takes the first camera's shape.

    :raises ValueError: the config does not start with the cameras this benchmark expects.
    """
    features = cfg['input_features']
    images = [k[len(IMAGE_PREFIX):] for k in features if k.startswith(IMAGE_PREFIX)]
    if tuple(images) != CAMERAS[:len(images)]:
        raise ValueError(f'cameras {images} are not a prefix of {CAMERAS}')
    first = features[IMAGE_PREFIX + images[0]]
    new = {f'{IMAGE_PREFIX}{name}': dict(features.get(IMAGE_PREFIX + name, first))
           for name in CAMERAS[:cameras]}
    new.update({k: v for k, v in features.items() if not k.startswith(IMAGE_PREFIX)})
    return dict(cfg, input_features=new)


def _rewrite_json(path: str, update) -> None:
    with open(path, encoding='utf-8') as f:
        cfg = update(json.load(f))
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(cfg, f, indent=1)


def fixture_folder(family: str, out_dir: str, cameras: int, overrides=None,
                   weights: bool = True) -> str:
    """Copy the family's test fixture (no reference files) with ``cameras`` cameras.

    :param overrides: config.json keys to replace.
    :param weights: keep ``model.safetensors`` (``False``: widths from the config alone).
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(os.path.join(DATA, FIXTURES[family]), out_dir,
                    ignore=shutil.ignore_patterns('reference*'))
    if family == 'pi05':
        shutil.copytree(os.path.join(out_dir, 'tiny_paligemma_tokenizer'),
                        os.path.join(out_dir, 'tokenizer'))
    _rewrite_json(os.path.join(out_dir, 'config.json'),
                  lambda cfg: dict(camera_config(cfg, cameras), **(overrides or {})))
    if not weights:
        os.remove(os.path.join(out_dir, 'model.safetensors'))
    return out_dir


def _smolvlm_widths(vlm_dir: str, size: str) -> None:
    """Give the fixture's tiny VLM folder SmolVLM2-500M's widths (``mid``: its vocabulary)."""
    def update(cfg):
        cfg['scale_factor'] = SMOLVLM2_500M['scale_factor']
        text = dict(SMOLVLM2_500M['text'])
        if size == 'mid':
            text['vocab_size'] = cfg['text_config']['vocab_size']
        cfg['text_config'].update(text)
        cfg['vision_config'].update(SMOLVLM2_500M['vision'])
        if size == 'mid':
            cfg['vision_config']['image_size'] = 256
        return cfg
    _rewrite_json(os.path.join(vlm_dir, 'config.json'), update)


def smolvla_folder(size: str, out_dir: str, cameras: int, smolvla_vlm: str = '') -> str:
    """Write a weightless SmolVLA checkpoint folder of ``size`` (``mid`` / ``full``)."""
    overrides = dict(SMOLVLA_FULL)
    if size == 'mid':
        overrides.update(vlm_model_name='tiny_smolvlm', resize_imgs_with_padding=[256, 256])
    elif smolvla_vlm:
        overrides['vlm_model_name'] = os.path.abspath(smolvla_vlm)
    fixture_folder('smolvla', out_dir, cameras, overrides, weights=False)
    if size == 'mid':
        _smolvlm_widths(os.path.join(out_dir, 'tiny_smolvlm'), size)
        return out_dir
    from retain_ros.policies.smolvla.configuration_smolvla import find_vlm_dir

    tiny_vlm = os.path.join(out_dir, 'tiny_smolvlm')
    try:
        find_vlm_dir(out_dir, overrides['vlm_model_name'])
    except FileNotFoundError:   # not local: the published widths (see the module docstring)
        _smolvlm_widths(tiny_vlm, size)
        shutil.move(tiny_vlm, os.path.join(out_dir, 'vlm'))
        _rewrite_json(os.path.join(out_dir, 'config.json'),
                      lambda cfg: dict(cfg, vlm_model_name='vlm'))
    shutil.rmtree(tiny_vlm, ignore_errors=True)
    return out_dir


def pi0_config(size: str, cameras: int) -> dict:
    """Return the LeRobot-style config dict of the ``mid`` / ``full`` π0."""
    from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config
    from retain_ros.policies.pi0.tokenizer_pi0 import BYTE_VOCAB_SIZE

    cfg = tiny_pi0_config(14, 14, chunk_size=50, camera_names=CAMERAS[:cameras], image_size=224,
                          num_inference_steps=10, max_dim=32)
    if size == 'full':
        cfg['paligemma_variant'], cfg['action_expert_variant'] = 'gemma_2b', 'gemma_300m'
    else:
        cfg['paligemma_variant'] = cfg['action_expert_variant'] = 'custom'
        cfg['model_overrides'] = dict(text=MID_TEXT, dit=MID_EXPERT, vision=MID_VISION,
                                      vocab_size=BYTE_VOCAB_SIZE, image_token_id=BYTE_VOCAB_SIZE)
    return cfg


def pi05_overrides(size: str) -> dict:
    """Return the config.json keys of the ``mid`` / ``full`` π0.5 over the fixture's."""
    if size == 'full':
        return dict(PI05_FULL)
    from retain_ros.policies.pi0.tokenizer_pi0 import BYTE_VOCAB_SIZE

    return dict(PI05_FULL, paligemma_variant='custom', action_expert_variant='custom',
                model_overrides=dict(text=MID_TEXT, dit=MID_EXPERT, vision=MID_VISION,
                                     vocab_size=BYTE_VOCAB_SIZE,
                                     image_token_id=BYTE_VOCAB_SIZE))


def _meta_module(family: str, spec, dtype: str):
    """Build the module of ``spec`` on the meta device (no memory)."""
    import torch

    meta, tdt = torch.device('meta'), getattr(torch, dtype)
    if family == 'pi0':
        from retain_ros.policies.pi0.backbone_pi0 import build_pi0_module
        return build_pi0_module(spec, meta, tdt)
    if family == 'pi05':
        from retain_ros.policies.pi05.modeling_pi05 import build_pi05_module
        return build_pi05_module(spec, meta, tdt)
    from retain_ros.policies.smolvla.backbone_smolvla import build_smolvla_module
    return build_smolvla_module(spec, meta, tdt)


def build_policy(size: str, family: str, work: str, cameras: int, device: str, dtype: str,
                 smolvla_vlm: str = '', meta: bool = False):
    """Build the ``size`` policy of ``family`` with ``cameras`` cameras.

    Random weights of seed 1 for ``mid`` / ``full`` (two builds hold the same weights), the
    fixtures' (π0.5, SmolVLA) or seed 1's (π0) for ``tiny``.

    :param work: a scratch folder (checkpoint folders are written below it).
    :param meta: return the module on the meta device instead of a policy (no weights).
    :raises FileNotFoundError: a file the family needs is missing.
    :raises ValueError: an inconsistent config.
    """
    out = os.path.join(work, f'{size}_{family}_{cameras}')
    if size == 'tiny' and not meta:
        from retain_ros.policies.loader import load_policy
        from retain_ros.ros.tools.checkpoints import write_random_tiny_pi0

        shutil.rmtree(out, ignore_errors=True)
        if family == 'pi0':
            write_random_tiny_pi0(out, 1, CAMERAS[:cameras])
        else:
            fixture_folder(family, out, cameras)
        return load_policy(out, device=device, dtype=dtype, warmup=False)
    if family == 'pi0':
        from retain_ros.policies.pi0 import load_tokenizer
        from retain_ros.policies.pi0 import NormStats
        from retain_ros.policies.pi0 import Pi0Policy
        from retain_ros.policies.pi0 import pi0_config_from_dict
        from retain_ros.policies.pi0 import save_byte_tokenizer
        from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config

        cfg = (tiny_pi0_config(4, 4, camera_names=CAMERAS[:cameras], image_size=64)
               if size == 'tiny' else pi0_config(size, cameras))
        spec = pi0_config_from_dict(cfg)
        if size == 'full':
            from full_size import assert_default_pi0
            assert_default_pi0(spec)
        if meta:
            return _meta_module(family, spec, dtype)
        tokenizer = load_tokenizer(save_byte_tokenizer(os.path.join(work, 'byte_tokenizer')))
        return Pi0Policy.from_spec(spec, tokenizer, NormStats.identity(14, 14), device=device,
                                   dtype=dtype, init_weights=True, init_seed=1)
    if family == 'pi05':
        from retain_ros.policies.pi05.configuration_pi05 import load_pi05_config
        from retain_ros.policies.pi05.modeling_pi05 import Pi05Policy

        if size == 'tiny':
            fixture_folder(family, out, cameras)
        else:
            fixture_folder(family, out, cameras, pi05_overrides(size), weights=False)
        if meta:
            return _meta_module(family, load_pi05_config(out), dtype)
        return Pi05Policy.build(out, device=device, dtype=dtype, init_weights=True,
                                init_seed=1)
    from retain_ros.policies.smolvla import SmolVLAPolicy
    from retain_ros.policies.smolvla.configuration_smolvla import load_smolvla_config

    if size == 'tiny':
        fixture_folder(family, out, cameras)
    else:
        smolvla_folder(size, out, cameras, smolvla_vlm)
    if meta:
        return _meta_module(family, load_smolvla_config(out), dtype)
    return SmolVLAPolicy.build(out, device=device, dtype=dtype, init_weights=True, init_seed=1)
