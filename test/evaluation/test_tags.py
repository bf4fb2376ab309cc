"""Scene tags (:mod:`retain_ros.evaluation.tags`)."""
from __future__ import annotations

import json

import pytest

from retain_ros.evaluation.tags import make_tag
from retain_ros.evaluation.tags import parse_tag
from retain_ros.evaluation.tags import scene_tag


def test_tags_round_trip():
    tag = make_tag(split='new_ood', task='red_block', variation='lighting')
    assert tag == 'split=new_ood;task=red_block;variation=lighting'
    assert parse_tag(tag) == {'split': 'new_ood', 'task': 'red_block', 'variation': 'lighting'}
    assert parse_tag(' split = a ;; flag ') == {'split': 'a', 'flag': ''}
    assert parse_tag(None) == {}
    with pytest.raises(ValueError):
        make_tag(task='a;b')


def test_scene_tag_from_sim_scene():
    from retain_ros.sim.world import SimWorld
    info = SimWorld(image_size=32).reset('reach_yellow', 'new_ood', 3)
    tag = scene_tag(info)
    fields = parse_tag(tag)
    assert fields['split'] == 'new_ood' and fields['task'] == 'reach_yellow'
    assert fields['variation'] == info.variation_tag and fields['seed'] == '3'
    as_json = json.dumps({'task': 'reach_red', 'split': 'generalist', 'variation_tag': 'v',
                          'seed': 1, 'instruction': 'touch the red block'})
    assert scene_tag(as_json) == 'split=generalist;task=reach_red;variation=v;seed=1'
