"""``retain-ros demo --adaptive``: scenes, node parameters, the loop, and a run through ROS.

The loop is tested against the real :class:`AdaptiveSchedule` behind a stand-in driver (what the
node does at ``~/start_episode`` / ``~/end_episode``); the slow test runs the whole demo through
the real ROS graph with quickly trained checkpoints (it proves the loop, not the policy).
"""
import json
import os
import random
import subprocess
import sys

import pytest

from retain_ros.evaluation.adaptive_schedule import AdaptiveSchedule
from retain_ros.evaluation.schedule import describe
from retain_ros.evaluation.sequential import SequentialDesign
from retain_ros.ros.closed_loop_demo import adaptive
from retain_ros.ros.closed_loop_demo import sweep
from retain_ros.sim.tasks import tasks_for_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = sweep.build_settings('0,0.5,1', -1, '')
#: the slow run's design: 2 settings, at most 4 episodes each (a gap of 1 is reachable)
BUDGET, GAP = 4, 1.0


def test_adaptive_scenes_are_the_fixed_sweeps_scenes_splits_interleaved():
    scenes = adaptive.adaptive_scenes(30, seed=2)
    fixed = {(e.split, e.task, e.seed) for e in sweep.build_plan(SETTINGS, 10, seed=2)}
    assert set(scenes) == fixed and len(scenes) == 30
    assert [s[0] for s in scenes[:4]] == ['generalist', 'new_id', 'new_ood', 'generalist']
    assert [s[2] for s in scenes[:4]] == [2000, 2000, 2000, 2001]
    # a budget that is not a multiple of the splits stops mid-round
    assert adaptive.adaptive_scenes(3, seed=0, splits=['new_ood']) == [
        ('new_ood', 'reach_yellow', k) for k in range(3)]
    generalist = tasks_for_split('generalist')
    assert adaptive.adaptive_scenes(4, seed=0) == [
        ('generalist', generalist[0], 0), ('new_id', 'reach_yellow', 0),
        ('new_ood', 'reach_yellow', 0), ('generalist', generalist[1], 1)]


def test_sequential_params_name_the_reference_as_the_schedule_does():
    params = adaptive.sequential_params(SETTINGS, adaptive.AdaptiveOptions('1', budget=20), 3)
    assert params == {
        'alpha_schedule': ['alpha=0', 'alpha=0.5', 'alpha=1'], 'schedule_seed': 3,
        'sequential': True, 'sequential_reference': 'alpha=1', 'sequential_level': 0.05,
        'sequential_power': 0.8, 'sequential_gap': 0.5, 'sequential_budget': 20}
    best = adaptive.sequential_params(SETTINGS, adaptive.AdaptiveOptions(' Best'), 0)
    assert best['sequential_reference'] == 'best'


def test_the_default_design_fits_the_default_sweep():
    """30 episodes per setting (the fixed sweep's) reach the power at the default gap."""
    settings = sweep.build_settings(sweep.DEFAULT_ALPHAS, sweep.DEFAULT_LANGUAGE_ONLY,
                                    sweep.DEFAULT_GROUP_SETTINGS)
    assert len(settings) == 7
    for reference in ('alpha=1', 'best'):
        options = adaptive.AdaptiveOptions(reference, budget=30)
        assert adaptive.sequential_params(settings, options, 0)['sequential_gap'] == 0.5


