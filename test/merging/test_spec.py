"""MergeSpec (:mod:`retain_ros.merging.spec`): validation, the one parser, node parameters."""
import subprocess
import sys

import pytest

from retain_ros.merging.errors import SpecError
from retain_ros.merging.recipes import names as recipe_names
from retain_ros.merging.spec import DEFAULT_ALPHA
from retain_ros.merging.spec import FOLLOW
from retain_ros.merging.spec import MergeSpec
from retain_ros.merging.spec import RECIPES


def test_spec_refuses_extrapolation_unless_allowed():
    with pytest.raises(SpecError, match='outside'):
        MergeSpec(alpha=1.5)
    with pytest.raises(SpecError, match='alpha_language'):
        MergeSpec(group_alpha={'language': -0.1})
    assert MergeSpec(alpha=1.5, allow_extrapolation=True).alpha == 1.5


def test_recipe_names_come_from_the_registry():
    assert RECIPES == tuple(recipe_names())
    with pytest.raises(SpecError, match='unknown recipe .*choose one of interpolate'):
        MergeSpec(recipe='slerp')


def test_spec_and_recipe_names_do_not_import_torch():
    code = ('import sys; from retain_ros.merging.spec import MergeSpec; '
            'MergeSpec.parse("alpha=1,language=0.8"); '
            'from retain_ros.merging import recipes; recipes.names(); '
            'print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


@pytest.mark.parametrize('setting', ['0.5', 0.5, 'alpha=0.5', ' alpha = 0.5 ', {'alpha': 0.5},
                                     {'alpha': '0.5'}])
def test_parse_uniform_forms(setting):
    spec = MergeSpec.parse(setting)
    assert spec == MergeSpec(alpha=0.5)
    assert spec.alphas() == dict.fromkeys(('vision', 'language', 'action', 'other'), 0.5)


def test_parse_group_forms_and_the_one_default():
    assert DEFAULT_ALPHA == 1.0 and MergeSpec().alpha == DEFAULT_ALPHA
    spec = MergeSpec.parse('alpha=0.5,language=0.8')
    assert spec.alphas() == {'vision': 0.5, 'language': 0.8, 'action': 0.5, 'other': 0.5}
    only_language = MergeSpec.parse('language=0.8')            # the others stay finetuned
    assert only_language.alphas() == {'vision': 1.0, 'language': 0.8, 'action': 1.0,
                                      'other': 1.0}
    assert MergeSpec.parse({'alpha_language': 0.8}) == only_language
    assert MergeSpec.parse(only_language) is only_language
    assert MergeSpec.parse('0.3', recipe='sequential').recipe == 'sequential'
    assert MergeSpec.parse('2', allow_extrapolation=True).alpha == 2.0


@pytest.mark.parametrize('bad, message', [
    ('', 'empty'), ('abc', "'abc' is not a number"), ('1.5', 'outside'),
    ('beta=0.5', "unknown key 'beta'"), ('other=0.5', "unknown key 'other'"),
    ('alpha=0.5,alpha=0.6', 'given twice'), ('language=2', 'alpha_language=2.0 is outside'),
    (',', 'not a number'), ('alpha=1,,', None), ({}, 'no alpha given'),
    ('alpha=0.5;x', 'not a number'), (True, 'not an alpha'), ([0.5], 'string, number or dict')])
def test_parse_errors_name_the_setting(bad, message):
    if message is None:     # empty parts are skipped
        assert MergeSpec.parse(bad) == MergeSpec(alpha=1.0)
        return
    with pytest.raises(SpecError, match=message) as info:
        MergeSpec.parse(bad)
    if bad not in ('', True, {}) and not isinstance(bad, list):
        assert repr(bad) in str(info.value)


def test_node_parameters_round_trip():
    params = {'alpha': 0.5, 'alpha_vision': FOLLOW, 'alpha_language': 0.8,
              'alpha_action': FOLLOW}
    spec = MergeSpec.from_params(params, recipe='interpolate')
    assert spec == MergeSpec.parse('alpha=0.5,language=0.8')
    assert spec.to_params() == params
    assert MergeSpec.parse('language=0.8').to_params() == {
        'alpha': 1.0, 'alpha_vision': FOLLOW, 'alpha_language': 0.8, 'alpha_action': FOLLOW}
    with pytest.raises(SpecError, match='alpha_vision'):
        MergeSpec.from_params({'alpha': 0.5, 'alpha_vision': -0.5})
    with pytest.raises(SpecError, match='other'):
        MergeSpec(group_alpha={'other': 0.2}).to_params()


def test_text_is_canonical():
    assert MergeSpec.parse('0.5').to_text() == 'alpha=0.5'
    assert MergeSpec.parse('vision=1,action=1,language=0.8').to_text() == 'alpha=1,language=0.8'
    assert MergeSpec.parse(MergeSpec.parse('alpha=0.2,action=0').to_text()) == \
        MergeSpec.parse('alpha=0.2,action=0')
