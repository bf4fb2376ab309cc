"""The typed node configuration (``retain_ros/ros/policy_node/config.py``): one validation."""
import pytest

pytest.importorskip('rclpy')

from retain_ros.ros.policy_node.config import ConfigError  # noqa: E402
from retain_ros.ros.policy_node.config import NodeConfig  # noqa: E402
from retain_ros.ros.policy_node.params import PARAMS  # noqa: E402


def _defaults():
    return {p.name: p.default for p in PARAMS}


def test_defaults_make_a_valid_config_and_round_trip():
    cfg = NodeConfig.from_values(_defaults())
    assert cfg.alpha == 0.5 and cfg.camera_topics == ('camera/image_raw',)
    assert NodeConfig.from_values(cfg.to_values()) == cfg
    assert cfg.finetuned == []


def test_updated_validates_and_ignores_unknown_names():
    cfg = NodeConfig.from_values(_defaults())
    new = cfg.updated({'alpha': 0.75, 'alpha_language': 0.8, 'not_a_parameter': 1})
    assert (new.alpha, new.alpha_language, cfg.alpha) == (0.75, 0.8, 0.5)
    with pytest.raises(ConfigError, match='alpha=1.5'):
        cfg.updated({'alpha': 1.5})
    with pytest.raises(ConfigError, match=r'alpha_vision=-0.5: use -1 \(follow alpha\)'):
        cfg.updated({'alpha_vision': -0.5})
    assert cfg.updated({'alpha_vision': -1.0}).alpha_vision == -1.0


@pytest.mark.parametrize('changes, match', [
    ({'recipe': 'average'}, "recipe='average': use one of"),
    ({'output_mode': 'burst'}, 'output_mode'),
    ({'camera_topics': []}, 'camera_topics is empty'),
    ({'camera_topics': ['a', 'a']}, 'names a topic twice'),
    ({'joint_names': ['j', 'j']}, 'names a joint twice'),
    ({'output_topic': ' '}, 'output_topic is empty'),
    ({'control_period': -1.0}, 'control_period=-1'),
    ({'replan_steps': 0}, 'replan_steps=0'),
    ({'max_observation_age': 0.0}, 'max_observation_age=0'),
    ({'replan_steps': 1.5}, 'expected an integer'),
    ({'dry_run': 'yes'}, 'expected true or false'),
    ({'camera_topics': 'cam'}, 'expected a list of strings'),
], ids=lambda v: str(v)[:30])
def test_invalid_values_name_the_parameter(changes, match):
    values = _defaults()
    values.update(changes)
    with pytest.raises(ConfigError, match=match):
        NodeConfig.from_values(values)


def test_missing_parameter_is_refused():
    values = _defaults()
    del values['alpha']
    with pytest.raises(ConfigError, match="parameter 'alpha' is missing"):
        NodeConfig.from_values(values)
