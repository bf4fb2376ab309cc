"""The episode log (:mod:`retain_ros.evaluation.episode_log`): lines, order errors, threads."""
from __future__ import annotations

import json
import os
import threading

import pytest

from retain_ros.evaluation.episode_log import EpisodeError
from retain_ros.evaluation.episode_log import EpisodeLog


def test_episode_log_writes_json_lines(tmp_path):
    path = tmp_path / 'deep' / 'dir' / 'episodes.jsonl'
    log = EpisodeLog(str(path))
    assert not log.active
    alphas = {'vision': 1.0, 'language': 0.8, 'action': 1.0, 'other': 1.0}
    eid = log.start('put the gripper on the red block', 'split=new_ood;task=red;variation=bg',
                    alphas, 'interpolate', 'abc123', alpha_hidden=True)
    assert log.active and log.episode_id == eid
    for ms in (10.0, 20.0, 30.0, float('nan')):
        log.record_chunk(ms)
    line = log.end(True)
    assert not log.active
    log.start('push the blue block', 'split=generalist;task=blue', {'vision': 0.5}, 'interpolate',
              'def456')
    line2 = log.end(False)
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


def test_episode_log_order_errors(tmp_path):
    log = EpisodeLog(str(tmp_path / 'e.jsonl'))
    with pytest.raises(EpisodeError, match='no episode is running'):
        log.end(True)
    log.record_chunk(5.0)  # ignored outside an episode
    log.start('x', 'split=new_id', {'vision': 0.5})
    with pytest.raises(EpisodeError, match='still running'):
        log.start('y')
    assert log.discard() is not None
    assert not log.active
    assert not os.path.exists(tmp_path / 'e.jsonl')
    with pytest.raises(ValueError):
        log.start('x', alphas={'vision': float('inf')})


def test_episode_log_threaded_chunks(tmp_path):
    log = EpisodeLog(str(tmp_path / 'e.jsonl'))
    log.start('x', 'split=new_id', {'vision': 0.5})
    threads = [threading.Thread(target=lambda: [log.record_chunk(1.0) for _ in range(200)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.end(True)['chunks'] == 800


def test_aborted_episode_line_is_not_an_outcome(tmp_path):
    path = tmp_path / 'e.jsonl'
    log = EpisodeLog(str(path))
    log.start('x', 'split=new_id;task=t', {'vision': 0.5})
    log.record_chunk(12.0)
    status = {'episodes_done': 0, 'aborted': 1, 'summary': '2 settings left'}
    line = log.abort(recording={'bag': '/b', 'messages': 3}, sequential=status,
                     setting='setting A')
    assert not log.active
    with pytest.raises(EpisodeError, match='no episode is running'):
        log.abort()
    log.start('y', 'split=new_id;task=t', {'vision': 1.0})
    ended = log.end(False, sequential={'episodes_done': 1}, setting='setting B')
    rows = [json.loads(t) for t in path.read_text().splitlines()]
    assert rows == [line, ended]
    assert rows[0]['aborted'] is True and rows[0]['success'] is None
    assert rows[0]['chunks'] == 1 and rows[0]['recording'] == {'bag': '/b', 'messages': 3}
    assert rows[0]['sequential'] == status and rows[0]['setting'] == 'setting A'
    assert rows[1]['success'] is False and 'aborted' not in rows[1]
    assert rows[1]['sequential'] == {'episodes_done': 1} and rows[1]['setting'] == 'setting B'


def test_lines_without_schedule_have_no_sequential_fields(tmp_path):
    log = EpisodeLog(str(tmp_path / 'e.jsonl'))
    log.start('x')
    line = log.end(True)
    assert line['success'] is True
    assert not {'sequential', 'setting', 'aborted'} & set(line)
