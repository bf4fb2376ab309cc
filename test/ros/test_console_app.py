"""The console's view (blind scrubbing), access rules and web app, without a ROS graph."""
import json
import threading

import pytest

pytest.importorskip('fastapi')
pytest.importorskip('uvicorn')

from helpers.console_server import http  # noqa: E402
from helpers.console_server import serve_in_thread  # noqa: E402

from retain_ros.ros.console.app import ConsoleService  # noqa: E402
from retain_ros.ros.console.app import create_app  # noqa: E402
from retain_ros.ros.console.security import AccessControl  # noqa: E402
from retain_ros.ros.console.security import is_loopback  # noqa: E402
from retain_ros.ros.console.security import request_token  # noqa: E402
from retain_ros.ros.console.view import build_view  # noqa: E402
from retain_ros.ros.console.view import counts_with_intervals  # noqa: E402
from retain_ros.ros.console.view import is_blind  # noqa: E402
from retain_ros.ros.console.view import scrub  # noqa: E402

MERGE = {'alpha': {'vision': 0.35, 'language': 0.35, 'action': 0.35, 'other': 0.35},
         'recipe': 'interpolate', 'fingerprint': 'abc123', 'merge_ms': 1.0, 'valid': True}
DIAG = {'level': 0, 'message': 'acting',
        'values': {'lifecycle_state': 'active', 'alpha.language': '0.35', 'fingerprint': 'f'}}


def test_scrub_drops_keys_and_strings_naming_the_coefficient():
    data = {'alpha': 0.5, 'Alpha_language': 1, 'ok': ['alpha=0.5', 'setting B', 3],
            'nested': {'x': 'merge \u03b1 = 0.5', 'y': None}}
    assert scrub(data) == {'ok': ['(hidden: blind evaluation)', 'setting B', 3],
                           'nested': {'x': '(hidden: blind evaluation)', 'y': None}}


def test_blind_unless_the_node_says_otherwise():
    assert is_blind(None, None)                      # nothing heard yet: blind
    assert is_blind({'blind': True}, MERGE)
    assert not is_blind({'blind': False}, MERGE)
    assert is_blind({'blind': False}, {'alpha': 'hidden'})
    assert is_blind({'blind': False}, {'blind': True})
    assert is_blind({}, MERGE)                       # no blind field: blind


@pytest.mark.parametrize('blind', [True, False])
def test_view_hides_the_coefficient_when_blind(blind):
    evaluation = {'blind': blind, 'running': None, 'next': 'setting A' if blind else 'alpha=0.35',
                  'episodes_done': 3, 'remaining': 5, 'tag': 't',
                  'counts': {'alpha=0.35': {'n': 3, 'successes': 2, 'ci95': [0.2, 0.94]}},
                  'sequential': {'summary': '2 settings left, ~8 more episodes expected'}}
    merge = dict(MERGE, alpha='hidden', blind=True) if blind else MERGE
    view = build_view('/retain_policy', evaluation, merge, DIAG, 'split=new_ood', None,
                      {'action': 'start', 'ok': True, 'message': {'alpha': {'x': 0.35}}})
    text = json.dumps(view)
    assert view['blind'] is blind
    assert view['state']['fingerprint'] == 'abc123' and view['state']['level'] == 'ok'
    assert view['evaluation']['sequential']['summary'].startswith('2 settings left')
    if blind:
        assert 'alpha' not in text.lower() and '0.35' not in text
        assert 'counts' not in view['evaluation'] and 'weights' not in view['state']
    else:
        assert view['state']['weights'].startswith('vision=0.35')
        assert view['evaluation']['counts']['alpha=0.35']['rate'] == pytest.approx(2 / 3)


def test_counts_get_wilson_intervals_when_missing():
    rows = counts_with_intervals({'a': {'n': 10, 'successes': 5},
                                  'b': {'n': 0, 'successes': 0}})
    assert rows['a']['ci95'] == pytest.approx([0.2366, 0.7634], abs=1e-3)
    assert rows['b'] == {'n': 0, 'successes': 0, 'rate': None, 'ci95': [0.0, 1.0]}


def test_loopback_and_token_sources():
    assert is_loopback('127.0.0.1') and is_loopback('localhost') and is_loopback('[::1]')
    assert not is_loopback('0.0.0.0') and not is_loopback('10.213.7.1')
    assert request_token({'query_string': b'token=abc'}) == 'abc'
    assert request_token({'headers': [(b'x-console-token', b'h')]}) == 'h'
    assert request_token({'headers': [(b'authorization', b'Bearer b')]}) == 'b'
    assert request_token({'headers': [(b'cookie', b'x=1; retain_console_token=c')]}) == 'c'
    assert request_token({'headers': []}) is None


