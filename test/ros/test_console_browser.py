"""The operator console in a real headless browser (Debian Chromium + chromedriver, Selenium).

A real ``retain_policy`` node (tiny pi0 checkpoints, a blind two-setting sequential schedule)
acts on the simulated robot; ``retain-ros console`` runs as its own process. The browser starts
and judges episodes with the keyboard, sets the scene tag, and every page text, JS state, HTTP
body and websocket frame it saw is searched for the merge coefficient. Bound to a non-loopback
address, a request without the token is refused.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('selenium')
pytest.importorskip('fastapi')

from conftest import RosHarness  # noqa: E402
from conftest import write_tiny_pi0  # noqa: E402
from helpers.console_server import ConsoleProcess  # noqa: E402
from helpers.console_server import free_port  # noqa: E402
from helpers.console_server import http  # noqa: E402
from helpers.console_server import wait_http  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from retain_ros.ros.policy_node.params import SPECS  # noqa: E402
from retain_ros.ros.sim_robot.node import SimRobotNode  # noqa: E402
from retain_ros.sim.world import JOINT_NAMES  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
#: the two settings: values that appear nowhere else in the console's traffic
SETTINGS = ['0.35', '0.85']
FORBIDDEN = ('alpha', '\u03b1', '0.35', '0.85')
TAG = 'split=new_ood;task=reach_red;variation=console'
NON_LOCAL = '10.213.63.1'


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f'{CHROMIUM} / {CHROMEDRIVER} missing: install the Debian packages chromium '
                    'and chromium-driver (bash .ci/setup does, as root)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                '--window-size=1280,860', '--no-first-run', '--disable-extensions'):
        options.add_argument(arg)
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait_view(driver, predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    view = None
    while time.monotonic() < deadline:
        view = driver.execute_script('return window.consoleState;')
        if view and predicate(view):
            return view
        time.sleep(0.1)
    raise AssertionError(f'timed out waiting for {what}; last view: {json.dumps(view)}')


def _press(driver, key, button, timeout=20.0):
    """Press ``key`` once the page enables ``button`` (as the operator sees it)."""
    from selenium.webdriver.common.action_chains import ActionChains

    deadline = time.monotonic() + timeout
    while driver.find_element('id', button).get_attribute('disabled') is not None:
        assert time.monotonic() < deadline, f'{button} stayed disabled'
        time.sleep(0.05)
    ActionChains(driver).send_keys(key).perform()


def _traffic(driver):
    """Return ``(texts, kinds)``: every websocket frame and text body the browser saw."""
    texts, kinds = [], set()
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        method, params = message.get('method'), message.get('params', {})
        if method in ('Network.webSocketFrameReceived', 'Network.webSocketFrameSent'):
            texts.append(params['response']['payloadData'])
            kinds.add(method)
        elif method == 'Network.requestWillBeSent':
            texts.append(params['request']['url'])
            texts.append(params['request'].get('postData', ''))
        elif method == 'Network.responseReceived':
            mime = params['response'].get('mimeType', '')
            if mime.startswith('image/'):
                continue
            try:
                body = driver.execute_cdp_cmd('Network.getResponseBody',
                                              {'requestId': params['requestId']})
            except Exception:  # noqa: B902 - a body the browser no longer keeps (redirects)
                continue
            texts.append(body['body'])
            kinds.add(mime)
    return texts, kinds


def _leaks(texts):
    return [(word, t[max(0, t.lower().find(word) - 60):t.lower().find(word) + 60])
            for t in texts for word in FORBIDDEN if word in t.lower()]


@pytest.fixture(scope='module')
def sim_checkpoints(tmp_path_factory):
    """Two tiny pi0 checkpoints for the sim's 3 joints."""
    root = tmp_path_factory.mktemp('console_ckpt')
    return (write_tiny_pi0(root / 'pre', seed=1, state_dim=3, action_dim=3),
            write_tiny_pi0(root / 'ft', seed=2, state_dim=3, action_dim=3))


def _start_graph(harness, checkpoints, log, **params):
    """Start the sim robot and a policy node on a two-setting schedule in ``harness``."""
    sim = SimRobotNode(context=harness.context, parameter_overrides=[
        Parameter('image_size', value=32), Parameter('camera_rate', value=10.0),
        Parameter('task', value='reach_red')])
    harness.executor.add_node(sim)
    harness.nodes.append(sim)
    harness.start_node(*checkpoints, joint_names=list(JOINT_NAMES), episode_log=str(log),
                       alpha_schedule=SETTINGS, schedule_seed=5, schedule_repeats=3, **params)


