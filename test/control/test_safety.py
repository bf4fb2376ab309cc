"""The action safety filter and the limit validation (pure numpy, no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from retain_ros.control.safety import LimitsError
from retain_ros.control.safety import make_safe
from retain_ros.control.safety import SafetyLimits
from retain_ros.control.safety import UnsafeChunkError
from retain_ros.control.safety import validate_limits


def _steps(current, out):
    return np.abs(np.diff(np.vstack([np.asarray(current, dtype=float)[None], out]), axis=0))


# ------------------------------------------------------------ order: state, step, limits
def test_issue_example_state_outside_limits_ramps_in_at_max_step():
    # the state is 0.45 above the upper limit; the old filter clamped the first point onto the
    # limit (a 0.45 jump with max_joint_step 0.01)
    limits = SafetyLimits(lower=(-1.0,), upper=(1.0,), max_step=0.01)
    out = make_safe(np.full((50, 1), 0.5), np.array([1.45]), limits)
    assert np.all(_steps([1.45], out) <= 0.01 + 1e-12)
    np.testing.assert_allclose(out[:3, 0], [1.44, 1.43, 1.42])
    # it reaches the limit after 45 periods, then moves on to the wish (0.5) inside the limits
    np.testing.assert_allclose(out[44, 0], 1.0, atol=1e-9)
    assert np.all(out[45:, 0] <= 1.0) and out[-1, 0] == pytest.approx(0.95)


def test_state_outside_lower_limit_ramps_in_even_when_wish_is_further_out():
    limits = SafetyLimits(lower=(0.0, -1.0), upper=(1.0, 1.0), max_step=0.1)
    chunk = np.tile([[-5.0, 0.0]], (8, 1))     # wish far below the limit
    out = make_safe(chunk, np.array([-0.35, 0.0]), limits)
    np.testing.assert_allclose(out[:, 0], [-0.25, -0.15, -0.05, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(out[:, 1], 0.0)
    assert np.all(_steps([-0.35, 0.0], out) <= 0.1 + 1e-12)


def test_state_inside_limits_every_point_inside_and_step_chained():
    limits = SafetyLimits(lower=(-0.3, -2.0), upper=(0.3, 2.0), max_step=0.1)
    chunk = np.tile([[1.0, -1.0]], (6, 1))
    out = make_safe(chunk, np.zeros(2), limits)
    np.testing.assert_allclose(out[:, 0], [0.1, 0.2, 0.3, 0.3, 0.3, 0.3])
    np.testing.assert_allclose(out[:, 1], [-0.1 * (i + 1) for i in range(6)])
    assert np.all(_steps(np.zeros(2), out) <= 0.1 + 1e-12)


def test_step_limit_chained_from_current_state_without_limits():
    chunk = np.tile(np.array([[1.0, -1.0]]), (5, 1))
    out = make_safe(chunk, np.zeros(2), SafetyLimits(max_step=0.1))
    np.testing.assert_allclose(out, [[0.1 * (i + 1), -0.1 * (i + 1)] for i in range(5)])


def test_limits_only_clamp_every_point():
    chunk = np.array([[5.0, -5.0], [0.5, 0.1]])
    out = make_safe(chunk, np.array([9.0, 9.0]), SafetyLimits(lower=(-1.0, -2.0),
                                                              upper=(1.0, 2.0)))
    np.testing.assert_array_equal(out, [[1.0, -2.0], [0.5, 0.1]])


def test_no_state_starts_chain_at_first_clamped_point():
    limits = SafetyLimits(upper=(1.0,), max_step=0.1)
    out = make_safe(np.array([[3.0], [-3.0], [-3.0]]), None, limits)
    np.testing.assert_allclose(out[:, 0], [1.0, 0.9, 0.8])


def test_non_finite_or_misshaped_state_is_ignored():
    limits = SafetyLimits(max_step=0.1)
    for state in (np.array([np.nan]), np.zeros(3)):
        out = make_safe(np.array([[1.0], [1.0]]), state, limits)
        np.testing.assert_allclose(out[:, 0], [1.0, 1.0])


def test_stream_mode_single_action_from_last_target_outside_limits():
    # one action at a time, chained from the last commanded target: still ramps in
    limits = SafetyLimits(lower=(-1.0,), upper=(1.0,), max_step=0.05)
    last = np.array([1.2])
    for _ in range(10):
        nxt = make_safe(np.array([0.0]), last, limits)[0]
        assert abs(nxt[0] - last[0]) <= 0.05 + 1e-12
        last = nxt
    assert last[0] == pytest.approx(0.7)


def test_rejections():
    chunk = np.zeros((4, 2))
    chunk[2, 1] = np.nan
    with pytest.raises(UnsafeChunkError, match='non-finite'):
        make_safe(chunk, np.zeros(2), SafetyLimits())
    with pytest.raises(UnsafeChunkError, match='expected 3'):
        make_safe(np.zeros((4, 2)), None, SafetyLimits(), dim=3)
    with pytest.raises(UnsafeChunkError, match='shape'):
        make_safe(np.zeros((0, 2)), None, SafetyLimits())
    with pytest.raises(UnsafeChunkError, match='1 upper limit'):
        make_safe(np.zeros((4, 2)), None, SafetyLimits(upper=(1.0,)))


# ------------------------------------------------------------------- validate_limits
def test_validate_limits_accepts_and_returns_arrays():
    lo, hi = validate_limits([-1, -2], [1, 2], ['a', 'b'])
    assert lo.dtype == np.float64 and lo.tolist() == [-1.0, -2.0] and hi.tolist() == [1.0, 2.0]
    lo, hi = validate_limits([], [], 3)
    assert lo.size == 0 and hi.size == 0
    validate_limits([0.0, 0.0], [], None)          # count unknown yet: only self-consistency
    validate_limits([], [1.0], [])


def test_validate_limits_single_value_is_not_broadcast():
    with pytest.raises(LimitsError, match=r"joint_upper_limits has 1 value\(s\), the robot has "
                                          r"3 joint\(s\) \['a', 'b', 'c'\].*not broadcast"):
        validate_limits([], [1.0], ['a', 'b', 'c'])
    with pytest.raises(LimitsError, match='joint_lower_limits has 4'):
        validate_limits([0, 0, 0, 0], [1, 1, 1], 3)


@pytest.mark.parametrize('lower,upper,match', [
    ([0.0, 2.0], [1.0, 1.0], r"joint 1 \('b'\) has lower limit 2 above its upper limit 1"),
    ([0.0, float('nan')], [1.0, 1.0], r"joint_lower_limits\[1\] \('b'\) is nan"),
    ([0.0, 0.0], [1.0, float('inf')], r'joint_upper_limits\[1\].*finite'),
    ([[0.0, 1.0]], [], 'flat list'),
    (['x', 'y'], [], 'list of numbers'),
])
def test_validate_limits_errors(lower, upper, match):
    with pytest.raises(LimitsError, match=match):
        validate_limits(lower, upper, ['a', 'b'])


def test_validate_limits_lengths_differ_without_joint_count():
    with pytest.raises(LimitsError, match='differ in length'):
        validate_limits([0.0], [1.0, 2.0], None)
    assert issubclass(LimitsError, ValueError)


def test_safety_limits_validate():
    with pytest.raises(LimitsError, match='robot has 2'):
        SafetyLimits(lower=(0.0,)).validate(2)
    with pytest.raises(LimitsError, match='max_joint_step'):
        SafetyLimits(max_step=float('nan')).validate()
    SafetyLimits(lower=(0.0, 0.0), upper=(1.0, 1.0), max_step=0.1).validate(['a', 'b'])
