"""The shared flow-matching sampler: Euler steps from t = 1 (noise) to t = 0."""
import pytest
import torch

from retain_ros.policies.flow import euler_sample


def test_constant_velocity_lands_at_noise_minus_velocity():
    noise = torch.randn(2, 5, 3)
    v = torch.randn(2, 5, 3)
    x0, vs = euler_sample(lambda x, t: v, noise, num_steps=4, keep_velocities=True)
    torch.testing.assert_close(x0, noise - v)
    assert len(vs) == 4


def test_times_follow_the_lerobot_convention():
    seen = []
    euler_sample(lambda x, t: seen.append(t) or torch.zeros_like(x), torch.zeros(1, 1, 1), 4)
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_guidance_wraps_the_velocity():
    calls = []

    def guidance(x, t, velocity_fn):
        calls.append(t)
        return 2 * velocity_fn(x, t)
    x0, _ = euler_sample(lambda x, t: torch.ones_like(x), torch.zeros(1, 2, 2), 2,
                         guidance=guidance)
    torch.testing.assert_close(x0, -2 * torch.ones(1, 2, 2))
    assert calls == [1.0, 0.5]


def test_zero_steps_refused():
    with pytest.raises(ValueError, match='num_steps'):
        euler_sample(lambda x, t: x, torch.zeros(1, 1, 1), 0)
