"""Parameter groups (vision / language / action / other) from ordered regex rules.

Rules apply to CANONICAL key names (see :mod:`retain_ros.merging.dialects`); the first rule whose
pattern matches (``re.search``) decides the group. Presets exist per model family; a family without
a preset puts every tensor into ``other`` (one group) and logs a warning.
"""
from __future__ import annotations

import logging
import re
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.merging.dialects import detect_family
from retain_ros.merging.spec import GROUPS

LOG = logging.getLogger(__name__)

Rule = Tuple[str, str]  # (regex, group)

_PI0_RULES: List[Rule] = [
    (r'^model\.vlm\.(vision_tower|multi_modal_projector)\.', 'vision'),
    (r'^model\.vlm\.language_model\.', 'language'),
    (r'^model\.vlm\.lm_head\.', 'language'),
    (r'^model\.dit\.', 'action'),
    (r'^(embed_action_time|action_out_proj)\.', 'action'),
    (r'^(state_proj|action_in_proj|action_time_mlp_in|action_time_mlp_out|time_mlp_in|'
     r'time_mlp_out)\.', 'action'),
]

PRESETS: Dict[str, List[Rule]] = {
    'pi0': _PI0_RULES,
    # pi0.5: same layout; adaRMS norms (``.dense``) live in model.dit, time MLP is time_mlp_*.
    'pi05': _PI0_RULES,
    'smolvla': [
        (r'(^|\.)vlm\.model\.(vision_model|connector)\.', 'vision'),
        (r'(^|\.)vlm\.model\.text_model\.', 'language'),
        (r'(^|\.)vlm\.lm_head\.', 'language'),
        (r'(^|\.)lm_expert\.', 'action'),
        (r'^(model\.)?(state_proj|action_in_proj|action_out_proj|action_time_mlp_in|'
         r'action_time_mlp_out)\.', 'action'),
    ],
    'openvla': [
        (r'^vision_backbone\.', 'vision'),
        (r'^projector\.', 'vision'),
        (r'^language_model\.', 'language'),
    ],
}


class GroupRules:
    """Ordered ``(regex, group)`` rules; unmatched keys go to ``other``.

    :param rules: list of (pattern, group) pairs; groups must be in :data:`GROUPS`.
    :param family: name used in messages.
    """

    def __init__(self, rules: Sequence[Rule], family: str = 'custom'):
        for pattern, group in rules:
            if group not in GROUPS:
                raise ValueError(f'rule {pattern!r}: unknown group {group!r}; groups are '
                                 f'{list(GROUPS)}')
        self.family = family
        self.rules = [(re.compile(p), g) for p, g in rules]

    def group_of(self, key: str) -> str:
        for pattern, group in self.rules:
            if pattern.search(key):
                return group
        return 'other'

    def assign(self, keys: Iterable[str]) -> Dict[str, str]:
        """Group of every key."""
        return {k: self.group_of(k) for k in keys}


def rules_for(family: str, keys: Optional[Iterable[str]] = None) -> GroupRules:
    """Preset rules for ``family`` (``'auto'`` detects it from ``keys``).

    Unknown families get no rules (everything in ``other``) and a warning.
    """
    if family == 'auto':
        family = detect_family(keys or ())
    preset = PRESETS.get(family)
    if preset is None:
        LOG.warning('no parameter-group preset for model family %r: all tensors form ONE group '
                    "('other'); per-group alphas have no effect", family)
        return GroupRules([], family)
    return GroupRules(preset, family)


def assign_groups(keys: Iterable[str], family: str = 'auto') -> Dict[str, str]:
    """Group of every canonical key, with the family's preset."""
    keys = list(keys)
    return rules_for(family, keys).assign(keys)
