"""The demo sweep of ``retain-ros demo``: its alpha settings and its episode protocol (no ROS)."""
import pytest

from retain_ros.demo import rollout
from retain_ros.evaluation.schedule import describe
from retain_ros.ros.closed_loop_demo import sweep


def test_sweep_settings_add_group_settings_and_refuse_repeats():
    settings = sweep.build_settings('0,1', 0.5, 'alpha=0.5,action=0; alpha=1,vision=0')
    assert [describe(p) for p in settings] == [
        'alpha=0', 'alpha=1', 'alpha=1,language=0.5', 'alpha=0.5,action=0', 'alpha=1,vision=0']
    assert len(sweep.build_settings('0,1', -1, '')) == 2
    # the same weights twice would pool two settings' episodes in one report row
    with pytest.raises(sweep.DemoError, match=r'same merge \(alpha=1\)'):
        sweep.build_settings('0,1', 1.0, '')
    with pytest.raises(sweep.DemoError, match='action'):
        sweep.build_settings('0', -1, 'alpha=0.5,action=2')


def test_ros_and_offline_episodes_have_one_length():
    """The ROS demo's episode timeout is the offline harness's step budget (one protocol)."""
    assert sweep.EPISODE_TIMEOUT == pytest.approx(rollout.EPISODE_STEPS * sweep.CONTROL_PERIOD)
    assert sweep.REPLAN_STEPS == rollout.REPLAN_STEPS


def test_splits_option_keeps_the_order_given_and_refuses_unknown_ones():
    assert sweep.parse_splits('new_ood, new_id') == ['new_ood', 'new_id']
    for bad in ('', 'new_id,new_id', 'ood'):
        with pytest.raises(sweep.DemoError, match='give distinct splits out of generalist,'):
            sweep.parse_splits(bad)
    plan = sweep.build_plan(sweep.build_settings('0,1', -1, ''), 3, 0, ['new_ood'])
    assert len(plan) == 6 and {e.split for e in plan} == {'new_ood'}
