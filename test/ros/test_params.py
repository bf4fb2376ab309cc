"""The parameter table (``retain_ros/ros/policy_node/params.py``) and its declaration helpers."""
import pytest

pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402

from retain_ros.ros.policy_node.declare import declare_error  # noqa: E402
from retain_ros.ros.policy_node.declare import read_all  # noqa: E402
from retain_ros.ros.policy_node.params import ALPHA_PARAMS  # noqa: E402
from retain_ros.ros.policy_node.params import GROUP_OF_PARAM  # noqa: E402
from retain_ros.ros.policy_node.params import MERGE_PARAMS  # noqa: E402
from retain_ros.ros.policy_node.params import PARAMS  # noqa: E402
from retain_ros.ros.policy_node.params import ParamSpec  # noqa: E402
from retain_ros.ros.policy_node.params import SPECS  # noqa: E402

#: the names DESIGN.md fixes ('Names users type')
DESIGN_NAMES = (
    'pretrained_path', 'finetuned_paths', 'tokenizer_path', 'family', 'recipe', 'alpha',
    'alpha_vision', 'alpha_language', 'alpha_action', 'keep_sources', 'device', 'dtype',
    'camera_topics', 'instruction_topic', 'default_instruction', 'joint_states_topic',
    'joint_names', 'output_mode', 'output_topic', 'control_period', 'replan_steps',
    'max_observation_age', 'joint_lower_limits', 'joint_upper_limits', 'max_joint_step',
    'dry_run', 'embodiment')


def test_table_holds_every_design_name_once():
    names = [p.name for p in PARAMS]
    assert len(names) == len(set(names))
    assert set(DESIGN_NAMES) <= set(names)
    assert set(SPECS) == set(names)
    assert set(MERGE_PARAMS) == set(ALPHA_PARAMS) | {'recipe'}
    assert set(GROUP_OF_PARAM) <= set(ALPHA_PARAMS)


@pytest.mark.parametrize('spec', PARAMS, ids=lambda s: s.name)
def test_defaults_have_their_type_and_lie_in_range(spec):
    assert Parameter.Type.from_parameter_value(spec.default) in (spec.type,
                                                                 Parameter.Type.NOT_SET) \
        or (spec.default == [] and spec.type.name.endswith('_ARRAY'))
    if not isinstance(spec.default, list):
        assert spec.in_range(spec.default)
    assert spec.description.strip()


def test_descriptor_carries_type_range_and_read_only():
    alpha = SPECS['alpha'].descriptor()
    assert alpha.type == Parameter.Type.DOUBLE.value and not alpha.read_only
    assert (alpha.floating_point_range[0].from_value,
            alpha.floating_point_range[0].to_value) == (0.0, 1.0)
    replan = SPECS['replan_steps'].descriptor()
    assert replan.read_only and replan.integer_range[0].from_value == 1
    assert SPECS['keep_sources'].descriptor().additional_constraints.startswith('one of')


def test_allowed_and_in_range():
    assert SPECS['alpha'].allowed() == 'a double in [0, 1]'
    assert SPECS['replan_steps'].allowed() == 'an integer in [1, 10000]'
    assert not SPECS['alpha'].in_range(1.5) and SPECS['alpha'].in_range(1.0)
    spec = ParamSpec('x', Parameter.Type.STRING, '', 'a string', constraints='one of a, b')
    assert spec.allowed() == 'a string (one of a, b)' and spec.in_range('anything')


def test_declare_error_names_value_problem_and_allowed():
    alpha = SPECS['alpha']
    assert declare_error(alpha, 1.7, ValueError('x')) == \
        'alpha=1.7: out of range, expected a double in [0, 1]'
    assert declare_error(alpha, 'abc', TypeError('x')) == \
        "alpha='abc': a string, expected a double in [0, 1]"
    assert declare_error(SPECS['replan_steps'], 1.5, TypeError('x')) == \
        'replan_steps=1.5: a double, expected an integer in [1, 10000]'


def test_read_all_returns_plain_lists():
    class Node:
        def get_parameter(self, name):
            value = SPECS[name].default
            return Parameter(name, value=tuple(value) if isinstance(value, list) else value)

    values = read_all(Node())
    assert set(values) == set(SPECS)
    assert values['camera_topics'] == ['camera/image_raw'] and values['alpha'] == 0.5