def test_console_in_a_headless_browser(sim_checkpoints, tmp_path):
    driver = _browser()
    log = tmp_path / 'episodes.jsonl'
    harness = RosHarness()
    console = None
    try:
        sequential = {'sequential': True, 'sequential_budget': 50,
                      'sequential_reference': 'best'} if 'sequential' in SPECS else {}
        _start_graph(harness, sim_checkpoints, log, blind=True, **sequential)
        port = free_port()
        console = ConsoleProcess('--node', '/retain_policy', '--port', str(port))
        url = console.url()
        assert url == f'http://127.0.0.1:{port}/' and 'token' not in console.output()
        wait_http(url)
        driver.get(url)
        view = _wait_view(driver, lambda v: v['connected'] and v['state'].get('level') == 'ok'
                          and v['evaluation'].get('next') and v['camera'],
                          'the node acting, the next setting and a camera frame', 60)
        assert view['blind'] is True and view['evaluation']['next'].startswith('setting ')
        first_label = view['evaluation']['next']
        assert first_label in driver.find_element('id', 'next').text
        # the tag: typed into the page, set on the node through its parameter service
        field = driver.find_element('id', 'tag')
        field.clear()
        field.send_keys(TAG + '\n')
        _wait_view(driver, lambda v: v['tag'] == TAG and v['last']
                   and v['last']['action'] == 'tag', 'the tag set')
        assert harness.nodes[-1].get_parameter('episode_tag').value == TAG
        # start with the keyboard, let the robot act, judge a success with the right arrow
        _press(driver, 's', 'btn-start')
        # the evaluation topic may show the episode running before the start's reply arrives
        view = _wait_view(driver, lambda v: v['evaluation'].get('running') and v['last']
                          and v['last']['action'] == 'start', 'episode running')
        assert view['last']['ok'] and view['last']['message']['setting'] == first_label
        time.sleep(1.0)
        from selenium.webdriver.common.keys import Keys
        _press(driver, Keys.ARROW_RIGHT, 'btn-success')
        _wait_view(driver, lambda v: v['evaluation'].get('episodes_done') == 1
                   and not v['evaluation'].get('running'), 'episode 1 judged')
        # start, abort with 'a' (not counted), start, judge a failure with 'n'
        _press(driver, 's', 'btn-start')
        _wait_view(driver, lambda v: v['evaluation'].get('running'), 'episode 2 running')
        _press(driver, 'a', 'btn-abort')
        view = _wait_view(driver, lambda v: v['last'] and v['last']['action'] == 'abort',
                          'the abort answered')
        assert view['last']['ok'], view['last']
        assert view['evaluation']['episodes_done'] == 1 and not view['evaluation']['running']
        _press(driver, 's', 'btn-start')
        _wait_view(driver, lambda v: v['evaluation'].get('running'), 'episode 3 running')
        time.sleep(0.5)
        _press(driver, 'n', 'btn-failure')
        view = _wait_view(driver, lambda v: v['evaluation'].get('episodes_done') == 2
                          and not v['evaluation'].get('running'), 'episode 3 judged')
        text = driver.find_element('tag name', 'body').text
        assert 'hidden while the evaluation is blind' in text and 'episodes done: 2' in text
        if sequential:
            summary = view['evaluation']['sequential']['summary']
            assert summary and summary in text
        assert driver.find_element('id', 'fingerprint').text not in ('', '-')
        assert 'active' in driver.find_element('id', 'lifecycle').text
        shot = os.environ.get('RETAIN_CONSOLE_SCREENSHOT') or str(tmp_path / 'console.png')
        assert driver.save_screenshot(shot)
        with open(shot, 'rb') as handle:
            assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
        # nothing the browser shows, keeps or received names the coefficient
        page = [text, driver.page_source,
                driver.execute_script('return JSON.stringify(window.consoleState);')]
        texts, kinds = _traffic(driver)
        assert 'Network.webSocketFrameReceived' in kinds and 'text/html' in kinds
        assert 'application/javascript' in kinds or 'text/javascript' in kinds
        assert _leaks(page + texts) == []
    finally:
        driver.quit()
        if console is not None:
            console.stop()
        harness.shutdown()
    out = console.output()
    assert 'action tag from 127.0.0.1:' in out and 'action abort from 127.0.0.1:' in out
    assert out.count('action start from 127.0.0.1:') == 3
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    counted = [x for x in lines if not x.get('aborted')]
    assert [x['success'] for x in counted] == [True, False]
    assert all(x['tag'] == TAG for x in lines) and all(x['alpha_hidden'] for x in lines)


