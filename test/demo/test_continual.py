"""The continual chain on the demo checkpoints (``retain-ros demo-train --continual``)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from retain_ros.demo import cli
from retain_ros.demo.checkpoints import read_info
from retain_ros.demo.continual import FINETUNED_2
from retain_ros.demo.continual import MERGED_1


@pytest.mark.slow
def test_continual_chain(trained):
    """Merge, finetune the merge on the second new task, merge again; evaluate on five splits.

    Quick settings: the numbers mean nothing, the plumbing does.
    """
    from retain_ros.policies.pi0.checkpoint_pi0 import read_pi0_state_dict

    assert cli.main(['--quick', '--dir', trained, '--continual', '0.5', '--eval', '1',
                     '--no-progress']) == 0
    with open(os.path.join(trained, 'continual.json')) as f:
        rows = json.load(f)
    assert [r['setting']['alpha'] for r in rows[::5]] == [0.0, 0.5, 1.0]
    assert {r['split'] for r in rows} == {'generalist', 'new_id', 'new_ood', 'second_id',
                                          'second_ood'}
    assert all(r['episodes'] == 1 for r in rows)
    pre, ft, merged = (read_pi0_state_dict(os.path.join(trained, n, 'model.safetensors'))
                       for n in ('generalist', 'finetuned', MERGED_1))
    key = next(k for k in pre if pre[k].is_floating_point() and not torch.equal(pre[k], ft[k]))
    torch.testing.assert_close(merged[key], 0.5 * pre[key] + 0.5 * ft[key])
    info = read_info(os.path.join(trained, FINETUNED_2))
    assert info['task'] == 'reach_cyan'
    with pytest.raises(SystemExit, match='alpha must be in'):
        cli.main(['--quick', '--dir', trained, '--continual', '1.5', '--no-progress'])
