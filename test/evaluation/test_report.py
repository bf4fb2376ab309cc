"""``retain-ros report`` (:mod:`retain_ros.evaluation.report`): table, markdown, plot, CLI."""
from __future__ import annotations

import json

import pytest
from helpers.report_logs import EPISODES
from helpers.report_logs import write_plan_log

from retain_ros.evaluation import report
from retain_ros.evaluation.episode_log import EpisodeLog


@pytest.fixture
def log_path(tmp_path):
    return write_plan_log(tmp_path / 'episodes.jsonl')


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
    assert json.loads(js.read_text())['episodes'] == EPISODES


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
    log = EpisodeLog(str(path))
    for task, k in (('reach_red', 2), ('reach_blue', 1)):
        for i in range(3):
            log.start('x', f'split=generalist;task={task}', {'vision': 0.5, 'language': 0.5},
                      'interpolate', 'fp')
            log.end(i < k)
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
