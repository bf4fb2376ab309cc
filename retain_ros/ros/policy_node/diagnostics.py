"""``/diagnostics`` of the ``retain_policy`` node (counters: :mod:`retain_ros.runtime.stats`).

Levels: ERROR when the node cannot act until someone intervenes (weights inconsistent after a
failed restore, joint limits that do not fit the robot); WARN while it holds (inputs missing or
stale, not active); OK while it acts.
"""
from __future__ import annotations

import math
from typing import Optional
from typing import Sequence

from diagnostic_msgs.msg import DiagnosticArray
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_msgs.msg import KeyValue

from retain_ros.evaluation.stats import percentile
from retain_ros.runtime.stats import NodeStats


def _percentile_text(values: Sequence[float], q: float) -> str:
    """Format the ``q``-th percentile as ``'%.1f'``; ``'nan'`` when there are no samples."""
    value = percentile(values, q)
    return f'{math.nan if value is None else value:.1f}'


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
    merge = node.merge_state()
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
    values['inference_ms.p50'] = _percentile_text(model, 50)
    values['inference_ms.p99'] = _percentile_text(model, 99)
    values['step_ms.p50'] = _percentile_text(step, 50)
    values['step_ms.p99'] = _percentile_text(step, 99)
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
    values['episode'] = (episodes.log.episode_id or '') if episodes is not None else ''
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status


class DiagnosticsPublisher:
    """Publish the node's :func:`diagnostics_status` on ``/diagnostics`` every ``period`` s.

    :param node: the node (its ``diagnostics_status()``, publisher, timer, clock).
    :param period: seconds between two messages.
    """

    def __init__(self, node, period: float = 1.0):
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._timer = node.create_timer(period, self._callback)

    def _callback(self) -> None:
        node = self._node
        if not node.context.ok():
            return
        msg = DiagnosticArray()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.status = [node.diagnostics_status()]
        try:
            self._pub.publish(msg)
        except Exception:  # noqa: B902 - re-raised unless the context went away meanwhile
            # a signal may shut the context down between the check above and the publish
            # (rclpy raises RCLError or InvalidHandle then, depending on the version)
            if node.context.ok():
                raise
