"""Counting per merge setting and split (:mod:`retain_ros.evaluation.summary`)."""
from __future__ import annotations

import json

import pytest
from helpers.report_logs import GROUPS
from helpers.report_logs import PLAN
from helpers.report_logs import write_plan_log

from retain_ros.evaluation.loading import load_episodes
from retain_ros.evaluation.stats import wilson_interval
from retain_ros.evaluation.summary import summarize
from retain_ros.evaluation.tables import format_table


@pytest.fixture
def log_path(tmp_path):
    return write_plan_log(tmp_path / 'episodes.jsonl')


def test_summary_counts_and_intervals(log_path):
    episodes, skipped = load_episodes([str(log_path)])
    summary = summarize(episodes, skipped=skipped)
    assert summary.splits == ['new_id', 'new_ood', 'generalist', 'mystery']
    labels = [summary.label(s) for s in summary.settings]
    assert labels == ['alpha=0', 'alpha=0.5', 'alpha=1', 'language=0.8, others=1']
    by_label = dict(zip(labels, summary.settings))
    for split, setting, k, n in PLAN:
        key = 'language=0.8, others=1' if isinstance(setting, dict) else f'alpha={setting:g}'
        cell = summary.cell(by_label[key], split)
        assert (cell.k, cell.n) == (k, n)
        assert cell.interval == wilson_interval(k, n)
    assert summary.cell(by_label['alpha=0'], 'mystery').n == 0
    assert summary.best('new_ood') == by_label['language=0.8, others=1']
    assert summary.best('generalist') == by_label['alpha=0']
    data = summary.to_dict()
    json.dumps(data)
    row = data['rows'][1]
    assert row['setting'] == 'alpha=0.5' and row['uniform']
    assert row['splits']['new_id']['k'] == 8
    assert row['splits']['new_id']['low'] == pytest.approx(0.490, abs=6e-4)


def test_alpha_field_forms():
    base = {'success': True, 'split': 'new_id'}
    forms = [{'alpha': 0.5}, {'alpha': {'alpha': 0.5}},
             {'alpha': {'alpha': 0.5, 'alpha_vision': -1, 'alpha_language': -1.0}},
             {'alpha': dict.fromkeys(GROUPS, 0.5)}]
    summary = summarize([dict(base, **f) for f in forms])
    assert len(summary.settings) == 1 and summary.settings[0].x == 0.5
    mixed = summarize([dict(base, alpha={'alpha': 1.0, 'alpha_language': 0.8})])
    assert mixed.label(mixed.settings[0]) == 'language=0.8, others=1'
    assert not mixed.settings[0].uniform
    tagged = summarize([{'success': False, 'alpha': 1, 'tag': 'split=new_ood;task=x'}])
    assert tagged.splits == ['new_ood']


def test_highest_rate_wording_for_zero_successes_and_ties():
    records = [{'alpha': {'vision': a, 'language': a, 'action': a, 'other': a},
                'recipe': 'interpolate', 'split': split, 'task': 't', 'success': ok}
               for a, split, ok in ((0.0, 'new_id', False), (1.0, 'new_id', False),
                                    (0.0, 'generalist', True), (1.0, 'generalist', True))]
    summary = summarize(records)
    assert summary.best('new_id') is None
    assert summary.leaders_text('new_id') == 'none (no successes)'
    assert summary.leaders_text('generalist') == 'alpha=0, alpha=1 (1/1, tied)'
    table = format_table(summary)
    assert 'none (no successes)' in table and 'alpha=0, alpha=1 (1/1, tied)' in table
