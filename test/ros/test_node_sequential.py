"""Sequential evaluation on the node: adaptive schedule, ``~/abort_episode``, ``~/evaluation``.

Real rclpy graph (in-process node, tiny pi0 checkpoints) and the real
:class:`~retain_ros.evaluation.adaptive_schedule.AdaptiveSchedule`.
"""
import json
import re

import pytest

pytest.importorskip('rclpy')

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.qos import DurabilityPolicy  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from retain_ros.recording import bag as B  # noqa: E402
from retain_ros.ros.policy_node.config import ConfigError  # noqa: E402
from retain_ros.ros.policy_node.config import NodeConfig  # noqa: E402
from retain_ros.ros.policy_node.params import PARAMS  # noqa: E402
from retain_ros.runtime.startup import StartupError  # noqa: E402

pytestmark = pytest.mark.ros

NODE = '/retain_policy'
#: every message on ~/evaluation, not only the latest (the publisher keeps one for late joiners)
ALL_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: the worse setting and the reference (the default 'alpha=1', the finetuned model)
SETTINGS = ['0.35', '1']
#: what would reveal α to a blind operator: the word, or the worse setting's value
LEAK = re.compile(r'alpha|(?<![\d.])0\.35(?!\d)', re.IGNORECASE)
#: gap 0.5 with 20 episodes per setting reaches 80% power (budget 12 does not)
DESIGN = dict(sequential=True, sequential_gap=0.5, sequential_power=0.8, sequential_budget=20)


def _values(**changes):
    values = {p.name: p.default for p in PARAMS}
    values.update(changes)
    return values


@pytest.mark.parametrize('changes, match', [
    ({'alpha_schedule': ['0.5']}, r'sequential=true needs alpha_schedule with at least 2'),
    ({'sequential_reference': '0.75'}, r"sequential_reference='0.75' is not one of"),
    ({'sequential_reference': 'alpha=2'}, r"sequential_reference='alpha=2'"),
    ({'sequential_reference': ' '}, 'sequential_reference is empty'),
    ({'sequential_level': 0.0}, r'sequential_level=0: use a value in \(0, 0.5\)'),
    ({'sequential_power': 1.0}, r'sequential_power=1: use a value in \(0, 1\)'),
    ({'sequential_gap': 0.0}, r'sequential_gap=0: use a value in \(0, 1\]'),
    ({'sequential_budget': 1}, r'sequential_budget=1: use 2 to'),
], ids=lambda v: str(v)[:40])
def test_sequential_parameters_are_validated(changes, match):
    values = _values(alpha_schedule=SETTINGS, sequential=True)
    values.update(changes)
    with pytest.raises(ConfigError, match=match):
        NodeConfig.from_values(values)


def test_sequential_parameters_that_are_fine():
    assert NodeConfig.from_values(_values(alpha_schedule=SETTINGS, sequential=True)).sequential
    best = NodeConfig.from_values(_values(alpha_schedule=['0', '0.5', '1'], sequential=True,
                                          sequential_reference='best'))
    assert best.sequential_reference == 'best'
    # without sequential the reference is not matched against the schedule
    assert not NodeConfig.from_values(_values(sequential_reference='0.75')).sequential


def test_budget_too_small_for_the_power_is_refused_at_configure(tiny_pi0_checkpoints,
                                                                ros_harness):
    pre, ft = tiny_pi0_checkpoints
    with pytest.raises(StartupError, match=r'sequential_budget=12.*budget of \d+ episodes per '
                                           r'setting reaches it'):
        ros_harness.start_node(pre, ft, alpha_schedule=SETTINGS,
                               **dict(DESIGN, sequential_budget=12))


def _call_start(harness, texts):
    reply = harness.call(Trigger, f'{NODE}/start_episode')
    texts.append(reply.message)
    return reply


def _call_end(harness, texts, success):
    reply = harness.call(SetBool, f'{NODE}/end_episode', SetBool.Request(data=success))
    assert reply.success, reply.message
    texts.append(reply.message)
    return json.loads(reply.message)