@pytest.mark.parametrize('options, message', [
    (adaptive.AdaptiveOptions('alpha=0.75'), r"'alpha=0.75' is not one of the settings"),
    (adaptive.AdaptiveOptions('alpha=2'), r"--reference 'alpha=2'"),
    (adaptive.AdaptiveOptions(level=0.5), r'--level 0.5 .*level 0.5 is outside \(0, 0.5\)'),
    (adaptive.AdaptiveOptions(power=1.0), r'power 1.0 is outside'),
    (adaptive.AdaptiveOptions(gap=0.0), r'gap 0.0 is outside'),
    (adaptive.AdaptiveOptions(budget=1), r'budget 1 must be an integer from 2'),
    # the budget cannot reach the power: the message names the budget that would
    (adaptive.AdaptiveOptions(gap=0.3, budget=30), r'a budget of \d+ episodes per setting '
                                                   r'reaches it'),
])
def test_sequential_params_refuse_what_the_node_would_refuse(options, message):
    with pytest.raises(sweep.DemoError, match=message):
        adaptive.sequential_params(SETTINGS, options, 0)


def test_adaptive_needs_two_settings():
    with pytest.raises(sweep.DemoError, match='at least two settings'):
        adaptive.sequential_params(SETTINGS[:1], adaptive.AdaptiveOptions('0'), 0)


class ScheduleDriver:
    """Stands in for the driver and the node: the real schedule, outcomes drawn per setting.

    As the node, it draws the next setting ahead (``next`` of ``~/evaluation``), applies it at
    the start, records the outcome with the episode's tag, and refuses once finished.
    """

    def __init__(self, rates, budget, gap=0.5, seed=0):
        settings = [f'alpha={a:g}' for a in rates]
        self.rates = {f'alpha={a:g}': p for a, p in rates.items()}
        design = SequentialDesign(gap=gap, budget=budget, reference='alpha=1')
        self.schedule = AdaptiveSchedule(settings, design, seed=seed)
        self.rng = random.Random(seed)
        self.log = []

    def evaluation(self, timeout=10.0, done=None):
        status = self.schedule.status()
        try:
            label = self.schedule.label(self.schedule.next())
        except StopIteration:
            label = None
        return {'running': None, 'next': label, 'episodes_done': status['episodes_done'],
                'sequential': status, 'finished': status['stopped']}

    def run_scheduled_episode(self, split, task, seed, timeout):
        try:
            label = self.schedule.label(self.schedule.next())
        except StopIteration:
            return None, None
        tag = f'split={split};task={task};seed={seed}'
        success = self.rng.random() < self.rates[label]
        self.schedule.record(success, tag)
        self.log.append((label, tag, success))
        return {'setting': label, 'tag': tag}, {'success': success}


def test_run_adaptive_pairs_each_block_on_one_scene_until_the_schedule_stops():
    driver = ScheduleDriver({0: 0.1, 0.5: 0.5, 1: 0.9}, budget=20)
    scenes = adaptive.adaptive_scenes(20, seed=0)
    seen = []
    result = adaptive.run_adaptive(driver, scenes, 1.0, lambda *a: seen.append(a[:2]))
    state = result.state
    assert state['finished'] in ('decided', 'budget') and state['next'] is None
    assert result.episodes == len(driver.log) == len(seen) == state['episodes_done']
    assert state['sequential']['mixed_tag_blocks'] == 0
    # the n-th episode of every setting ran scene n
    for label, (n, won) in result.counts.items():
        tags = [t for lab, t, _ in driver.log if lab == label]
        assert tags == [f'split={s};task={t};seed={k}' for s, t, k in scenes[:n]]
        assert won == sum(ok for lab, _, ok in driver.log if lab == label)
    # alpha=0 (10%) against alpha=1 (90%) is decided well before the budget
    decisions = {(c['a'], c['b']): c['decision'] for c in state['sequential']['comparisons']}
    assert decisions[('alpha=0', 'alpha=1')] == 'b better'
    assert result.counts['alpha=0'][0] < 20


def test_run_adaptive_refuses_a_setting_started_out_of_turn():
    class Swapped(ScheduleDriver):
        def run_scheduled_episode(self, split, task, seed, timeout):
            reply, outcome = super().run_scheduled_episode(split, task, seed, timeout)
            return dict(reply, setting='alpha=7'), outcome

    with pytest.raises(sweep.DemoError, match='announced alpha=.* next but started alpha=7'):
        adaptive.run_adaptive(Swapped({0: 0.1, 1: 0.9}, budget=6, gap=1.0),
                              adaptive.adaptive_scenes(6, 0), 1.0)


