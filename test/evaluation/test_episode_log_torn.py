"""A torn last line in the episode log (power cut mid-write) must not swallow the next line."""
import json

from retain_ros.evaluation.episode_log import EpisodeLog
from retain_ros.evaluation.loading import load_episodes


def test_torn_line_does_not_swallow_the_next_episode(tmp_path):
    path = tmp_path / 'episodes.jsonl'
    log = EpisodeLog(str(path))
    log.start('reach', tag='split=new_id;task=t', alphas={'vision': 0.5}, fingerprint='f1')
    log.end(True)
    with open(path, 'ab') as handle:          # the next write was cut off half-way
        handle.write(b'{"version": 1, "episode_id": "torn", "succ')
    log.start('reach', tag='split=new_id;task=t', alphas={'vision': 0.5}, fingerprint='f1')
    line = log.end(False)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[-1])['episode_id'] == line['episode_id']
    episodes, skipped = load_episodes(str(path))
    assert [e['success'] for e in episodes] == [True, False] and skipped == 1


def test_first_line_of_a_new_file_has_no_leading_newline(tmp_path):
    path = tmp_path / 'episodes.jsonl'
    log = EpisodeLog(str(path))
    log.start('reach')
    log.end(True)
    assert not path.read_text().startswith('\n')