def test_blind_sequential_evaluation_decides_stops_and_never_shows_alpha(
        tiny_pi0_checkpoints, tmp_path, ros_harness):
    pre, ft = tiny_pi0_checkpoints
    log = tmp_path / 'episodes.jsonl'
    harness = ros_harness
    node = harness.start_node(pre, ft, episode_log=str(log), alpha_schedule=SETTINGS,
                              schedule_seed=5, blind=True, **DESIGN)
    topic = harness.subscribe(String, f'{NODE}/evaluation', ALL_QOS)
    first = json.loads(topic.wait(1)[-1].data)
    assert first['blind'] is True and 'counts' not in first
    assert first['running'] is None and first['finished'] is None
    assert first['next'].startswith('setting ') and first['remaining'] == 40
    assert first['sequential']['episodes_done'] == 0
    texts = []
    assert harness.set_params(episode_tag='split=new_ood;task=t;variation=v')[0].successful

    # an aborted episode is not counted and its setting comes again
    start = _call_start(harness, texts)
    assert start.success, start.message
    aborted = json.loads(start.message)
    aborted_alpha = node.config.alpha
    assert 'alpha' not in aborted and aborted['setting'] == first['next']
    harness.feed(0.3)
    running = json.loads(topic.wait(1, predicate=lambda m: json.loads(m.data)['running'])[-1]
                         .data)
    assert running['running'] == aborted['episode_id'] and running['next'] is None
    assert running['setting'] == aborted['setting']
    reply = harness.call(Trigger, f'{NODE}/abort_episode')
    assert reply.success, reply.message
    texts.append(reply.message)
    abort = json.loads(reply.message)
    assert abort['aborted'] is True and abort['success'] is None
    assert abort['next'] == aborted['setting'] and abort['remaining'] == 40
    nothing = harness.call(Trigger, f'{NODE}/abort_episode')
    assert not nothing.success and 'no episode is running' in nothing.message

    # the finetuned model (alpha = 1) always succeeds, alpha = 0.35 always fails
    outcomes, labels = [], {}
    for _ in range(2 * DESIGN['sequential_budget'] + 1):
        start = _call_start(harness, texts)
        if not start.success:
            break
        reply = json.loads(start.message)
        if not outcomes:
            assert reply['setting'] == aborted['setting'] and node.config.alpha == aborted_alpha
        labels[reply['setting']] = node.config.alpha
        end = _call_end(harness, texts, node.config.alpha == 1.0)
        outcomes.append(node.config.alpha == 1.0)
        assert end['setting'] == reply['setting'] and 'alpha' not in end
    finished = start.message
    assert not start.success and finished.startswith('evaluation finished: decided after')
    assert len(outcomes) < 2 * DESIGN['sequential_budget']      # stopped early: decided
    worse = next(label for label, alpha in labels.items() if alpha == 0.35)
    reference = next(label for label, alpha in labels.items() if alpha == 1.0)
    assert f'{reference} better than {worse}' in finished

    messages = [json.loads(m.data) for m in topic.wait(
        1, predicate=lambda m: json.loads(m.data)['finished'] is not None)]
    last = messages[-1]
    assert last['finished'] == 'decided' and last['running'] is None and last['next'] is None
    assert last['remaining'] == 0 and last['episodes_done'] == len(outcomes)
    assert last['sequential']['dropped'] == [worse] and last['sequential']['decided'] is True
    every = [m.data for m in topic.wait(len(outcomes))] + texts
    assert len(every) > 2 * len(outcomes)
    for text in every:
        assert not LEAK.search(text), f'alpha leaked to the blind operator: {text}'

    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == len(outcomes) + 1
    assert lines[0]['aborted'] is True and lines[0]['success'] is None
    assert lines[0]['setting'] == aborted['setting']
    assert lines[0]['sequential']['episodes_done'] == 0
    assert lines[0]['sequential']['aborted'] == 1
    assert [line['success'] for line in lines[1:]] == outcomes
    assert all('aborted' not in line for line in lines[1:])
    for i, line in enumerate(lines[1:], 1):
        assert line['sequential']['episodes_done'] == i      # the state after this episode
        assert line['alpha']['language'] == labels[line['setting']]   # the log unblinds
    assert lines[-1]['sequential']['stopped'] == 'decided'


