"""Closed loop through the real ROS graph: ``retain-ros demo`` with quickly trained checkpoints.

Separate processes (sim node, policy node, orchestrator) exchange real messages; alpha changes
go through the policy node's SetParameters service; the sim ends each episode from its success
test by calling the node's ``~/end_episode``. The policy is barely trained (a few steps), so this
proves the loop, not the policy.
"""
import json
import os
import random
import subprocess
import sys

import pytest

pytest.importorskip('rclpy')

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_runs_end_to_end(tmp_path):
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(random.randint(101, 200)),
               RETAIN_ROS_DEMO_DIR=str(tmp_path / 'ckpt'), PYTHONUNBUFFERED='1')
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'retain_ros.cli', 'demo', '--out', str(out), '--quick-train',
           '--episodes', '1', '--alphas', '0,1', '--language-only', '0.5',
           '--episode-timeout', '2.5', '--startup-timeout', '120']
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lines = (out / 'episodes.jsonl').read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # 4 settings (0, 1, language-only, the default group setting) x 3 splits x 1 episode, every
    # one logged by the policy node
    assert len(records) == 12
    assert {r['split'] for r in records} == {'generalist', 'new_id', 'new_ood'}
    settings = {tuple(sorted(r['alpha'].items())) for r in records}
    assert len(settings) == 4
    assert {r['alpha']['language'] for r in records} == {0.0, 0.5, 1.0}
    assert {(r['alpha']['vision'], r['alpha']['language'], r['alpha']['action'])
            for r in records if r['alpha']['action'] == 0.0} == {(0.0, 0.0, 0.0), (0.5, 0.5, 0.0)}
    for r in records:
        assert r['fingerprint'] and r['chunks'] >= 1, r
        assert r['instruction'] and isinstance(r['success'], bool)
    # alpha=0 and alpha=1 are different weights: different fingerprints
    fingerprints = {r['alpha']['vision']: r['fingerprint'] for r in records
                    if r['alpha']['language'] == r['alpha']['vision']}
    assert fingerprints[0.0] != fingerprints[1.0]
    assert (out / 'success.png').stat().st_size > 10_000
    report = (out / 'report.md').read_text()
    assert 'Wilson' in report
    assert 'new task OOD' in result.stdout
