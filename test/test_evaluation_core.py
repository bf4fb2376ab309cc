"""Episode recorder, alpha schedule and Wilson interval."""
from __future__ import annotations

from collections import Counter
import json
import math
import os
import threading

import pytest

from retain_ros.evaluation.episodes import EpisodeError
from retain_ros.evaluation.episodes import EpisodeRecorder
from retain_ros.evaluation.episodes import make_tag
from retain_ros.evaluation.episodes import parse_tag
from retain_ros.evaluation.episodes import scene_tag
from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import effective_alphas
from retain_ros.evaluation.schedule import parse_setting
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.evaluation.stats import latency_summary
from retain_ros.evaluation.stats import percentile
from retain_ros.evaluation.stats import wilson_interval


# ---------------------------------------------------------------------------------------- stats

def _wilson_closed_form(k, n, z):
    """Independent form: roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved as a quadratic in p."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize('k,n,expected', [
    (8, 10, (0.490, 0.943)),
    (0, 10, (0.000, 0.278)),
    (10, 10, (0.722, 1.000)),
    (5, 10, (0.237, 0.763)),
    (1, 20, (0.009, 0.236)),
])
def test_wilson_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=6e-4)
    assert high == pytest.approx(expected[1], abs=6e-4)


def test_wilson_matches_quadratic_roots():
    for n in (1, 2, 7, 30, 101):
        for k in range(n + 1):
            for z in (1.0, 1.959964, 2.576):
                got = wilson_interval(k, n, z)
                want = _wilson_closed_form(k, n, z)
                assert got == pytest.approx(want, abs=1e-9)
                assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, z=0)
    narrow = wilson_interval(50, 100, z=1.0)
    wide = wilson_interval(50, 100)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_percentile_and_latency():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([0, 10], 99) == pytest.approx(9.9)
    summary = latency_summary([10, 20, 30, 40])
    assert summary['p50'] == 25 and summary['mean'] == 25 and summary['max'] == 40
    assert latency_summary([])['p50'] is None


# ------------------------------------------------------------------------------------- recorder

def test_tags_round_trip():
    tag = make_tag(split='new_ood', task='red_block', variation='lighting')
    assert tag == 'split=new_ood;task=red_block;variation=lighting'
    assert parse_tag(tag) == {'split': 'new_ood', 'task': 'red_block', 'variation': 'lighting'}
    assert parse_tag(' split = a ;; flag ') == {'split': 'a', 'flag': ''}
    assert parse_tag(None) == {}
    with pytest.raises(ValueError):
        make_tag(task='a;b')


def test_scene_tag_from_sim_scene():
    from retain_ros.sim.world import SimWorld
    info = SimWorld(image_size=32).reset('reach_yellow', 'new_ood', 3)
    tag = scene_tag(info)
    fields = parse_tag(tag)
    assert fields['split'] == 'new_ood' and fields['task'] == 'reach_yellow'
    assert fields['variation'] == info.variation_tag and fields['seed'] == '3'
    as_json = json.dumps({'task': 'reach_red', 'split': 'generalist', 'variation_tag': 'v',
                          'seed': 1, 'instruction': 'touch the red block'})
    assert scene_tag(as_json) == 'split=generalist;task=reach_red;variation=v;seed=1'


def test_recorder_writes_json_lines(tmp_path):
    path = tmp_path / 'deep' / 'dir' / 'episodes.jsonl'
    rec = EpisodeRecorder(str(path))
    assert not rec.active
    alphas = {'vision': 1.0, 'language': 0.8, 'action': 1.0, 'other': 1.0}
    eid = rec.start('put the gripper on the red block', 'split=new_ood;task=red;variation=bg',
                    alphas, 'interpolate', 'abc123', alpha_hidden=True)
    assert rec.active and rec.episode_id == eid
    for ms in (10.0, 20.0, 30.0, float('nan')):
        rec.record_chunk(ms)
    line = rec.end(True)
    assert not rec.active
    rec.start('push the blue block', 'split=generalist;task=blue', {'vision': 0.5}, 'interpolate',
              'def456')
    line2 = rec.end(False)
    rows = [json.loads(t) for t in path.read_text().splitlines()]
    assert rows == [line, line2]
    first = rows[0]
    assert first['episode_id'] == eid
    assert first['split'] == 'new_ood' and first['task'] == 'red' and first['variation'] == 'bg'
    assert first['tag'] == 'split=new_ood;task=red;variation=bg'
    assert first['alpha'] == alphas
    assert first['recipe'] == 'interpolate' and first['fingerprint'] == 'abc123'
    assert first['success'] is True and first['alpha_hidden'] is True
    assert first['chunks'] == 3
    assert first['latency_ms']['p50'] == 20.0 and first['latency_ms']['mean'] == 20.0
    assert first['end_unix'] >= first['start_unix'] and first['duration_s'] >= 0
    assert first['start_time'].endswith('+00:00')
    assert rows[1]['success'] is False and rows[1]['variation'] is None
    assert rows[1]['chunks'] == 0 and rows[1]['latency_ms']['p50'] is None
    assert rows[0]['episode_id'] != rows[1]['episode_id']


def test_recorder_order_errors(tmp_path):
    rec = EpisodeRecorder(str(tmp_path / 'e.jsonl'))
    with pytest.raises(EpisodeError, match='no episode is running'):
        rec.end(True)
    rec.record_chunk(5.0)  # ignored outside an episode
    rec.start('x', 'split=new_id', {'vision': 0.5})
    with pytest.raises(EpisodeError, match='still running'):
        rec.start('y')
    assert rec.discard() is not None
    assert not rec.active
    assert not os.path.exists(tmp_path / 'e.jsonl')
    with pytest.raises(ValueError):
        rec.start('x', alphas={'vision': float('inf')})


def test_recorder_threaded_chunks(tmp_path):
    rec = EpisodeRecorder(str(tmp_path / 'e.jsonl'))
    rec.start('x', 'split=new_id', {'vision': 0.5})
    threads = [threading.Thread(target=lambda: [rec.record_chunk(1.0) for _ in range(200)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.end(True)['chunks'] == 800


# ------------------------------------------------------------------------------------- schedule

def test_parse_setting_forms():
    assert parse_setting('0.5') == {'alpha': 0.5, 'alpha_vision': -1.0, 'alpha_language': -1.0,
                                    'alpha_action': -1.0}
    assert parse_setting('alpha=1, language=0.8') == {
        'alpha': 1.0, 'alpha_vision': -1.0, 'alpha_language': 0.8, 'alpha_action': -1.0}
    only_lang = parse_setting('vision=1,action=1,language=0.8')
    assert only_lang['alpha'] == 1.0 and only_lang['alpha_language'] == 0.8
    assert effective_alphas(only_lang) == {'vision': 1.0, 'language': 0.8, 'action': 1.0,
                                           'other': 1.0}
    assert parse_setting(0.25)['alpha'] == 0.25
    assert parse_setting({'alpha_language': 0.3})['alpha_language'] == 0.3


@pytest.mark.parametrize('bad', ['', 'abc', '1.5', '-0.1', 'nan', 'beta=0.5', 'alpha',
                                 'alpha=0.5,alpha=0.6', 'language=2', 'alpha=', ','])
def test_parse_setting_rejects(bad):
    with pytest.raises(ScheduleError):
        parse_setting(bad)


def test_schedule_balanced_and_deterministic():
    settings = ['0', '0.25', '0.5', '0.75', '1', 'language=0.8']
    sched = AlphaSchedule(settings, repeats=4, seed=7)
    assert len(sched) == sched.total == sched.remaining == 24
    seen = list(sched)
    assert sched.remaining == 0
    with pytest.raises(StopIteration):
        sched.next()
    labels = [sched.label(p) for p in seen]
    # every block of 6 holds each setting once
    for block in range(4):
        assert sorted(labels[block * 6:(block + 1) * 6]) == sorted(set(labels))
    assert all(labels[i] != labels[i + 1] for i in range(len(labels) - 1))
    assert Counter(labels) == dict.fromkeys(set(labels), 4)
    assert 'alpha=1,language=0.8' in labels
    again = AlphaSchedule(settings, repeats=4, seed=7)
    assert again.order == seen
    other = AlphaSchedule(settings, repeats=4, seed=8)
    assert other.order != seen
    assert not all(seen[i] == AlphaSchedule(settings, 4, 7).settings[i % 6] for i in range(24))
    sched.reset()
    assert sched.next() == seen[0]


def test_schedule_blind_labels():
    sched = AlphaSchedule(['0', '0.5', '1'], repeats=2, seed=1, blind=True)
    labels = {sched.label(p) for p in sched.order}
    assert len(labels) == 3
    assert all(lab.startswith('setting ') and 'alpha' not in lab and '0.5' not in lab
               for lab in labels)
    plain = AlphaSchedule(['0', '0.5', '1'], repeats=2, seed=1)
    assert plain.label(plain.next()).startswith('alpha=')


def test_schedule_validation():
    with pytest.raises(ScheduleError):
        AlphaSchedule([])
    with pytest.raises(ScheduleError):
        AlphaSchedule(['0.5'], repeats=0)
    with pytest.raises(ScheduleError, match='same merge'):
        AlphaSchedule(['0.5', 'alpha=0.5'])
    with pytest.raises(ScheduleError, match='same merge'):
        AlphaSchedule(['language=0.8', 'alpha=1,language=0.8'])
    with pytest.raises(ScheduleError, match='outside'):
        AlphaSchedule(['0.5', '1.2'])
    assert AlphaSchedule('0;0.5;1').total == 3
