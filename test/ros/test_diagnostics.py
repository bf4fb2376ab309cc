"""The ``/diagnostics`` status (``retain_ros/ros/policy_node/diagnostics.py``) of a fake node."""
import logging
from types import SimpleNamespace

import pytest

pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from retain_ros.ros.policy_node.diagnostics import diagnostics_status  # noqa: E402
from retain_ros.runtime.stats import NodeStats  # noqa: E402


def _node(fault=None, hold=None, merge=None, dry_run=False):
    stats = NodeStats(logging.getLogger('test'))
    stats.model_ms.extend([10.0, 20.0, 30.0])
    stats.dropped['image cam'] = 2
    return SimpleNamespace(
        stats=stats, get_name=lambda: 'retain_policy',
        get_fully_qualified_name=lambda: '/retain_policy', fault=fault, hold_reason=hold,
        config=SimpleNamespace(dry_run=dry_run, max_observation_age=1.0),
        lifecycle_state='active', merge_state=lambda: merge or {}, inputs=None, plan=None,
        embodiment=None, episodes=None)


def _values(status):
    return {kv.key: kv.value for kv in status.values}


def test_levels_error_warn_ok():
    status = diagnostics_status(_node(fault='weights invalid', hold='stale'))
    assert status.level == DiagnosticStatus.ERROR and status.message == 'holding: weights invalid'
    status = diagnostics_status(_node(hold='no image yet on cam'))
    assert status.level == DiagnosticStatus.WARN and 'no image yet' in status.message
    status = diagnostics_status(_node(dry_run=True))
    assert status.level == DiagnosticStatus.OK and status.message.startswith('acting (dry_run')


def test_values_carry_merge_state_latency_and_drops():
    merge = {'alpha': {'vision': 0.5, 'language': 0.8}, 'recipe': 'interpolate',
             'fingerprint': 'abc', 'merge_ms': 3.5, 'generation': 2, 'valid': True}
    values = _values(diagnostics_status(_node(merge=merge)))
    assert values['alpha.language'] == '0.8' and values['recipe'] == 'interpolate'
    assert values['merge_ms'] == '3.5'
    assert values['weights_valid'] == 'true' and values['merge_generation'] == '2'
    assert values['inference_ms.p50'] == '20.0'
    assert values['dropped_total'] == '2' and values['dropped.image cam'] == '2'
    assert values['lifecycle_state'] == 'active' and values['episode'] == ''