def _result():
    result = adaptive.AdaptiveResult(counts={'alpha=0': [4, 0], 'alpha=1': [9, 8]})
    result.state = {'finished': 'decided', 'sequential': {
        'design': {'level': 0.05, 'budget': 10}, 'settings_left': ['alpha=1'],
        'dropped': ['alpha=0'], 'comparisons': [
            {'a': 'alpha=0', 'b': 'alpha=1', 'pairs': 4, 'e_value': 41.5, 'p_value': 0.012,
             'decision': 'b better'}]}}
    return result


def test_format_result_prints_decisions_and_episodes_against_the_fixed_sweep():
    text = adaptive.format_result(_result(), settings=2, fixed_episodes=60, fixed_per_cell=10)
    assert 'adaptive sweep finished: decided' in text
    assert 'alpha=0 vs alpha=1' in text and 'b better' in text and '0.012' in text
    assert 'dropped (decided worse): alpha=0' in text
    assert 'episodes used: 13 over 2 settings; the fixed sweep runs 60 (10 per setting and ' \
           'split) on the same scenes: 78% fewer' in text
    more = adaptive.format_result(_result(), settings=2, fixed_episodes=10, fixed_per_cell=1)
    assert '30% more' in more


@pytest.mark.slow
@pytest.mark.ros
def test_adaptive_demo_runs_until_the_node_finishes(tmp_path):
    pytest.importorskip('rclpy')
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(random.randint(101, 200)),
               RETAIN_ROS_DEMO_DIR=str(tmp_path / 'ckpt'), PYTHONUNBUFFERED='1')
    out = tmp_path / 'out'
    budget = BUDGET
    cmd = [sys.executable, '-m', 'retain_ros.cli', 'demo', '--adaptive', '--out', str(out),
           '--quick-train', '--alphas', '0,1', '--language-only', '-1', '--group-settings', '',
           '--budget', str(budget), '--gap', str(GAP), '--episode-timeout', '2.5',
           '--startup-timeout', '120']
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    records = [json.loads(line) for line in (out / 'episodes.jsonl').read_text().splitlines()]
    summary = json.loads((out / 'adaptive.json').read_text())
    assert 2 <= len(records) == summary['episodes'] <= 2 * budget
    assert summary['fixed_episodes'] == 2 * 3 * 10
    state = summary['evaluation']
    assert state['finished'] in ('decided', 'budget') and state['next'] is None
    assert state['sequential']['stopped'] == state['finished']
    assert state['episodes_done'] == len(records)
    # every episode's log line holds the test's state after it, the last one the final state
    assert [r['sequential']['episodes_done'] for r in records] == list(
        range(1, len(records) + 1))
    assert records[-1]['sequential']['comparisons'] == state['sequential']['comparisons']
    # block n runs scene n for both settings (the pairs of the paired test), and the scenes are
    # the fixed sweep's, splits interleaved
    scenes = adaptive.adaptive_scenes(budget, seed=0)
    by_setting = {}
    for r in records:
        by_setting.setdefault(describe_alpha(r['alpha']), []).append(r['tag'])
    assert set(by_setting) == {'alpha=0', 'alpha=1'}
    for tags in by_setting.values():
        assert [t.split(';')[:3] for t in tags] == [
            [f'split={s}', f'task={t}', f'seed={n}'] for s, t, n in scenes[:len(tags)]]
    assert 'episodes used: ' + str(len(records)) in result.stdout
    assert 'the fixed sweep runs 60 (10 per setting and split)' in result.stdout


def describe_alpha(alphas):
    """Return the setting text of a log line's per-group alphas (uniform ones here)."""
    assert len(set(alphas.values())) == 1, alphas
    return describe({'alpha': alphas['vision']})
