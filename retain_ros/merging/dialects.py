"""Key dialects: how each training stack names the same tensors, mapped to canonical names.

Canonical names for the pi0 family are the runtime ``state_dict`` names of transformers'
``PI0ForConditionalGeneration``:

- ``model.vlm.vision_tower.*``, ``model.vlm.multi_modal_projector.*``;
- ``model.vlm.language_model.*`` (``embed_tokens`` is the tied PaliGemma ``lm_head``);
- ``model.dit.*`` (the action expert; ``model.dit.embed_tokens`` is its ``lm_head``);
- ``embed_action_time.{state_proj,action_in_proj,action_time_mlp_in,action_time_mlp_out}.*``
  (pi0.5: ``embed_action_time.time_mlp_{in,out}``), ``action_out_proj.*``.

On-disk dialects of pi0 / pi0.5:

- ``lerobot``:
  ``model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.*``,
  ``...paligemma.model.language_model.layers.*``, tied embedding stored only as
  ``...paligemma.lm_head.weight`` (alias in the safetensors ``__metadata__``),
  ``model.state_proj``;
- ``openpi``: the same without the leading ``model.``;
- ``transformers``: ``PI0ForConditionalGeneration.save_pretrained``:
  ``paligemma_with_expert.paligemma.model.vision_tower.*`` (no ``vision_model.``),
  ``...language_model.model.{embed_tokens,layers,norm}``, root-level ``state_proj`` ...;
- ``canonical``: already runtime names (e.g. a plain ``torch`` state_dict saved as safetensors).

Other families (SmolVLA, OpenVLA, unknown) use their file names as canonical names (``plain`` /
``lerobot`` dialect without renaming).
"""
from __future__ import annotations

import re
from typing import Dict
from typing import Iterable
from typing import Optional

PI0_FAMILIES = ('pi0', 'pi05')

_ACTION_HEADS = ('state_proj', 'action_in_proj', 'action_time_mlp_in', 'action_time_mlp_out',
                 'time_mlp_in', 'time_mlp_out')
_PWE = 'paligemma_with_expert.'
_HEADS_RE = re.compile(r'^(%s)\.' % '|'.join(_ACTION_HEADS))
#: LeRobot's tied-weight alias of a π0 ``model.safetensors``, written as its ``__metadata__``.
LEROBOT_TIED_ALIAS = {
    'model.' + _PWE + 'paligemma.model.language_model.embed_tokens.weight':
        'model.' + _PWE + 'paligemma.lm_head.weight',
}


def detect_family(keys: Iterable[str], config: Optional[dict] = None) -> str:
    """Model family from config.json (LeRobot ``type`` / transformers ``model_type``) or keys.

    :return: one of ``'pi0'``, ``'pi05'``, ``'smolvla'``, ``'openvla'``, ``'unknown'``.
    """
    keys = list(keys)
    if config:
        name = str(config.get('type') or config.get('model_type') or '').lower()
        name = name.replace('.', '').replace('_', '')
        if name in ('pi0', 'pi05', 'smolvla', 'openvla'):
            return name
    joined = '\n'.join(keys)
    if _PWE in joined or ('model.vlm.' in joined and 'model.dit.' in joined):
        pi05 = re.search(r'(^|\.)time_mlp_in\.|gemma_expert\.model\.norm\.dense\.|'
                         r'^model\.dit\.norm\.dense\.', joined, re.M)
        return 'pi05' if pi05 else 'pi0'
    if 'vlm_with_expert.' in joined:
        return 'smolvla'
    if 'vision_backbone.' in joined and 'projector.' in joined:
        return 'openvla'
    return 'unknown'


def detect_dialect(keys: Iterable[str], family: str) -> str:
    """On-disk key dialect of a checkpoint of ``family``."""
    keys = list(keys)
    if family in PI0_FAMILIES:
        if any(k.startswith('model.' + _PWE) for k in keys):
            return 'lerobot'
        if any(k.startswith(_PWE) for k in keys):
            if any('.language_model.model.' in k or
                   ('.vision_tower.' in k and '.vision_model.' not in k) for k in keys):
                return 'transformers'
            return 'openpi'
        return 'canonical'
    if family == 'smolvla':
        return 'lerobot'
    return 'plain'


def canonical_pi0_key(key: str) -> str:
    """Map a π0 / π0.5 tensor name of any dialect to its canonical (runtime) name.

    The merger (:func:`canonical_map`) and the policies' weight loaders both use it.

    :param key: a name as stored in a LeRobot, openpi, transformers or canonical file.
    :return: the ``PI0ForConditionalGeneration`` state-dict name (unchanged if canonical).
    """
    k = key
    if k.startswith('model.' + _PWE):
        k = k[len('model.'):]
    elif k.startswith('model.') and _HEADS_RE.match(k[len('model.'):]) or \
            k.startswith('model.action_out_proj.'):
        k = k[len('model.'):]
    if k.startswith(_PWE + 'paligemma.'):
        rest = k[len(_PWE + 'paligemma.'):]
        if rest.startswith('lm_head.'):
            return 'model.vlm.language_model.embed_tokens.' + rest[len('lm_head.'):]
        if rest.startswith('model.'):
            rest = rest[len('model.'):]
        if rest.startswith('vision_tower.vision_model.'):
            rest = 'vision_tower.' + rest[len('vision_tower.vision_model.'):]
        elif rest.startswith('language_model.model.'):
            rest = 'language_model.' + rest[len('language_model.model.'):]
        return 'model.vlm.' + rest
    if k.startswith(_PWE + 'gemma_expert.'):
        rest = k[len(_PWE + 'gemma_expert.'):]
        if rest.startswith('lm_head.'):
            return 'model.dit.embed_tokens.' + rest[len('lm_head.'):]
        if rest.startswith('model.'):
            rest = rest[len('model.'):]
        return 'model.dit.' + rest
    if _HEADS_RE.match(k):
        return 'embed_action_time.' + k
    return k


def lerobot_pi0_key(key: str) -> str:
    """Map a canonical π0 / π0.5 name to LeRobot's ``model.safetensors`` name.

    The inverse of :func:`canonical_pi0_key` on canonical names: the tied text embedding is
    stored as ``...paligemma.lm_head.weight``, the expert's as ``...gemma_expert.lm_head``.
    """
    if key == 'model.vlm.language_model.embed_tokens.weight':
        return 'model.' + _PWE + 'paligemma.lm_head.weight'
    if key == 'model.dit.embed_tokens.weight':
        return 'model.' + _PWE + 'gemma_expert.lm_head.weight'
    for src, dst in (('model.vlm.vision_tower.', 'paligemma.model.vision_tower.vision_model.'),
                     ('model.vlm.', 'paligemma.model.'),
                     ('model.dit.', 'gemma_expert.model.')):
        if key.startswith(src):
            return 'model.' + _PWE + dst + key[len(src):]
    if key.startswith('embed_action_time.'):
        return 'model.' + key[len('embed_action_time.'):]
    return 'model.' + key


def canonical_map(file_keys: Iterable[str], family: str, dialect: str) -> Dict[str, str]:
    """Map every stored key to its canonical name (identity for non-pi0 families)."""
    if family in PI0_FAMILIES and dialect != 'canonical':
        return {k: canonical_pi0_key(k) for k in file_keys}
    return {k: k for k in file_keys}
