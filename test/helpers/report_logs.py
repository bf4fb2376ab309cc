"""A shared episode log for the report tests: known successes per split and merge setting."""
from __future__ import annotations

import json

from retain_ros.evaluation.episode_log import EpisodeLog

GROUPS = ('vision', 'language', 'action', 'other')
LANG_ONLY = {'vision': 1.0, 'language': 0.8, 'action': 1.0, 'other': 1.0}
# (split, alpha or per-group dict, successes, episodes)
PLAN = [
    ('new_id', 0.0, 1, 10), ('new_id', 0.5, 8, 10), ('new_id', 1.0, 10, 10),
    ('new_ood', 0.0, 0, 10), ('new_ood', 0.5, 6, 10), ('new_ood', 1.0, 3, 10),
    ('generalist', 0.0, 9, 10), ('generalist', 0.5, 7, 10), ('generalist', 1.0, 2, 10),
    ('new_ood', LANG_ONLY, 5, 8), ('mystery', 0.5, 1, 2),
]
#: valid episodes in the log
EPISODES = sum(n for *_, n in PLAN)


def alphas_of(setting):
    """Per-group alphas of a PLAN setting (a number means every group)."""
    return dict(setting) if isinstance(setting, dict) else dict.fromkeys(GROUPS, setting)


def write_plan_log(path):
    """Write the PLAN's episodes, then 4 malformed lines and a blank one, to ``path``."""
    log = EpisodeLog(str(path))
    for split, setting, k, n in PLAN:
        for i in range(n):
            log.start('put the gripper on the red block', f'split={split};task=red;variation=v',
                      alphas_of(setting), 'interpolate', 'fp')
            log.record_chunk(12.0)
            log.end(i < k)
    with open(path, 'a') as handle:
        handle.write('not json\n')
        handle.write('\n')
        handle.write(json.dumps({'success': 'yes', 'alpha': {'vision': 1}}) + '\n')
        handle.write(json.dumps({'success': True}) + '\n')
        handle.write('[1, 2]\n')
    return path
