"""Evaluation episodes with a seeded, blind alpha schedule applied through the alpha parameters."""
import json

import pytest

pytest.importorskip('rclpy')

from conftest import RosHarness  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from retain_ros.evaluation.schedule import AlphaSchedule  # noqa: E402
from retain_ros.evaluation.schedule import effective_alphas  # noqa: E402
from retain_ros.ros.policy_node.node import LATCHED_QOS  # noqa: E402

SETTINGS = ['0', '1', 'alpha=1,language=0.5']


def test_blind_schedule_episodes(tiny_pi0_checkpoints, tmp_path):
    log = tmp_path / 'episodes.jsonl'
    harness = RosHarness()
    try:
        pre, ft = tiny_pi0_checkpoints
        harness.start_node(pre, ft, episode_log=str(log), alpha_schedule=SETTINGS,
                           schedule_seed=3, schedule_repeats=1, blind=True)
        merge = harness.subscribe(String, '/retain_policy/merge_state', LATCHED_QOS)
        assert json.loads(merge.wait(1)[-1].data)['alpha'] == 'hidden'
        expected = AlphaSchedule(SETTINGS, repeats=1, seed=3).order
        for i, setting in enumerate(expected):
            assert harness.set_params(episode_tag=f'split=new_ood;task=t;variation=v{i}')[0] \
                .successful
            start = harness.call(Trigger, '/retain_policy/start_episode')
            assert start.success, start.message
            reply = json.loads(start.message)
            assert 'alpha' not in reply and reply['setting'].startswith('setting ')
            assert reply['remaining'] == len(expected) - i - 1
            state = json.loads(merge.wait(1)[-1].data)
            assert state['alpha'] == 'hidden' and state['blind'] is True
            harness.feed(0.4)
            end = harness.call(SetBool, '/retain_policy/end_episode',
                               SetBool.Request(data=i % 2 == 0))
            assert end.success, end.message
            assert 'alpha' not in json.loads(end.message)
        done = harness.call(Trigger, '/retain_policy/start_episode')
        assert not done.success and 'exhausted' in done.message
    finally:
        harness.shutdown()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == len(expected)
    for i, (line, setting) in enumerate(zip(lines, expected)):
        assert line['alpha'] == effective_alphas(setting)   # the log records the real alpha
        assert line['alpha_hidden'] is True
        assert line['success'] is (i % 2 == 0)
        assert line['split'] == 'new_ood' and line['variation'] == f'v{i}'
        assert line['chunks'] >= 1
    assert len({line['fingerprint'] for line in lines}) == len(expected)
