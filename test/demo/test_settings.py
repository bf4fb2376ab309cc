"""The demo's training settings: what enters the cache digests, under which keys."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from retain_ros.demo import cli
from retain_ros.demo.settings import ADDED_SETTINGS
from retain_ros.demo.settings import HASH_KEYS
from retain_ros.demo.settings import pretrained_digest
from retain_ros.demo.settings import pretrained_settings
from retain_ros.demo.settings import RETIRED_SETTINGS
from retain_ros.demo.settings import TrainSettings


def test_added_settings_stay_out_of_the_hashes_at_their_neutral_values():
    """An option added after a pretrained model was made leaves the hashes alone.

    It does while it has the value that reproduces what was made before it existed; once used,
    it enters them.
    """
    settings = TrainSettings()
    assert set(ADDED_SETTINGS) <= set(asdict(settings))
    neutral = {k for k, v in ADDED_SETTINGS.items() if getattr(settings, k) == v}
    used = set(ADDED_SETTINGS) - neutral
    assert 'vlm_lr' in neutral and 'pointing_layer' in used
    hashed = pretrained_settings(settings)
    assert not {HASH_KEYS.get(k, k) for k in neutral} & set(hashed)
    assert {HASH_KEYS.get(k, k) for k in used} <= set(hashed)
    base, whole = pretrained_digest(settings), settings.digest()
    settings.vlm_lr = 3e-3
    assert pretrained_digest(settings) != base and settings.digest() != whole
    assert pretrained_settings(settings)['generalist_grounding_lr'] == 3e-3
    with pytest.raises(SystemExit):
        cli.settings_from_args(cli.build_parser().parse_args(['--set', 'nope=1']))


def test_renamed_and_retired_settings_keep_their_hashed_keys():
    """Renamed settings are hashed under their old keys; deleted ones at their one value."""
    settings = TrainSettings()
    fields = set(asdict(settings))
    assert set(HASH_KEYS) <= fields and not set(RETIRED_SETTINGS) & fields
    recorded = settings.recorded()
    assert not set(HASH_KEYS) & set(recorded)
    assert recorded['generalist_steps'] == settings.pretrained_steps
    assert recorded['generalist_grounding_objective'] == 'point'
    assert set(RETIRED_SETTINGS) <= set(settings.hashed())
