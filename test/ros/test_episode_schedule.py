"""The node's episode schedule (``ros/policy_node/episode_schedule.py``): draw ahead, abort.

Runs the real fixed and adaptive schedules; no ROS graph.
"""
import pytest

pytest.importorskip('rclpy')

from retain_ros.ros.policy_node.config import NodeConfig  # noqa: E402
from retain_ros.ros.policy_node.episode_schedule import EpisodeSchedule  # noqa: E402
from retain_ros.ros.policy_node.params import PARAMS  # noqa: E402

pytestmark = pytest.mark.ros


def _schedule(**changes):
    values = {p.name: p.default for p in PARAMS}
    values.update(alpha_schedule=['0.35', '1'], schedule_seed=2, **changes)
    return EpisodeSchedule(NodeConfig.from_values(values))


def _sequential(**changes):
    return _schedule(sequential=True, sequential_gap=0.5, sequential_budget=20, **changes)


def test_sequential_counts_an_outcome_only_once_its_line_is_written():
    schedule = _sequential()
    first = schedule.next_params
    assert schedule.remaining == 40 and schedule.status()['episodes_done'] == 0
    assert schedule.started() == first and schedule.next_params is None

    def fail(status):
        assert status['episodes_done'] == 1      # the state the line would carry
        raise OSError('disk full')
    with pytest.raises(OSError, match='disk full'):
        schedule.record(True, 'split=a', fail)
    assert schedule.status()['episodes_done'] == 0      # not counted ...
    assert schedule.next_params == first                # ... and offered again
    schedule.started()
    seen = []
    assert schedule.record(True, 'split=a', lambda status: seen.append(status) or 'line') \
        == 'line'
    assert seen[0]['episodes_done'] == 1 == schedule.status()['episodes_done']
    assert schedule.remaining == 39 and schedule.next_params != first


def test_sequential_abort_offers_the_same_setting_and_finishes_when_decided():
    schedule = _sequential(blind=True)
    assert sorted(schedule.labels) == ['setting A', 'setting B']
    params = schedule.started()
    schedule.abort()
    assert schedule.next_params == params and schedule.status()['aborted'] == 1
    episodes = 0
    while schedule.next_params is not None:
        params = schedule.started()
        schedule.record(params['alpha'] == 1.0, '', lambda status: None)
        episodes += 1
        assert episodes <= 40
    assert schedule.finished == 'decided' and schedule.remaining == 0
    assert schedule.finished_message().startswith('evaluation finished: decided after')
    with pytest.raises(StopIteration):
        schedule.started()


def test_fixed_schedule_draws_ahead_and_repeats_an_aborted_setting():
    schedule = _schedule(schedule_repeats=2)
    assert schedule.status() is None and schedule.remaining == 4 == schedule.total
    order = []
    first = schedule.started()
    schedule.abort()
    assert schedule.next_params == first and schedule.remaining == 4
    while schedule.next_params is not None:
        order.append(schedule.started())
        assert schedule.record(False, '', lambda status: status) is None
    assert order[0] == first and len(order) == 4 and schedule.remaining == 0
    assert schedule.finished == 'schedule exhausted'
    assert 'alpha schedule exhausted (4 episodes done)' in schedule.finished_message()
