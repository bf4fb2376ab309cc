"""The generated parameter reference (docs/parameters.md, config/policy.yaml) matches the code."""
import os
import re

import pytest
import yaml

from retain_ros.ros.policy_node import param_reference
from retain_ros.ros.policy_node.params import PARAMS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = 'run `retain-ros params --write` in the repository root to regenerate it'


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding='utf-8') as f:
        return f.read()


@pytest.mark.parametrize('rel', [param_reference.DOCS_PAGE, param_reference.PARAMS_FILE])
def test_generated_file_is_up_to_date(rel):
    expected = param_reference.generated()[rel]
    assert os.path.isfile(os.path.join(ROOT, rel)), f'{rel} is missing: {FIX}'
    problems = [p for p in param_reference.differences(ROOT) if p.startswith(rel + ':')]
    assert _read(rel) == expected, (
        f'{rel} disagrees with the parameter declarations: {FIX}\n' + '\n'.join(problems))


def test_every_parameter_is_in_the_page_and_the_params_file():
    page = _read(param_reference.DOCS_PAGE)
    params_file = _read(param_reference.PARAMS_FILE)
    for spec in PARAMS:
        assert re.search(rf'^\| `{spec.name}` \|', page, re.M), (
            f'{spec.name} is not in {param_reference.DOCS_PAGE}: {FIX}')
        assert re.search(rf'^ {{4}}(# )?{spec.name}: ', params_file, re.M), (
            f'{spec.name} is not in {param_reference.PARAMS_FILE}: {FIX}')


def test_params_file_defaults_parse_back_equal_to_the_code():
    data = yaml.safe_load(_read(param_reference.PARAMS_FILE))
    values = data[param_reference.NODE_KEY]['ros__parameters']
    for spec in PARAMS:
        if isinstance(spec.default, list) and not spec.default:
            # empty arrays cannot be written in a ROS parameter file: commented out
            assert spec.name not in values
            continue
        assert spec.name in values, f'{spec.name} missing from the params file: {FIX}'
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), spec.name
    assert set(values) <= {spec.name for spec in PARAMS}


def test_params_file_parses_with_rcl_to_the_declared_types():
    rclpy = pytest.importorskip('rclpy')
    from rclpy.context import Context

    context = Context()
    path = os.path.join(ROOT, param_reference.PARAMS_FILE)
    rclpy.init(context=context, args=['--ros-args', '--params-file', path])
    try:
        node = rclpy.create_node('retain_policy', context=context)
        overrides = dict(node._parameter_overrides)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    for spec in PARAMS:
        if isinstance(spec.default, list) and not spec.default:
            assert spec.name not in overrides
            continue
        assert overrides[spec.name].type_ == spec.type, spec.name
        assert overrides[spec.name].value == spec.default, spec.name


def test_every_parameter_belongs_to_one_group():
    groups = param_reference.grouped()
    assert [title for title, _ in groups] == [title for title, _, _ in param_reference.GROUPS]
    names = [spec.name for _, specs in groups for spec in specs]
    assert names == [spec.name for spec in PARAMS]


def test_a_renamed_group_start_is_an_error():
    renamed = [p for p in PARAMS if p.name != param_reference.GROUPS[1][1]]
    with pytest.raises(ValueError, match='GROUPS'):
        param_reference.grouped(renamed)


@pytest.mark.parametrize('value', ['auto', "it's", '1', 'true', 0.5, -1.0, 1e-06, 64.0, 2000,
                                   True, False, ['a', 'b'], [0.5, 1.0]])
def test_yaml_value_parses_back_to_the_same_value_and_type(value):
    parsed = yaml.safe_load(f'x: {param_reference.yaml_value(value)}')['x']
    assert parsed == value and type(parsed) is type(value)


def test_check_names_the_stale_file_and_write_fixes_it(tmp_path, capsys):
    for rel in ('docs', 'config'):
        (tmp_path / rel).mkdir()
    (tmp_path / 'package.xml').write_text('<package/>')
    assert param_reference.main(['--check', '--root', str(tmp_path)]) == 1
    assert 'docs/parameters.md: missing' in capsys.readouterr().err
    assert param_reference.main(['--write', '--root', str(tmp_path)]) == 0
    assert param_reference.main(['--check', '--root', str(tmp_path)]) == 0
    stale = tmp_path / 'config' / 'policy.yaml'
    stale.write_text(stale.read_text().replace('alpha: 0.5', 'alpha: 0.7'))
    assert param_reference.main(['--check', '--root', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert 'config/policy.yaml: differs' in err and '-    alpha: 0.7' in err
    assert 'retain-ros params --write' in err


def test_the_cli_routes_params():
    from retain_ros.cli import COMMANDS

    assert COMMANDS['params'][:2] == (param_reference.__name__, 'main')


def test_the_groups_link_to_existing_docs_pages():
    for title, _, page in param_reference.GROUPS:
        assert not page or os.path.isfile(os.path.join(ROOT, 'docs', page)), (title, page)
