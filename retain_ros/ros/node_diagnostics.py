"""``/diagnostics`` of the ``retain_policy`` node (counters: :mod:`retain_ros.runtime.stats`).

Levels: ERROR when the node cannot act until someone intervenes (weights inconsistent after a
failed restore, joint limits that do not fit the robot); WARN while it holds (inputs missing or
stale, not active); OK while it acts.
"""
from __future__ import annotations

import math
from typing import Optional
from typing import Sequence

from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_msgs.msg import KeyValue
import numpy as np

from retain_ros.runtime.stats import NodeStats


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile, NaN when empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else math.nan


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
    plan = node.plan
    if plan is not None and plan.streams:
        values['stream_underruns'] = str(underruns)
    if node.embodiment is not None:
        values['embodiment'] = str(node.embodiment.name)
    values['dropped_total'] = str(sum(dropped.values()))
    for key, count in sorted(dropped.items()):
        values[f'dropped.{key}'] = str(count)
    values['dry_run'] = str(bool(cfg.dry_run)).lower()
    episodes = node.episodes
    values['episode'] = (episodes.recorder.episode_id or '') if episodes is not None else ''
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status
