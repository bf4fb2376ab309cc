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
