"""retain-ros report: loading, counting, Wilson intervals, table, markdown and plot."""
from __future__ import annotations

import json
import logging

import pytest

from retain_ros.evaluation import report
from retain_ros.evaluation.episodes import EpisodeRecorder
from retain_ros.evaluation.stats import wilson_interval

GROUPS = ('vision', 'language', 'action', 'other')
LANG_ONLY = {'vision': 1.0, 'language': 0.8, 'action': 1.0, 'other': 1.0}
# (split, alpha or per-group dict, successes, episodes)
PLAN = [
    ('new_id', 0.0, 1, 10), ('new_id', 0.5, 8, 10), ('new_id', 1.0, 10, 10),
    ('new_ood', 0.0, 0, 10), ('new_ood', 0.5, 6, 10), ('new_ood', 1.0, 3, 10),
    ('generalist', 0.0, 9, 10), ('generalist', 0.5, 7, 10), ('generalist', 1.0, 2, 10),
    ('new_ood', LANG_ONLY, 5, 8), ('mystery', 0.5, 1, 2),
]


def _alphas(setting):
    return dict(setting) if isinstance(setting, dict) else dict.fromkeys(GROUPS, setting)


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / 'episodes.jsonl'
    rec = EpisodeRecorder(str(path))
    for split, setting, k, n in PLAN:
        for i in range(n):
            rec.start('put the gripper on the red block', f'split={split};task=red;variation=v',
                      _alphas(setting), 'interpolate', 'fp')
            rec.record_chunk(12.0)
            rec.end(i < k)
    with open(path, 'a') as handle:
        handle.write('not json\n')
        handle.write('\n')
        handle.write(json.dumps({'success': 'yes', 'alpha': {'vision': 1}}) + '\n')
        handle.write(json.dumps({'success': True}) + '\n')
        handle.write('[1, 2]\n')
    return path


def test_load_skips_malformed_with_warning(log_path, caplog):
    with caplog.at_level(logging.WARNING, logger='retain_ros.evaluation.report'):
        episodes, skipped = report.load_episodes(str(log_path))
    assert skipped == 4
    assert len(episodes) == sum(n for *_, n in PLAN)
    assert 'skipped 4 malformed line(s)' in caplog.text


def test_summary_counts_and_intervals(log_path):
    episodes, skipped = report.load_episodes([str(log_path)])
    summary = report.summarize(episodes, skipped=skipped)
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
    summary = report.summarize([dict(base, **f) for f in forms])
    assert len(summary.settings) == 1 and summary.settings[0].x == 0.5
    mixed = report.summarize([dict(base, alpha={'alpha': 1.0, 'alpha_language': 0.8})])
    assert mixed.label(mixed.settings[0]) == 'language=0.8, others=1'
    assert not mixed.settings[0].uniform
    tagged = report.summarize([{'success': False, 'alpha': 1, 'tag': 'split=new_ood;task=x'}])
    assert tagged.splits == ['new_ood']


def test_table_markdown_and_plot(log_path, tmp_path, capsys):
    png = tmp_path / 'out' / 'success.png'
    md = tmp_path / 'out' / 'report.md'
    js = tmp_path / 'out' / 'summary.json'
    rc = report.main([str(log_path), '--plot', str(png), '--markdown', str(md),
                      '--json', str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'weight on the finetuned model' in out
    assert '4 malformed line(s) skipped' in out
    row = next(line for line in out.splitlines() if line.startswith('alpha=0.5 '))
    assert '8/10' in row and '80%' in row and '[ 49- 94%]' in row
    assert '6/10' in row and '7/10' in row
    assert 'language=0.8, others=1' in out
    with open(png, 'rb') as handle:
        assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
    assert png.stat().st_size > 20000
    text = md.read_text()
    assert '![success rate per alpha](success.png)' in text
    assert '8/10 = **80%** [49–94%]' in text
    assert 'new task, OOD variations' in text
    assert json.loads(js.read_text())['episodes'] == sum(n for *_, n in PLAN)


def test_cli_errors(tmp_path, capsys):
    assert report.main([str(tmp_path / 'missing.jsonl')]) == 2
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('')
    assert report.main([str(empty), '--plot', str(tmp_path / 'e.png')]) == 1
    assert (tmp_path / 'e.png').exists()
    assert 'no episodes' in capsys.readouterr().out


def test_cli_dispatch(log_path, capsys):
    from retain_ros import cli
    assert cli.main(['report', str(log_path)]) == 0
    assert 'alpha=1 ' in capsys.readouterr().out


def test_per_task_and_write_report(tmp_path, capsys):
    path = tmp_path / 'log.jsonl'
    rec = EpisodeRecorder(str(path))
    for task, k in (('reach_red', 2), ('reach_blue', 1)):
        for i in range(3):
            rec.start('x', f'split=generalist;task={task}', {'vision': 0.5, 'language': 0.5},
                      'interpolate', 'fp')
            rec.end(i < k)
    assert report.main([str(path), '--by-task']) == 0
    out = capsys.readouterr().out
    assert 'generalist: reach_blue' in out and 'generalist: reach_red' in out
    summary = report.write_report(str(path), markdown=str(tmp_path / 'r.md'),
                                  plot=str(tmp_path / 'p.png'), json_path=str(tmp_path / 'j.json'))
    setting = summary.settings[0]
    assert summary.task_cell(setting, 'generalist', 'reach_red').k == 2
    assert (summary.cell(setting, 'generalist').k, summary.cell(setting, 'generalist').n) == (3, 6)
    text = (tmp_path / 'r.md').read_text()
    assert '## Per task' in text and '2/3 (67%)' in text
    assert '![success rate per alpha](p.png)' in text
    assert (tmp_path / 'p.png').stat().st_size > 10000
    assert json.loads((tmp_path / 'j.json').read_text())['rows'][0]['setting'] == 'alpha=0.5'


def test_highest_rate_wording_for_zero_successes_and_ties():
    records = [{'alpha': {'vision': a, 'language': a, 'action': a, 'other': a},
                'recipe': 'interpolate', 'split': split, 'task': 't', 'success': ok}
               for a, split, ok in ((0.0, 'new_id', False), (1.0, 'new_id', False),
                                    (0.0, 'generalist', True), (1.0, 'generalist', True))]
    summary = report.summarize(records)
    assert summary.best('new_id') is None
    assert summary.leaders_text('new_id') == 'none (no successes)'
    assert summary.leaders_text('generalist') == 'alpha=0, alpha=1 (1/1, tied)'
    table = report.format_table(summary)
    assert 'none (no successes)' in table and 'alpha=0, alpha=1 (1/1, tied)' in table
