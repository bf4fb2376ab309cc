"""Alpha schedule and merge-setting strings (:mod:`retain_ros.evaluation.schedule`)."""
from __future__ import annotations

from collections import Counter

import pytest

from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import effective_alphas
from retain_ros.evaluation.schedule import parse_setting
from retain_ros.evaluation.schedule import ScheduleError


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