def test_loopback_rules_refuse_other_hosts_and_sites():
    rules = AccessControl(None, None)

    def scope(**headers):
        return {'headers': [(k.replace('_', '-').encode(), v.encode())
                            for k, v in headers.items()]}

    assert rules.refusal(scope(host='127.0.0.1:8765')) is None
    assert rules.refusal(scope(host='localhost:8765', origin='http://localhost:8765')) is None
    assert 'loopback' in rules.refusal(scope(host='evil.example:8765'))
    assert 'another site' in rules.refusal(scope(host='127.0.0.1:8765',
                                                 origin='https://evil.example'))


class FakeClient:
    """The :class:`ConsoleClient` duck type, without ROS."""

    target = '/retain_policy'
    camera_topic = None

    class preview:   # noqa: N801 - the attribute's name on the real client
        has_frame = False

        @staticmethod
        def jpeg():
            return None

    def __init__(self, blind=True):
        self.calls = []
        self.evaluation = {'blind': blind, 'running': None, 'next': 'setting B',
                           'episodes_done': 0, 'remaining': 4}

    def snapshot(self):
        return self.evaluation, {'alpha': 'hidden', 'blind': True, 'fingerprint': 'f'}, None, ''

    def call_action(self, action):
        self.calls.append(action)
        return True, json.dumps({'episode_id': 'e1', 'setting': 'setting B',
                                 'alpha': {'vision': 0.35}})

    def set_tag(self, tag):
        self.calls.append(('tag', tag))
        return True, ''


def test_token_required_off_loopback_and_actions_logged():
    client, lines = FakeClient(), []
    lock = threading.Lock()

    def log(line):
        with lock:
            lines.append(line)

    app = create_app(ConsoleService(client, log), token='s3cret', log=log)
    with serve_in_thread(app) as url:
        assert http(url + '/api/state')[0] == 403
        assert http(url + '/api/state?token=wrong')[0] == 403
        assert http(url + '/api/action', {'action': 'start'})[0] == 403
        assert client.calls == []
        status, headers, body = http(url + '/?token=s3cret')
        assert status == 200 and b'<title>retain_ros console</title>' in body
        assert 'retain_console_token=s3cret' in headers.get('set-cookie', '')
        assert http(url + '/api/state', headers={'Cookie': 'retain_console_token=s3cret'})[0] \
            == 200
        status, _, body = http(url + '/api/action', {'action': 'start'},
                               headers={'X-Console-Token': 's3cret'})
        reply = json.loads(body)
        assert status == 200 and reply['ok'] and reply['message']['setting'] == 'setting B'
        assert 'alpha' not in body.decode().lower()          # scrubbed: blind
        assert http(url + '/api/action', {'action': 'jump'},
                    headers={'X-Console-Token': 's3cret'})[0] == 400
        status, _, body = http(url + '/api/tag', {'tag': 'split=new_id'},
                               headers={'Authorization': 'Bearer s3cret'})
        assert status == 200 and client.calls == ['start', ('tag', 'split=new_id')]
        assert http(url + '/camera.jpg?token=s3cret')[0] == 204
        view = json.loads(http(url + '/api/state?token=s3cret')[2])
        assert [a['action'] for a in view['actions']] == ['tag', 'start']
        assert view['actions'][0]['client'].startswith('127.0.0.1:')
    refused = [x for x in lines if x.startswith('refused')]
    assert len(refused) == 3 and all('127.0.0.1:' in x for x in refused)
    actions = [x for x in lines if x.startswith('action ')]
    assert actions[0].startswith('action start from 127.0.0.1:') and 'alpha' not in actions[0]


def test_websocket_needs_the_token_and_pushes_the_view():
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    client = FakeClient()
    app = create_app(ConsoleService(client, lambda line: None), token='tok')
    with serve_in_thread(app) as url:
        ws_url = url.replace('http://', 'ws://') + '/ws'
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=5).close()
        assert refused.value.response.status_code == 403
        with connect(ws_url + '?token=tok', open_timeout=5) as ws:
            first = json.loads(ws.recv(timeout=5))
            assert first['blind'] is True and first['evaluation']['next'] == 'setting B'
            client.evaluation = dict(client.evaluation, next='setting A')
            assert json.loads(ws.recv(timeout=5))['evaluation']['next'] == 'setting A'
