"""Reading episode logs for the report: validate each line, normalize its alpha and split.

An episode log is the JSON lines written by :class:`retain_ros.evaluation.episode_log.EpisodeLog`
(or any file with one JSON object per line holding a boolean ``success`` and an ``alpha``).
The ``alpha`` field may be the effective alpha per group (what the node writes), the node's
parameters (``alpha``, ``alpha_vision`` ... with -1 = follow ``alpha``) or one number; every form
becomes the effective alpha per group (alpha = weight on the FINETUNED model).
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import json
import logging
import math
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

from retain_ros.evaluation.tags import parse_tag

LOG = logging.getLogger(__name__)

#: parameter groups in display order (groups the report does not know follow, sorted)
GROUP_ORDER = ('vision', 'language', 'action', 'other')
#: split of an episode whose log names none
UNKNOWN_SPLIT = 'unknown'


def normalize_alphas(raw: Any) -> Dict[str, float]:
    """Get the alpha per group from a log's ``alpha`` field (groups, node params or a number).

    :param raw: the ``alpha`` field of a log line.
    :return: ``{group: alpha}`` in :data:`GROUP_ORDER`, then unknown groups sorted.
    :raises ValueError: when the field is not a non-empty dict of finite numbers or a number.
    """
    if isinstance(raw, bool):
        raise ValueError('alpha is a boolean')
    if isinstance(raw, (int, float)):
        raw = {'alpha': raw}
    if not isinstance(raw, dict) or not raw:
        raise ValueError('alpha must be a non-empty dict or a number')
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'alpha[{key!r}] is not a number')
        if not math.isfinite(value):
            raise ValueError(f'alpha[{key!r}] is not finite')
        key = str(key)
        values[key[len('alpha_'):] if key.startswith('alpha_') else key] = float(value)
    base = values.pop('alpha', None)
    out = {}
    for group in GROUP_ORDER:
        value = values.pop(group, None)
        if value is None or value < 0:  # -1 = follow alpha
            value = base
        if value is not None:
            out[group] = value
    for group in sorted(values):  # family-specific groups the report does not know
        out[group] = base if values[group] < 0 and base is not None else values[group]
    if not out:
        raise ValueError('alpha has no group values')
    return out


def validate_episode(record: Any) -> Dict[str, Any]:
    """Check one log record and fill in its split and effective alphas.

    :param record: one parsed log line.
    :return: a copy with ``split`` set (from the tag when the line has none, else
        :data:`UNKNOWN_SPLIT`) and the per-group alphas under ``'_alphas'``.
    :raises ValueError: when it is not an object with a boolean ``success`` and a usable
        ``alpha``.
    """
    if not isinstance(record, dict):
        raise ValueError('not a JSON object')
    if not isinstance(record.get('success'), bool):
        raise ValueError('no boolean "success"')
    alphas = normalize_alphas(record.get('alpha'))
    split = record.get('split')
    if split is None:
        split = parse_tag(record.get('tag') if isinstance(record.get('tag'), str) else '').get(
            'split')
    record = dict(record)
    record['split'] = str(split) if split else UNKNOWN_SPLIT
    record['_alphas'] = alphas
    return record


@dataclass
class LogContents:
    """What the report reads from episode logs.

    :param episodes: the valid, counted episodes (see :func:`validate_episode`).
    :param skipped: malformed lines.
    :param aborted: aborted episodes (``"aborted": true``, ``"success": null``): not counted.
    :param sequential: the sequential test's state on the last line that has one, or None.
    :param labels: the schedule's label of each setting (``'setting C'`` when blind) -> the
        effective alpha per group of the episodes that carried it (to unblind decisions).
    """

    episodes: List[Dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    aborted: int = 0
    sequential: Optional[Dict[str, Any]] = None
    labels: Dict[str, Dict[str, float]] = field(default_factory=dict)


def _is_aborted(record: Any) -> bool:
    return isinstance(record, dict) and record.get('aborted') is True \
        and record.get('success') is None


def read_logs(paths: Union[str, Sequence[str]]) -> LogContents:
    """Read episode logs: valid episodes, malformed and aborted lines, the sequential state.

    Lines that are not valid episodes (bad JSON, no boolean ``success``, no usable ``alpha``) are
    skipped with one warning per file that counts them; aborted episodes are counted apart and
    never as a success or a failure; blank lines are ignored.

    :param paths: one path or several (read in order; the last ``sequential`` state wins).
    :return: the :class:`LogContents`.
    :raises FileNotFoundError: when a path does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = LogContents()
    for path in paths:
        bad: List[str] = []
        with open(path, encoding='utf-8') as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if isinstance(record, dict) and isinstance(record.get('sequential'), dict):
                        out.sequential = record['sequential']
                    if _is_aborted(record):
                        out.aborted += 1
                        continue
                    episode = validate_episode(record)
                except ValueError as exc:
                    bad.append(f'line {number}: {exc}')
                    continue
                out.episodes.append(episode)
                if isinstance(episode.get('setting'), str) and episode['setting']:
                    out.labels[episode['setting']] = episode['_alphas']
        if bad:
            out.skipped += len(bad)
            LOG.warning('%s: skipped %d malformed line(s) (%s%s)', path, len(bad),
                        '; '.join(bad[:3]), '; ...' if len(bad) > 3 else '')
    return out


def load_episodes(paths: Union[str, Sequence[str]]) -> Tuple[List[Dict[str, Any]], int]:
    """Read episode logs (:func:`read_logs`); aborted lines are left out, not counted as skipped.

    :param paths: one path or several.
    :return: ``(episodes, skipped)``; every episode has its ``split`` filled in (``'unknown'``
        when the log had none) and its effective per-group alphas under ``'_alphas'``.
    :raises FileNotFoundError: when a path does not exist.
    """
    contents = read_logs(paths)
    return contents.episodes, contents.skipped