def test_counts_table_and_plot_when_not_blind(sim_checkpoints, tmp_path):
    """Not blind: the counts table and the plot show each setting and update after a judgment."""
    driver = _browser()
    harness = RosHarness()
    console = None
    try:
        _start_graph(harness, sim_checkpoints, tmp_path / 'episodes.jsonl', blind=False)
        port = free_port()
        console = ConsoleProcess('--node', '/retain_policy', '--port', str(port),
                                 '--camera', 'none')
        wait_http(console.url())
        driver.get(console.url())
        view = _wait_view(driver, lambda v: v['connected'] and v['evaluation'].get('next')
                          and v['blind'] is False, 'the next setting, not blind', 60)
        first = view['evaluation']['next']
        assert first.startswith('alpha=')
        _press(driver, 's', 'btn-start')
        _wait_view(driver, lambda v: v['evaluation'].get('running'), 'episode running')
        _press(driver, 'y', 'btn-success')
        _wait_view(driver, lambda v: v['evaluation'].get('episodes_done') == 1
                   and not v['evaluation'].get('running'), 'episode judged')
        table = driver.find_element('id', 'counts-table')
        deadline = time.monotonic() + 10
        while first not in table.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert table.is_displayed() and first in table.text, table.text
        row = [r for r in table.text.splitlines() if r.startswith(first)][0]
        assert ' 1 1 ' in f' {row} ', row          # 1 episode, 1 success
        plot = driver.find_element('id', 'plot')
        assert plot.is_displayed()
        assert len(plot.find_elements('tag name', 'circle')) >= 1
        assert not driver.find_element('id', 'counts-hidden').is_displayed()
    finally:
        driver.quit()
        if console is not None:
            console.stop()
        harness.shutdown()


@pytest.fixture
def non_local_address():
    """Add the address :data:`NON_LOCAL` to this machine (root), remove it afterwards."""
    if os.geteuid() != 0 or shutil.which('ip') is None:
        pytest.skip('adding a non-loopback address needs root and iproute2')
    added = []
    for commands in ([['ip', 'link', 'add', 'rr63', 'type', 'dummy'],
                      ['ip', 'addr', 'add', f'{NON_LOCAL}/24', 'dev', 'rr63'],
                      ['ip', 'link', 'set', 'rr63', 'up']],
                     [['ip', 'addr', 'add', f'{NON_LOCAL}/32', 'dev', 'lo']]):
        ok = all(subprocess.run(c, capture_output=True).returncode == 0 for c in commands)
        if ok:
            added = commands
            break
        subprocess.run(['ip', 'link', 'del', 'rr63'], capture_output=True)
    if not added:
        pytest.skip(f'cannot add {NON_LOCAL} (no dummy links and no address on lo)')
    try:
        yield NON_LOCAL
    finally:
        if len(added) == 3:
            subprocess.run(['ip', 'link', 'del', 'rr63'], capture_output=True)
        else:
            subprocess.run(['ip', 'addr', 'del', f'{NON_LOCAL}/32', 'dev', 'lo'],
                           capture_output=True)


def test_non_local_address_needs_the_token(non_local_address):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port = free_port(non_local_address)
    console = ConsoleProcess('--host', non_local_address, '--port', str(port),
                             '--camera', 'none')
    driver = None
    try:
        url = console.url()
        base = f'http://{non_local_address}:{port}/'
        assert url.startswith(base + '?token=')
        token = url.split('?token=', 1)[1]
        assert len(token) >= 40 and console.output().count(token) == 1   # printed once
        assert wait_http(base) == 403
        assert http(base + 'api/state')[0] == 403
        assert http(base + 'api/action', {'action': 'start'})[0] == 403
        with pytest.raises(InvalidStatus) as refused:
            connect(base.replace('http', 'ws') + 'ws', open_timeout=5).close()
        assert refused.value.response.status_code == 403
        assert http(base + 'api/state', headers={'X-Console-Token': token})[0] == 200
        with connect(base.replace('http', 'ws') + f'ws?token={token}', open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))['node'] == '/retain_policy'
        driver = _browser()
        driver.get(base)
        assert '403 forbidden' in driver.find_element('tag name', 'body').text
        driver.get(url)            # the printed URL: the page, then the cookie carries the token
        view = _wait_view(driver, lambda v: v['node'] == '/retain_policy', 'the page with token')
        assert view['blind'] is True      # no node heard: blind
    finally:
        if driver is not None:
            driver.quit()
        console.stop()
    assert 'refused http / from' in console.output()
