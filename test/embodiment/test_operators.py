"""Unit operators (``embodiment/operators.py``): exact round trips, openpi's ALOHA gripper."""
import numpy as np
import pytest

from retain_ros.embodiment.errors import EmbodimentError
from retain_ros.embodiment.operators import aloha_angular_to_linear
from retain_ros.embodiment.operators import aloha_linear_to_angular
from retain_ros.embodiment.operators import parse_ops

RNG = np.random.default_rng(7)
OPS = [
    [{'rad_to_deg': True}],
    [{'scale': 100.0}],
    [{'scale': [1.0, -2.5, 3.0, 0.1]}],
    [{'offset': [0.1, -0.2, 0.3, 4.0]}],
    [{'offset': -0.5476}],
    [{'sign': [1, -1, -1, 1]}],
    [{'range': {'robot': [0.0, 1.0], 'policy': [0, 100]}}],
    [{'range': {'robot': [0.04, 0.0], 'policy': [0.0, 1.0]}}],
    [{'range': {'robot': [[0, 1], [1, 3], [-1, 1], [5, 6]], 'policy': [0, 100]}}],
    [{'rad_to_deg': True}, {'sign': [1, -1, 1, -1]}, {'offset': 3.0}, {'scale': 0.5}],
]


@pytest.mark.parametrize('ops', OPS)
def test_every_operator_round_trips_exactly(ops):
    chain = parse_ops(ops, 4, 't.yaml', 'ops')
    x = RNG.uniform(-3, 3, size=(50, 4))
    np.testing.assert_allclose(chain.inverse(chain.forward(x)), x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(chain.forward(chain.inverse(x)), x, rtol=0, atol=1e-12)


def test_operator_values():
    x = np.array([[np.pi, -np.pi / 2, 0.02, 1.0]])
    assert np.allclose(parse_ops([{'rad_to_deg': True}], 4, 't', 'o').forward(x)[0, :2],
                       [180.0, -90.0])
    gripper = parse_ops([{'range': {'robot': [0.04, 0.0], 'policy': [0.0, 1.0]}}], 1, 't', 'o')
    assert np.allclose(gripper.forward(np.array([0.04, 0.0, 0.01])), [0.0, 1.0, 0.75])
    chain = parse_ops([{'rad_to_deg': True}, {'offset': 10.0}], 1, 't', 'o')
    assert np.allclose(chain.forward(np.array([np.pi])), [190.0])
    assert np.allclose(chain.inverse(np.array([100.0])), [np.deg2rad(90.0)])


def _openpi_to_angular(value):
    """openpi's rule, written out from its description (the reference for this test)."""
    lin = value * (0.05800 - 0.01844) + 0.01844
    arm, horn = 0.036, 0.022
    angle = np.arcsin(np.clip((horn ** 2 + lin ** 2 - arm ** 2) / (2 * horn * lin), -1, 1))
    return (angle - 0.5476) / (1.6296 - 0.5476)


def test_aloha_gripper_matches_openpi_and_round_trips():
    x = np.linspace(0.0, 1.0, 101)
    assert np.allclose(aloha_linear_to_angular(x), _openpi_to_angular(x), atol=1e-15)
    # inverse exact where arcsin is in range (angle below pi / 2)
    y = np.linspace(-0.2, 0.94, 200)
    np.testing.assert_allclose(aloha_linear_to_angular(aloha_angular_to_linear(y)), y,
                               rtol=0, atol=1e-12)
    lin = aloha_angular_to_linear(y)
    np.testing.assert_allclose(aloha_angular_to_linear(aloha_linear_to_angular(lin)), lin,
                               rtol=0, atol=1e-12)
    chain = parse_ops([{'range': {'robot': [0.01844, 0.058], 'policy': [0, 1]}},
                       {'aloha_gripper': True}], 1, 't', 'o')
    metres = 0.01844 + lin * (0.058 - 0.01844)
    np.testing.assert_allclose(chain.inverse(chain.forward(metres)), metres, rtol=0, atol=1e-12)
    mask = parse_ops([{'aloha_gripper': [False, True]}], 2, 't', 'o')
    out = mask.forward(np.array([[0.3, 0.3]]))
    assert out[0, 0] == 0.3 and out[0, 1] == pytest.approx(_openpi_to_angular(0.3))


@pytest.mark.parametrize('ops, field', [
    ([{'scale': 0.0}], 'ops[0].scale'),
    ([{'scale': [1.0, 2.0]}], 'ops[0].scale'),
    ([{'sign': [1, 2, 1, 1]}], 'ops[0].sign'),
    ([{'range': {'robot': [1, 1], 'policy': [0, 1]}}], 'ops[0].range.robot'),
    ([{'range': {'robot': [0, 1]}}], 'ops[0].range'),
    ([{'deg_to_rad': True}], 'ops[0]'),
    ([{'scale': 1, 'offset': 2}], 'ops[0]'),
    ([{'rad_to_deg': 'yes'}], 'ops[0].rad_to_deg'),
])
def test_bad_operators_name_the_field(ops, field):
    with pytest.raises(EmbodimentError, match=r'^t\.yaml: ' + field.replace('[', r'\[')
                       .replace(']', r'\]').replace('.', r'\.') + ':'):
        parse_ops(ops, 4, 't.yaml', 'ops')
