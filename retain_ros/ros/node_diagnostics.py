"""``/diagnostics`` of the ``retain_policy`` node, and the counters behind it.

Levels: ERROR when the node cannot act until someone intervenes (weights inconsistent after a
failed restore, joint limits that do not fit the robot); WARN while it holds (inputs missing or
stale, not active); OK while it acts.
"""
from __future__ import annotations

from collections import deque
import math
import threading
from typing import Deque
from typing import Dict
from typing import Optional
from typing import Sequence

from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_msgs.msg import KeyValue
import numpy as np

#: latency samples kept for p50 / p99
LATENCY_WINDOW = 500


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile, NaN when empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else math.nan


class NodeStats:
    """Thread-safe counters: drops, latencies, chunks, underruns."""

    def __init__(self, logger):
        self._logger = logger
        self.lock = threading.Lock()
        self.dropped: Dict[str, int] = {}
        self.model_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.step_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.chunks_published = 0
        self.stream_underruns = 0
        self.last_error = ''

    def drop(self, key: str, reason: str) -> None:
        """Count one dropped message / chunk and log it (first time, then every 100th)."""
        with self.lock:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            count = self.dropped[key]
            self.last_error = f'{key}: {reason}'
        if count == 1 or count % 100 == 0:
            self._logger.warning(f'dropped {key} ({count} so far): {reason}')


def diagnostics_status(node) -> DiagnosticStatus:
    """One ``DiagnosticStatus``: level and message, merge state, latency, ages, drop counts."""
    stats: NodeStats = node.stats
    with stats.lock:
        model = list(stats.model_ms)
        step = list(stats.step_ms)
        dropped = dict(stats.dropped)
        chunks = stats.chunks_published
        underruns = stats.stream_underruns
    status = DiagnosticStatus()
    status.name = f'{node.get_name()}: policy'
    status.hardware_id = node.get_fully_qualified_name()
    fault: Optional[str] = node.fault
    hold = node.hold_reason
    cfg = node.config
    if fault:
        status.level = DiagnosticStatus.ERROR
        status.message = f'holding: {fault}'
    elif hold:
        status.level = DiagnosticStatus.WARN
        status.message = f'holding: {hold}'
    else:
        status.level = DiagnosticStatus.OK
        status.message = 'acting' + (' (dry_run: ~/preview only)' if cfg.dry_run else '')
    values = {'lifecycle_state': node.lifecycle_state}
    merge = node.merge_state_dict()
    if merge:
        alpha = merge.get('alpha')
        if isinstance(alpha, dict):
            for group, value in alpha.items():
                values[f'alpha.{group}'] = f'{value:g}' if isinstance(value, float) else str(value)
        else:
            values['alpha'] = str(alpha)
        values['recipe'] = str(merge.get('recipe'))
        values['fingerprint'] = str(merge.get('fingerprint'))
        values['merge_ms'] = f'{float(merge.get("merge_ms", math.nan)):.1f}'
        values['merge_generation'] = str(merge.get('generation'))
        values['weights_valid'] = str(bool(merge.get('valid'))).lower()
    values['inference_ms.p50'] = f'{percentile(model, 50):.1f}'
    values['inference_ms.p99'] = f'{percentile(model, 99):.1f}'
    values['step_ms.p50'] = f'{percentile(step, 50):.1f}'
    values['step_ms.p99'] = f'{percentile(step, 99):.1f}'
    inputs = node.inputs
    if inputs is not None:
        for topic, age in inputs.ages().items():
            values[f'age_s.{topic}'] = 'never' if age is None else f'{age:.3f}'
        for topic, count in sorted(inputs.qos_incompatible.items()):
            values[f'qos_incompatible.{topic}'] = str(count)
    values['max_observation_age'] = f'{float(cfg.max_observation_age):g}'
    values['chunks_published'] = str(chunks)
    if cfg.output_mode == 'stream':
        values['stream_underruns'] = str(underruns)
    values['dropped_total'] = str(sum(dropped.values()))
    for key, count in sorted(dropped.items()):
        values[f'dropped.{key}'] = str(count)
    values['dry_run'] = str(bool(cfg.dry_run)).lower()
    episodes = node.episodes
    values['episode'] = (episodes.recorder.episode_id or '') if episodes is not None else ''
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status