def test_fixed_schedule_abort_counts_and_evaluation_topic(tiny_pi0_checkpoints, tmp_path,
                                                          ros_harness):
    pre, ft = tiny_pi0_checkpoints
    log = tmp_path / 'episodes.jsonl'
    harness = ros_harness
    harness.start_node(pre, ft, episode_log=str(log), alpha_schedule=['0', '1'],
                       schedule_seed=3, record=True, record_dir=str(tmp_path / 'bags'))
    topic = harness.subscribe(String, f'{NODE}/evaluation', ALL_QOS)
    first = json.loads(topic.wait(1)[-1].data)
    assert first['blind'] is False and first['sequential'] is None and first['remaining'] == 2
    assert first['counts'] == {label: {'n': 0, 'successes': 0, 'ci95': [0.0, 1.0]}
                               for label in ('alpha=0', 'alpha=1')}
    start = json.loads(harness.call(Trigger, f'{NODE}/start_episode').message)
    assert start['setting'] == first['next'] and 'alpha' in start
    harness.feed(0.3)
    abort = json.loads(harness.call(Trigger, f'{NODE}/abort_episode').message)
    assert abort['aborted'] is True and abort['next'] == start['setting']
    assert abort['remaining'] == 2
    # the bag is finished as at an end, with the aborted line
    assert abort['recording']['bag'] == str(tmp_path / 'bags' / start['episode_id'])
    stored = B.episode_of(abort['recording']['bag'])
    assert stored['aborted'] is True and stored['success'] is None
    assert B.read_metadata(abort['recording']['bag'])['custom_data'][B.STATUS_KEY] == \
        B.STATUS_COMPLETE
    again = json.loads(harness.call(Trigger, f'{NODE}/start_episode').message)
    assert again['setting'] == start['setting'] and again['alpha'] == start['alpha']
    harness.feed(0.3)
    end = harness.call(SetBool, f'{NODE}/end_episode', SetBool.Request(data=True))
    assert end.success and json.loads(end.message)['remaining'] == 1
    other = json.loads(harness.call(Trigger, f'{NODE}/start_episode').message)
    assert other['setting'] != start['setting']
    assert harness.call(SetBool, f'{NODE}/end_episode', SetBool.Request(data=False)).success
    done = harness.call(Trigger, f'{NODE}/start_episode')
    assert not done.success
    assert done.message.startswith('evaluation finished: alpha schedule exhausted')
    last = json.loads(topic.wait(1, predicate=lambda m: json.loads(m.data)['finished'])[-1]
                      .data)
    assert last['finished'] == 'schedule exhausted' and last['episodes_done'] == 2
    assert last['counts'][start['setting']]['n'] == 1
    assert last['counts'][start['setting']]['successes'] == 1
    assert last['counts'][other['setting']] == {'n': 1, 'successes': 0,
                                                'ci95': last['counts'][other['setting']]['ci95']}
    assert last['counts'][other['setting']]['ci95'][0] == 0.0
    assert 0.0 < last['counts'][other['setting']]['ci95'][1] < 1.0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [line['success'] for line in lines] == [None, True, False]
    assert lines[0]['aborted'] is True and 'aborted' not in lines[1]
    assert all('sequential' not in line for line in lines)
    assert lines[0]['setting'] == lines[1]['setting'] == start['setting']


def test_cleanup_tells_the_console_the_evaluation_is_gone(tiny_pi0_checkpoints, ros_harness):
    pre, ft = tiny_pi0_checkpoints
    harness = ros_harness
    harness.start_node(pre, ft, alpha_schedule=SETTINGS, **DESIGN)
    topic = harness.subscribe(String, f'{NODE}/evaluation', ALL_QOS)
    assert harness.call(Trigger, f'{NODE}/start_episode').success
    topic.wait(1, predicate=lambda m: json.loads(m.data)['running'])
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        request = ChangeState.Request(transition=Transition(id=transition))
        assert harness.call(ChangeState, f'{NODE}/change_state', request, timeout=60).success
    last = json.loads(topic.wait(1, predicate=lambda m: json.loads(m.data)['finished'])[-1]
                      .data)
    assert last['finished'] == 'node not configured (cleanup)'
    assert last['running'] is None and last['next'] is None and last['sequential'] is None
    assert not harness.call(Trigger, f'{NODE}/abort_episode').success
