"""Scene tags of evaluation episodes: ``'split=new_ood;task=red_block;variation=lighting'``.

A tag names where an episode ran (split, task, variation, seed ...); the episode log stores it
and its parsed fields, and the report groups episodes by its ``split``.
"""
from __future__ import annotations

import json
from typing import Any
from typing import Dict
from typing import Mapping
from typing import Optional


def parse_tag(tag: Optional[str]) -> Dict[str, str]:
    """Parse a scene tag ``'k=v;k=v'`` into a dict.

    Empty parts are ignored; a part without ``=`` is kept under its own name with an empty value,
    so nothing an operator typed is lost.

    :param tag: the tag string (``None`` or ``''`` give ``{}``).
    :return: ``{key: value}`` with surrounding whitespace stripped.
    """
    fields: Dict[str, str] = {}
    for part in (tag or '').split(';'):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition('=')
        fields[key.strip()] = value.strip() if sep else ''
    return fields


def make_tag(**fields: Any) -> str:
    """Build a scene tag, the inverse of :func:`parse_tag`.

    ``make_tag(split='new_id', task='t')`` gives ``'split=new_id;task=t'``.

    :param fields: the tag's fields, in order; ``None`` values become empty.
    :return: the tag string.
    :raises ValueError: when a key or value contains ``;`` or a key contains ``=``.
    """
    parts = []
    for key, value in fields.items():
        value = '' if value is None else str(value)
        if ';' in key or '=' in key or ';' in value:
            raise ValueError(
                f'tag field {key!r}={value!r} may not contain ";" (or "=" in the key)')
        parts.append(f'{key}={value}')
    return ';'.join(parts)


def scene_tag(info: Any) -> str:
    """Return the episode tag of a sim scene: ``'split=new_ood;task=reach_yellow;...;seed=3'``.

    :param info: a SceneInfo, or its dict / JSON text (the sim node's ``~/reset`` answer).
    :return: the tag with ``split``, ``task``, ``variation`` and ``seed``.
    """
    if isinstance(info, str):
        info = json.loads(info)
    if not isinstance(info, Mapping):
        info = {k: getattr(info, k) for k in ('split', 'task', 'variation_tag', 'seed')}
    return make_tag(split=info.get('split'), task=info.get('task'),
                    variation=info.get('variation_tag', info.get('variation')),
                    seed=info.get('seed'))
