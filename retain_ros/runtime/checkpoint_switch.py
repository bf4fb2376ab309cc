"""Switching checkpoints live: what a finetuned checkpoint brings besides its weights.

The running policy was built from the LAST finetuned checkpoint
(:mod:`retain_ros.policies.loader`): its ``config.json`` (architecture, cameras, chunk length,
period) and its normalization statistics (RETAIN: the finetuned model's). A live switch keeps
the built model and rewrites its weights in place, so before anything changes (no ROS here, no
lock needed):

- the new last finetuned checkpoint's ``config.json`` must equal the running one's, apart from
  training and hub fields (:data:`TRAINING_KEYS`, :data:`TRAINING_PREFIXES`): a finetune with
  other cameras, chunk length or architecture needs a restart, and :func:`config_difference`
  names the keys that differ;
- its normalization statistics are read (:func:`stats_for_switch`) and installed together with
  the new weights (:func:`install_stats`, under the model lock of
  :class:`~retain_ros.runtime.merged_policy.MergedPolicy`).

The tokenizer stays the one loaded at configure (``tokenizer_path``, or the one beside the
checkpoint the node started with). :func:`describe_checkpoints` is the ``checkpoints`` field of
``~/merge_state`` and of the episode log: the live files and their content digests.
"""
from __future__ import annotations

import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from retain_ros.merging.errors import MergeError

#: ``config.json`` keys that describe training or publishing, not the model that runs
TRAINING_KEYS = frozenset((
    'device', 'use_amp', 'use_peft', 'push_to_hub', 'repo_id', 'private', 'tags', 'license',
    'pretrained_path', 'gradient_checkpointing', 'compile_model', 'compile_mode',
    'freeze_vision_encoder', 'train_expert_only', 'train_state_proj', 'dtype'))
#: prefixes of training-only ``config.json`` keys (LeRobot: ``optimizer_lr``...)
TRAINING_PREFIXES = ('optimizer_', 'scheduler_')
#: families whose statistics files without a mode are quantiles (pi0.5, as its builder reads them)
_QUANTILE_FAMILIES = ('pi05',)


def location(source: Any) -> str:
    """Return where a checkpoint source lives: its directory, else its file (absolute)."""
    return getattr(source, 'root', None) or source.path


def describe_checkpoints(merger: Any) -> Dict[str, Any]:
    """Return the live checkpoints: ``{'pretrained', 'finetuned': [...], 'digests': {...}}``.

    The digests are the ones the merge fingerprint was computed from (cached by then).
    """
    pre, fts = merger.sources
    return {'pretrained': location(pre), 'finetuned': [location(f) for f in fts],
            'digests': {'pretrained': pre.digest(), 'finetuned': [f.digest() for f in fts]}}


def _model_keys(config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {k: v for k, v in (config or {}).items()
            if k not in TRAINING_KEYS and not k.startswith(TRAINING_PREFIXES)}


def config_difference(old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]]) -> List[str]:
    """Return the model keys (training fields left out) whose value differs, sorted."""
    a, b = _model_keys(old), _model_keys(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, '<missing>') != b.get(k, '<missing>'))


def stats_for_switch(policy: Any, old_source: Any, new_source: Any) -> Optional[Any]:
    """Check that ``new_source`` can head the running policy; return its normalization stats.

    :param policy: the running policy (built from ``old_source``).
    :param old_source: the live last finetuned checkpoint source.
    :param new_source: the last finetuned checkpoint source of the switch.
    :return: the new :class:`~retain_ros.policies.normalize.NormStats`, or None when the
        policy has no normalization statistics.
    :raises MergeError: the configs differ (naming the keys), or the statistics cannot be read.
    """
    differ = config_difference(getattr(old_source, 'config', None),
                               getattr(new_source, 'config', None))
    if differ:
        shown = ', '.join(differ[:8]) + (f' (+{len(differ) - 8} more)' if len(differ) > 8 else '')
        raise MergeError(
            f'{location(new_source)}: its config.json differs from the running model\'s '
            f'({location(old_source)}) in {shown}; a checkpoint with another model '
            'configuration needs a restart of the node with it')
    if getattr(policy, 'stats', None) is None:
        return None
    if not hasattr(getattr(policy, 'processor', None), 'stats'):
        raise MergeError(f'the {type(policy).__name__} policy cannot take another checkpoint\'s '
                         'normalization statistics live; restart the node with the new one')
    from retain_ros.policies.norm_stats_files import load_norm_stats
    from retain_ros.policies.normalize import as_norm_stats
    from retain_ros.policies.normalize import MEAN_STD
    from retain_ros.policies.normalize import QUANTILES

    directory = location(new_source)
    if os.path.isfile(directory):
        directory = os.path.dirname(directory)
    mode = QUANTILES if getattr(policy, 'name', '') in _QUANTILE_FAMILIES else MEAN_STD
    state_dim, action_dim = int(policy.state_dim), int(policy.action_dim)
    try:
        stats = load_norm_stats(directory, state_dim, action_dim, default_mode=mode)
        return as_norm_stats(stats, state_dim, action_dim)
    except (OSError, ValueError) as exc:
        raise MergeError(f'{directory}: cannot read its normalization statistics: {exc}; the '
                         'previous checkpoints are still live') from exc


def install_stats(policy: Any, stats: Optional[Any]) -> None:
    """Make ``stats`` the policy's normalization statistics (None: nothing to install)."""
    if stats is not None:
        policy.processor.stats = stats
