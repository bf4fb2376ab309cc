"""Safety per output type (``control/output_safety.py``): limits, velocity paths, non-finite."""
import numpy as np
import pytest

from retain_ros.control.output_safety import safe_command
from retain_ros.control.output_safety import UnsafeChunkError
from retain_ros.embodiment import OutputCommand
from retain_ros.embodiment import OutputLimits


def _cmd(kind, values, names=None):
    values = np.asarray(values, dtype=float)
    names = names or [f'n{i}' for i in range(values.shape[1])]
    return OutputCommand('o', kind, '/t', names, values)


@pytest.mark.parametrize('kind', ['joint_trajectory', 'position_stream', 'joint_state',
                                  'velocity_stream', 'twist', 'gripper_action', 'pose'])
def test_non_finite_is_never_published(kind):
    width = {'twist': 6, 'pose': 7, 'gripper_action': 1}.get(kind, 3)
    values = np.ones((4, width))
    values[2, 0] = np.nan
    with pytest.raises(UnsafeChunkError, match='non-finite'):
        safe_command(_cmd(kind, values), OutputLimits(), None, 0.1)
    values[2, 0] = np.inf
    with pytest.raises(UnsafeChunkError):
        safe_command(_cmd(kind, values), OutputLimits(), None, 0.1)


def test_position_outputs_reuse_the_joint_filter():
    lim = OutputLimits(lower=(-1.0, -1.0), upper=(1.0, 1.0), max_step=0.1)
    out = safe_command(_cmd('joint_trajectory', [[2.0, -0.05], [2.0, -2.0]]), lim,
                       np.array([0.0, 0.0]), 0.1)
    np.testing.assert_allclose(out, [[0.1, -0.05], [0.2, -0.15]])
    with pytest.raises(UnsafeChunkError, match=r'\(H, 3\)'):
        safe_command(_cmd('position_stream', [[1.0, 2.0]], ['a', 'b', 'c']), lim, None, 0.1)


def test_velocity_stream_clips_and_keeps_the_path_inside_the_limits():
    lim = OutputLimits(max_velocity=(1.0,))
    out = safe_command(_cmd('velocity_stream', [[2.0, -3.0, 0.5]]), lim, None, 0.1)
    np.testing.assert_allclose(out, [[1.0, -1.0, 0.5]])
    lim = OutputLimits(lower=(-1.0, -1.0), upper=(1.0, 1.0), max_velocity=(2.0, 2.0))
    v = np.full((10, 2), 2.0)
    v[:, 1] = -2.0
    out = safe_command(_cmd('velocity_stream', v), lim, np.array([0.5, 1.5]), 0.1)
    path = np.array([0.5, 1.5]) + np.cumsum(out * 0.1, axis=0)
    assert np.all(np.abs(out) <= 2.0)
    assert np.all(path[:, 0] <= 1.0 + 1e-12)
    np.testing.assert_allclose(out[:3, 0], [2.0, 2.0, 1.0])
    np.testing.assert_allclose(out[:, 1], -2.0)     # outside above: may move back in
    out = safe_command(_cmd('velocity_stream', [[0.0, 1.0]]), lim, np.array([0.0, 1.5]), 0.1)
    np.testing.assert_allclose(out, [[0.0, 0.0]])   # ... never further out, never forced


def test_twist_norms_and_gripper_and_pose():
    lim = OutputLimits(max_linear=0.1, max_angular=0.5)
    out = safe_command(_cmd('twist', [[0.3, 0.4, 0.0, 0.0, 0.0, 1.0],
                                      [0.01, 0.0, 0.0, 0.1, 0.0, 0.0]]), lim, None, 0.05)
    np.testing.assert_allclose(out, [[0.06, 0.08, 0, 0, 0, 0.5], [0.01, 0, 0, 0.1, 0, 0]])
    out = safe_command(_cmd('gripper_action', [[0.05], [-0.01], [0.02]]),
                       OutputLimits(lower=(0.0,), upper=(0.04,)), None, 0.1)
    np.testing.assert_allclose(out, [[0.04], [0.0], [0.02]])
    lim = OutputLimits(workspace=((0.0, -0.5, 0.0), (0.8, 0.5, 1.0)))
    out = safe_command(_cmd('pose', [[1.0, -1.0, 0.5, 0, 0, 0, 2.0]]), lim, None, 0.1)
    np.testing.assert_allclose(out, [[0.8, -0.5, 0.5, 0, 0, 0, 1.0]])
