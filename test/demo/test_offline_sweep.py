"""The offline alpha sweep merges the demo checkpoints exactly as the policy node does."""
from __future__ import annotations

import os

import pytest
import torch

from retain_ros.demo.offline_sweep import DEFAULT_SWEEP
from retain_ros.demo.offline_sweep import format_sweep
from retain_ros.demo.offline_sweep import offline_sweep
from retain_ros.demo.rollout import load_pair
from retain_ros.demo.rollout import merge_spec
from retain_ros.demo.settings import quick_settings


@pytest.mark.slow
def test_offline_sweep_merges_like_the_node(trained):
    """The offline harness uses the merging library's LiveMerger on the checkpoints on disk."""
    policy, merger = load_pair(os.path.join(trained, 'generalist'),
                               os.path.join(trained, 'finetuned'))
    groups = merger.groups
    pre_source, (ft_source,) = merger.sources
    pre = {k: pre_source.get(k) for k in groups}
    ft = {k: ft_source.get(k) for k in groups}
    assert {'vision', 'language', 'action'} <= set(groups.values())
    live = policy.module.state_dict()
    changed = [k for k in pre if not torch.equal(pre[k], ft[k])]
    assert changed, 'the finetune changed nothing'
    for k in changed:
        torch.testing.assert_close(live[k], pre[k])
    merger.apply(merge_spec({'alpha': 1.0, 'language': 0.5}))
    live = policy.module.state_dict()
    for k in changed:
        want = torch.lerp(pre[k].float(), ft[k].float(), 0.5) if groups[k] == 'language' \
            else ft[k]
        torch.testing.assert_close(live[k], want)
    rows = offline_sweep(trained, 1, quick_settings(), progress=False,
                         sweep=({'alpha': 0.0}, {'alpha': 1.0, 'language': 0.5}))
    assert [(r['setting'], r['split'], r['episodes']) for r in rows][:3] == [
        ({'alpha': 0.0}, 'new_id', 1), ({'alpha': 0.0}, 'new_ood', 1),
        ({'alpha': 0.0}, 'generalist', 1)]
    assert 'alpha=1,language=0.5' in format_sweep(rows)


def test_default_sweep_has_the_demo_language_merge():
    assert {'alpha': 1.0, 'language': 0.5} in DEFAULT_SWEEP
    assert {'alpha': 0.0} in DEFAULT_SWEEP and {'alpha': 1.0} in DEFAULT_SWEEP
