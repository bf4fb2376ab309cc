"""Reading episode logs for the report (:mod:`retain_ros.evaluation.loading`)."""
from __future__ import annotations

import logging

import pytest
from helpers.report_logs import PLAN
from helpers.report_logs import write_plan_log

from retain_ros.evaluation.loading import load_episodes


@pytest.fixture
def log_path(tmp_path):
    return write_plan_log(tmp_path / 'episodes.jsonl')


def test_load_skips_malformed_with_warning(log_path, caplog):
    with caplog.at_level(logging.WARNING, logger='retain_ros.evaluation.loading'):
        episodes, skipped = load_episodes(str(log_path))
    assert skipped == 4
    assert len(episodes) == sum(n for *_, n in PLAN)
    assert 'skipped 4 malformed line(s)' in caplog.text
