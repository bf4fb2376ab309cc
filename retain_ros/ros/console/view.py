"""What the operator console sends to the browser: a blind-safe view of the node's state.

Everything the page shows goes through :func:`build_view`. It copies named fields only (never a
whole message), and while the evaluation is blind (or blindness is not known yet) it drops every
key and every string that names the merge coefficient, so no α value reaches the page, its
JavaScript state or any HTTP / websocket payload. Blindness comes from the node's
``~/evaluation`` topic; ``~/merge_state`` saying ``blind`` also counts, and a node that has not
said anything yet is treated as blind.
"""
from __future__ import annotations

import json
from typing import Any
from typing import Dict
from typing import Optional

from retain_ros.evaluation.stats import wilson_interval

#: the word that must never reach the page while blind (keys and strings containing it)
_HIDDEN_WORD = 'alpha'
#: the Greek letter, for strings written for people
_HIDDEN_LETTER = '\u03b1'
#: what replaces a string that named the merge coefficient while blind
HIDDEN_TEXT = '(hidden: blind evaluation)'
#: ``~/merge_state`` fields the page may show (the coefficient itself only when not blind)
MERGE_FIELDS = ('fingerprint', 'recipe', 'valid', 'generation', 'checkpoints')
#: ``/diagnostics`` values the page may show
DIAGNOSTIC_FIELDS = ('lifecycle_state', 'fingerprint', 'episode', 'dry_run',
                     'inference_ms.p50', 'weights_valid')
#: ``~/evaluation`` fields the page may show (``counts`` only when not blind)
EVALUATION_FIELDS = ('running', 'setting', 'next', 'tag', 'episodes_done', 'remaining', 'finished',
                     'sequential')
_LEVELS = {0: 'ok', 1: 'warn', 2: 'error', 3: 'stale'}


def names_hidden(text: str) -> bool:
    """Return True when ``text`` names the merge coefficient (word or Greek letter)."""
    low = text.lower()
    return _HIDDEN_WORD in low or _HIDDEN_LETTER in low


def scrub(value: Any) -> Any:
    """Return a copy of ``value`` without keys or strings that name the merge coefficient.

    :param value: JSON-like data (dicts, lists, strings, numbers).
    :return: the same structure; dict entries whose key names it are dropped, strings that name
        it become :data:`HIDDEN_TEXT`.
    """
    if isinstance(value, dict):
        return {str(k): scrub(v) for k, v in value.items() if not names_hidden(str(k))}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return HIDDEN_TEXT if names_hidden(value) else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return scrub(str(value))


def is_blind(evaluation: Optional[Dict[str, Any]], merge: Optional[Dict[str, Any]]) -> bool:
    """Return whether the page must hide the merge coefficient.

    :param evaluation: the last ``~/evaluation`` message (parsed), or None.
    :param merge: the last ``~/merge_state`` message (parsed), or None.
    :return: True unless ``~/evaluation`` said ``"blind": false`` and ``~/merge_state`` does not
        say blind (fail-safe: unknown means blind).
    """
    if merge and (merge.get('blind') is True or merge.get(_HIDDEN_WORD) == 'hidden'):
        return True
    if not evaluation or evaluation.get('blind') is not False:
        return True
    return False


def counts_with_intervals(counts: Any) -> Dict[str, Dict[str, Any]]:
    """Return ``{label: {'n', 'successes', 'rate', 'ci95'}}`` from ``~/evaluation``'s counts.

    The node's ``ci95`` is kept; it is computed (95% Wilson) when missing.
    """
    out: Dict[str, Dict[str, Any]] = {}
    if not isinstance(counts, dict):
        return out
    for label, row in counts.items():
        if not isinstance(row, dict):
            continue
        n, k = int(row.get('n', 0) or 0), int(row.get('successes', 0) or 0)
        ci = row.get('ci95')
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
            ci = list(wilson_interval(k, n)) if n else [0.0, 1.0]
        out[str(label)] = {'n': n, 'successes': k, 'rate': (k / n) if n else None,
                           'ci95': [float(ci[0]), float(ci[1])]}
    return out


def _state(merge: Optional[Dict[str, Any]], diagnostics: Optional[Dict[str, Any]],
           blind: bool) -> Dict[str, Any]:
    state: Dict[str, Any] = {'level': 'unknown', 'message': 'no /diagnostics from the node yet'}
    if diagnostics:
        state['level'] = _LEVELS.get(int(diagnostics.get('level', 3)), 'stale')
        state['message'] = str(diagnostics.get('message', ''))
        values = diagnostics.get('values') or {}
        for key in DIAGNOSTIC_FIELDS:
            if key in values:
                state[key.replace('.', '_')] = values[key]
    if merge:
        for key in MERGE_FIELDS:
            if key in merge:
                state[key] = merge[key]
        if not blind and isinstance(merge.get(_HIDDEN_WORD), dict):
            # the live merge as text ("group=value, ..."); only ever sent when not blind
            state['weights'] = ', '.join(f'{g}={v:g}' if isinstance(v, (int, float)) else
                                         f'{g}={v}' for g, v in merge[_HIDDEN_WORD].items())
    return scrub(state) if blind else state


def build_view(node_name: str, evaluation: Optional[Dict[str, Any]],
               merge: Optional[Dict[str, Any]], diagnostics: Optional[Dict[str, Any]],
               tag: Optional[str], camera: Optional[str], last: Optional[Dict[str, Any]],
               actions: Any = ()) -> Dict[str, Any]:
    """Return the JSON-able state the page renders.

    :param node_name: the policy node's fully qualified name.
    :param evaluation: last ``~/evaluation`` message (parsed JSON) or None.
    :param merge: last ``~/merge_state`` message (parsed JSON) or None.
    :param diagnostics: the node's last ``/diagnostics`` status as ``{'level', 'message',
        'values': {key: value}}`` or None.
    :param tag: the node's ``episode_tag`` parameter, or None when not known yet.
    :param camera: camera topic shown in the preview, or None.
    :param last: result of the operator's last action ``{'action', 'ok', 'message'}`` or None.
    :param actions: recent action log entries (dicts).
    :return: ``{'node', 'blind', 'connected', 'state', 'evaluation', 'tag', 'camera', 'last',
        'actions'}``; without any α while blind.
    """
    blind = is_blind(evaluation, merge)
    ev: Dict[str, Any] = {}
    if evaluation:
        ev = {k: evaluation.get(k) for k in EVALUATION_FIELDS}
        if not blind:
            ev['counts'] = counts_with_intervals(evaluation.get('counts'))
    view = {
        'node': node_name,
        'blind': blind,
        'connected': evaluation is not None or merge is not None or diagnostics is not None,
        'state': _state(merge, diagnostics, blind),
        'evaluation': ev,
        'tag': tag,
        'camera': camera,
        'last': last,
        'actions': list(actions),
    }
    return scrub(view) if blind else view


def reply_text(message: str, blind: bool) -> Any:
    """Return a service reply for the page: parsed JSON when it is JSON, scrubbed when blind."""
    try:
        value: Any = json.loads(message)
    except (TypeError, ValueError):
        value = message
    return scrub(value) if blind else value
