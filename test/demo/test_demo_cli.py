"""``retain-ros demo-train`` options (:mod:`retain_ros.demo.cli`)."""
from __future__ import annotations

from retain_ros.demo import cli
from retain_ros.demo.model import build_spec


def test_set_overrides_any_setting():
    args = cli.build_parser().parse_args(['--quick', '--set', 'pretrained_lr=0.002',
                                          '--set', 'model-image-size=32'])
    settings = cli.settings_from_args(args)
    assert settings.pretrained_lr == 0.002 and settings.model_image_size == 32
    assert build_spec(settings).image_seq_length == 16
    settings.model_image_size = 64
    assert build_spec(settings).image_seq_length == 64
