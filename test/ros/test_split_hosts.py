"""Policy on one host, robot on another: two network namespaces joined by a veth pair.

The simulated robot (``retain-ros sim``, cameras as JPEG ``CompressedImage``) runs in one
namespace, the policy node and the operator's episode driver in the other; DDS discovers across
the link (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` multicast, or ``ROS_STATIC_PEERS`` unicast
with multicast switched off on the link), over UDP only. A closed-loop episode must succeed and
be logged by the node. Skipped, with the reason, where namespaces cannot be made (not root, no
iproute2). The plumbing is :class:`retain_ros.ros.tools.split_hosts.SplitHosts`, with which
``benchmarks/network_split.py`` also measures the link; the operator's side is the episode
driver of ``retain-ros demo`` (:mod:`retain_ros.ros.closed_loop_demo.driver`).

The policy is a tiny pi0 whose action statistics pin its output to the scene's goal joints
(action std 1e-6 around the inverse-kinematics solution): the model, merge, node, safety
filter, sim and both links run for real, but success does not depend on training a policy
(the demo's trained checkpoints take minutes to train; quick-trained ones never succeed).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('rclpy')

from retain_ros.ros.closed_loop_demo.processes import write_params  # noqa: E402
from retain_ros.ros.tools.split_hosts import NetnsUnavailable  # noqa: E402
from retain_ros.ros.tools.split_hosts import POLICY  # noqa: E402
from retain_ros.ros.tools.split_hosts import ROBOT  # noqa: E402
from retain_ros.ros.tools.split_hosts import SplitHosts  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TASK, SPLIT, SEED = 'reach_yellow', 'new_id', 3


def _goal_checkpoints(out_dir):
    """Pretrained / finetuned tiny pi0 whose actions are the scene's goal joints."""
    from retain_ros.policies.pi0 import load_tokenizer
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import Pi0Policy
    from retain_ros.policies.pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0 import save_byte_tokenizer
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.policies.pi0 import tiny_pi0_config
    from retain_ros.ros.closed_loop_demo.sweep import CONTROL_PERIOD
    from retain_ros.sim.expert import goal_joints
    from retain_ros.sim.world import SimWorld

    world = SimWorld()
    world.reset(TASK, SPLIT, SEED)
    goal = goal_joints(world)
    dim = len(goal)
    stats = NormStats(np.zeros(dim), np.ones(dim), goal, np.full(dim, 1e-6), source='goal')
    spec = pi0_config_from_dict(tiny_pi0_config(
        state_dim=dim, action_dim=dim, camera_names=('base',), image_size=32,
        control_period=CONTROL_PERIOD))
    paths = []
    for seed, name in ((1, 'pretrained'), (2, 'finetuned')):
        root = os.path.join(str(out_dir), name)
        tokenizer = load_tokenizer(save_byte_tokenizer(os.path.join(root, 'tokenizer')))
        policy = Pi0Policy.from_spec(spec, tokenizer, stats, init_weights=True, init_seed=seed)
        paths.append(save_pi0_checkpoint(policy, root))
    return paths


@pytest.fixture
def make_hosts():
    """``make_hosts(**kwargs)`` -> a :class:`SplitHosts`, torn down after the test."""
    made = []

    def make(**kwargs):
        try:
            made.append(SplitHosts(**kwargs))
        except NetnsUnavailable as exc:
            pytest.skip(f'cannot make network namespaces: {exc}')
        return made[-1]

    try:
        yield make
    finally:
        names = [n for h in made for n in h.ns.values()]
        for h in made:
            h.close()
        # torn down in every case: no namespace of ours is left
        left = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout
        assert not [n for n in names if n in left], left


def _closed_loop(hosts, tmp_path, discovery):
    from retain_ros.ros.closed_loop_demo.driver import POLICY as POLICY_NODE
    from retain_ros.ros.closed_loop_demo.driver import SIM
    from retain_ros.ros.closed_loop_demo.sweep import policy_params

    pre, ft = _goal_checkpoints(tmp_path / 'ckpt')
    log_path = str(tmp_path / 'episodes.jsonl')
    policy_file = write_params(str(tmp_path / 'policy.yaml'), POLICY_NODE, policy_params(
        pre, ft, log_path, camera_topic='camera/image_raw/compressed', device='cpu'))
    sim_file = write_params(str(tmp_path / 'sim.yaml'), SIM, {
        'image_format': 'jpeg', 'auto_end_episode': True, 'episode_timeout': 10.0,
        'policy_node': f'/{POLICY_NODE}'})
    env = hosts.ros_env(discovery, ros_home=str(tmp_path / 'ros_home'))
    logs = {}

    def start(host, name, argv):
        logs[name] = open(tmp_path / f'{name}.log', 'w', encoding='utf-8')
        return hosts.popen(host, [sys.executable, *argv], env=env, stdout=logs[name],
                           stderr=subprocess.STDOUT, cwd=ROOT)

    def tails():
        for f in logs.values():
            f.flush()
        return '\n'.join(f'--- {name}\n' + (tmp_path / f'{name}.log').read_text()[-2500:]
                         for name in logs)

    before = hosts.link_bytes()
    start(ROBOT, 'sim', ['-m', 'retain_ros.cli', 'sim', '--ros-args', '--params-file',
                         sim_file])
    start(POLICY, 'node', ['-m', 'retain_ros.cli', 'node', '--ros-args', '--params-file',
                           policy_file])
    driver = start(POLICY, 'driver', ['-m', 'retain_ros.ros.closed_loop_demo.driver',
                                      '--task', TASK, '--split', SPLIT,
                                      '--seed', str(SEED), '--timeout', '10',
                                      '--startup-timeout', '90'])
    try:
        driver.wait(timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail('the episode driver did not finish in 150 s\n' + tails())
    after = hosts.link_bytes()
    text = (tmp_path / 'driver.log').read_text()
    assert driver.returncode == 0, tails()
    outcome = json.loads([ln for ln in text.splitlines() if ln.startswith('RESULT ')][-1][7:])
    assert outcome['success'] is True and outcome['reason'] == 'success', (outcome, tails())
    assert outcome['reported'] is True, outcome        # end_episode answered across the link
    records = [json.loads(line) for line in open(log_path, encoding='utf-8')]
    assert len(records) == 1, records
    record = records[0]
    assert record['success'] is True and record['chunks'] >= 1, record
    assert record['fingerprint'] and record['alpha']['language'] == 1.0, record
    assert f'seed={SEED}' in record.get('tag', f'seed={SEED}'), record
    # the camera stream went through the veth (not shared memory): JPEG frames robot -> policy
    sent = after['robot_tx'] - before['robot_tx']
    assert sent > 20_000, (before, after)
    assert 'compressed' in (tmp_path / 'sim.log').read_text()
    return record


def test_closed_loop_episode_across_two_hosts_subnet_discovery(make_hosts, tmp_path):
    _closed_loop(make_hosts(relay=False), tmp_path, 'SUBNET')


def test_closed_loop_episode_with_static_peers_and_no_multicast(make_hosts, tmp_path):
    """Where multicast is dropped (Wi-Fi access points often do): ROS_STATIC_PEERS.

    The link's relay drops every multicast frame, which stops SUBNET discovery (checked by
    hand: a talker and listener never meet); static peers discover by unicast.
    """
    hosts = make_hosts(drop_multicast=True)
    assert hosts.delay_mode == 'relay'
    _closed_loop(hosts, tmp_path, 'STATIC')
