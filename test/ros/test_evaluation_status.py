"""The ``~/evaluation`` message (``ros/policy_node/evaluation_status.py``): strict JSON, blind."""
import json
import math

import pytest

pytest.importorskip('rclpy')

from retain_ros.ros.policy_node.evaluation_status import blind_leak  # noqa: E402
from retain_ros.ros.policy_node.evaluation_status import EvaluationTopic  # noqa: E402
from retain_ros.ros.policy_node.evaluation_status import json_safe  # noqa: E402

pytestmark = pytest.mark.ros


class _Published(list):
    def publish(self, msg):
        self.append(msg.data)


class _Logger(list):
    def error(self, text):
        self.append(text)


class _Node:
    """The two things the topic needs from a node: a publisher and a logger."""

    def __init__(self):
        self.published, self.logger = _Published(), _Logger()
        self.context = type('Context', (), {'ok': staticmethod(lambda: True)})()

    def create_publisher(self, msg_type, topic, qos):
        assert topic == '~/evaluation'
        return self.published

    def get_logger(self):
        return self.logger


def test_json_safe_and_blind_leak():
    assert json_safe({'e': math.inf, 'p': [math.nan, 0.5], 'n': 3}) == {
        'e': None, 'p': [None, 0.5], 'n': 3}
    assert blind_leak('{"next": "setting B", "tag": "split=a"}') is None
    assert 'alpha=0.5' in blind_leak('{"design": {"reference": "alpha=0.5"}}')
    assert blind_leak('{"Alpha": 1}') is not None


def test_counts_are_omitted_when_blind_and_a_leaking_message_is_reduced():
    node = _Node()
    topic = EvaluationTopic(node)
    topic.reset(blind=False, labels=['alpha=0', 'alpha=1'])
    topic.count('alpha=1', True)
    topic.count('alpha=1', False)
    data = topic.message('ep1', 'alpha=1', None, 'split=a', 3, None, None)
    assert data['counts']['alpha=0'] == {'n': 0, 'successes': 0, 'ci95': [0.0, 1.0]}
    assert data['counts']['alpha=1']['n'] == 2 and data['counts']['alpha=1']['successes'] == 1
    assert data['episodes_done'] == 2
    topic.publish(data)
    assert json.loads(node.published[-1]) == data

    topic.reset(blind=True, labels=['setting A', 'setting B'])
    status = {'summary': '2 settings left', 'decided': False, 'stopped': None,
              'comparisons': [{'e_value': math.inf}]}
    data = topic.message(None, None, 'setting A', '', 40, status, None)
    assert 'counts' not in data and data['sequential']['comparisons'][0]['e_value'] is None
    assert json.loads(topic.publish(data)) == data and not node.logger
    data['sequential']['design'] = {'reference': 'alpha=1'}        # a leak
    sent = json.loads(topic.publish(data))
    assert 'alpha' not in json.dumps(sent) and sent['sequential'] == {
        'decided': False, 'stopped': None}
    assert 'would reveal alpha' in node.logger[-1]
