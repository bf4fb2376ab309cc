"""The ``~/evaluation`` topic: where an evaluation stands, for the operator's console.

``std_msgs/String`` JSON on a transient-local topic (depth 1: a late subscriber gets the latest),
published at configure and after every ``~/start_episode``, ``~/end_episode`` and
``~/abort_episode``::

    {"blind": bool, "running": episode_id | null, "setting": label of the running episode | null,
     "next": label | null, "tag": episode_tag, "episodes_done": int, "remaining": int | null,
     "counts": {label: {"n": int, "successes": int, "ci95": [lo, hi]}},   (omitted when blind)
     "sequential": AdaptiveSchedule.status() | null, "finished": null | reason}

Blind: labels are opaque (``'setting C'``), the counts are left out (they would let the operator
tell the settings apart) and no α value is ever in a message: :func:`blind_leak` checks each
one before it is sent, and a message that would leak is replaced by a short one that does not.
Counts are this node's since configure: ended episodes, aborted ones not counted.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional

from std_msgs.msg import String

from retain_ros.evaluation.stats import wilson_interval
from retain_ros.ros.policy_node.qos import LATCHED_QOS

#: what may not appear in a blind message: an ``alpha`` key or text (``alpha=0.5``)
_ALPHA_TEXT = re.compile(r'alpha', re.IGNORECASE)


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats replaced by None (strict JSON for browsers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def blind_leak(text: str) -> Optional[str]:
    """Return what in ``text`` would reveal α to a blind operator, or None.

    Every setting's description starts with ``alpha=`` (``'alpha=1,language=0.8'``), and an α
    value travels under an ``alpha`` key, so a blind message may not contain ``alpha`` at all.

    :param text: a message (JSON) meant for the operator.
    """
    found = _ALPHA_TEXT.search(text)
    if found:
        return f'{text[max(0, found.start() - 20):found.end() + 20]!r}'
    return None


class EvaluationTopic:
    """Publisher and live tallies of ``~/evaluation`` (see the module docstring).

    :param node: the node (publisher, logger); the topic exists from startup.
    """

    def __init__(self, node):
        self._node = node
        self._pub = node.create_publisher(String, '~/evaluation', LATCHED_QOS)
        self.reset(blind=False, labels=())

    def reset(self, blind: bool, labels: Iterable[str] = ()) -> None:
        """Start the tallies afresh (configure).

        :param blind: the operator must not learn α.
        :param labels: the schedule's labels (rows shown from the start, zero episodes).
        """
        self.blind = bool(blind)
        self._counts: Dict[str, List[int]] = {label: [0, 0] for label in labels}
        self.episodes_done = 0

    def count(self, label: str, success: bool) -> None:
        """Count one ended episode of setting ``label``."""
        tally = self._counts.setdefault(label, [0, 0])
        tally[0] += 1
        tally[1] += int(bool(success))
        self.episodes_done += 1

    def message(self, running: Optional[str], setting: Optional[str], next_label: Optional[str],
                tag: str, remaining: Optional[int], sequential: Optional[Dict[str, Any]],
                finished: Optional[str]) -> Dict[str, Any]:
        """Return the ``~/evaluation`` content (JSON-able, strict: no NaN / Infinity)."""
        data: Dict[str, Any] = {
            'blind': self.blind, 'running': running, 'setting': setting, 'next': next_label,
            'tag': tag, 'episodes_done': self.episodes_done, 'remaining': remaining}
        if not self.blind:
            data['counts'] = {
                label: {'n': n, 'successes': k, 'ci95': [round(x, 4)
                                                         for x in wilson_interval(k, n)]}
                for label, (n, k) in self._counts.items()}
        data['sequential'] = sequential
        data['finished'] = finished
        return json_safe(data)

    def publish(self, data: Dict[str, Any]) -> str:
        """Publish ``data`` (from :meth:`message`); return the text sent.

        When blind and the text would reveal α, an error is logged and a reduced message (no
        labels, no sequential details) is sent instead.
        """
        text = json.dumps(data, allow_nan=False)
        if self.blind:
            leak = blind_leak(text)
            if leak is not None:
                self._node.get_logger().error(
                    f'~/evaluation: the message would reveal alpha to a blind operator ({leak}); '
                    'sending it without labels and sequential details')
                text = json.dumps(_reduced(data), allow_nan=False)
        if self._node.context.ok():   # a signal may have shut the context down
            try:
                self._pub.publish(String(data=text))
            except Exception:  # noqa: B902 - rclpy's error type varies; only at shutdown
                if self._node.context.ok():
                    raise
        return text


def _reduced(data: Dict[str, Any]) -> Dict[str, Any]:
    """Return ``data`` without anything that can carry a setting's text."""
    sequential = data.get('sequential')
    return {'blind': True, 'running': data.get('running'), 'setting': None, 'next': None,
            'tag': '', 'episodes_done': data.get('episodes_done'),
            'remaining': data.get('remaining'),
            'sequential': None if sequential is None else {
                'decided': sequential.get('decided'), 'stopped': sequential.get('stopped')},
            'finished': data.get('finished')}
