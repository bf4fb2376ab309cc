"""Real-time chunking: soft mask, guidance weight, ΠGDM guidance, latency estimate, π0 wiring."""
import numpy as np
import pytest
import torch

from retain_ros.policies.base import Observation
from retain_ros.policies.flow import euler_sample
from retain_ros.policies.pi0 import NormStats
from retain_ros.policies.pi0 import Pi0Policy
from retain_ros.policies.pi0 import tiny_pi0_config
from retain_ros.policies.rtc import guidance_weight
from retain_ros.policies.rtc import LatencyEstimator
from retain_ros.policies.rtc import prefix_weights
from retain_ros.policies.rtc import PrefixGuidance
from retain_ros.policies.rtc import RealTimeChunker

H, A = 10, 3


def gaussian_velocity(mu, sigma):
    """Exact flow velocity of data ~ N(mu, sigma^2) (per entry) in this repo's convention.

    ``x_t = t n + (1 - t) a``: ``E[a | x_t]`` is linear in ``x_t``, so the denoiser
    ``x_t - t v`` has a non-trivial Jacobian (a linear velocity field).
    """
    def velocity(x, t):
        var = t ** 2 + (1 - t) ** 2 * sigma ** 2
        a_hat = mu + (1 - t) * sigma ** 2 / var * (x - (1 - t) * mu)
        return (x - a_hat) / t
    return velocity


# ------------------------------------------------------------------------- soft mask
def test_prefix_weights_shapes_and_values():
    w = prefix_weights(3, 8, 10)
    assert w.shape == (10,)
    np.testing.assert_array_equal(w[:3], 1.0)
    np.testing.assert_array_equal(w[8:], 0.0)
    assert np.all(np.diff(w[3:8]) < 0) and np.all((w[3:8] > 0) & (w[3:8] < 1))
    c = np.linspace(1, 0, 7)[1:-1]        # the paper's exponential decay
    np.testing.assert_allclose(w[3:8], c * np.expm1(c) / (np.e - 1))
    np.testing.assert_allclose(prefix_weights(3, 8, 10, 'linear')[3:8], c)
    np.testing.assert_array_equal(prefix_weights(3, 8, 10, 'hard'), [1] * 3 + [0] * 7)
    # d beyond s is clipped to s; s beyond H to H
    np.testing.assert_array_equal(prefix_weights(9, 4, 10), [1] * 4 + [0] * 6)
    np.testing.assert_array_equal(prefix_weights(12, 15, 10), np.ones(10))
    with pytest.raises(ValueError, match='schedule'):
        prefix_weights(1, 2, 3, 'cosine')


def test_guidance_weight_clipped_by_beta():
    assert guidance_weight(1.0, 5.0) == 5.0          # infinite at pure noise
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)
    assert guidance_weight(0.9, 5.0) == 5.0          # 9.1 clipped
    assert guidance_weight(0.9, 20.0) == pytest.approx((0.01 + 0.81) / 0.09)
    assert guidance_weight(0.5, 1.0) == 1.0


# ------------------------------------------------------------------------- guidance
def _prev_and_noise(seed=0, mu=0.3, sigma=1.0):
    gen = torch.Generator().manual_seed(seed)
    prev = mu + sigma * torch.randn(1, H, A, generator=gen)
    noise = torch.randn(1, H, A, generator=gen)
    return prev, noise


def test_frozen_prefix_reproduces_previous_chunk_with_linear_field():
    velocity = gaussian_velocity(0.3, 1.0)
    prev, noise = _prev_and_noise()
    plain, _ = euler_sample(velocity, noise, 10)
    d, s = 3, 7
    w = torch.as_tensor(prefix_weights(d, s, H), dtype=torch.float32)[None, :, None]
    guided, _ = euler_sample(velocity, noise, 10,
                             guidance=PrefixGuidance(prev[0], w[0].expand(H, A), beta=5.0))
    before = (plain - prev)[:, :d].abs().max().item()
    after = (guided - prev)[:, :d].abs().max().item()
    assert before > 0.5                     # the unguided sample is elsewhere
    assert after < 0.05 * before            # the frozen prefix lands on the previous chunk
    # the soft part is pulled towards it, less and less; beyond s it is left (nearly) alone
    gap_plain = (plain - prev)[0].abs().mean(-1)
    gap_guided = (guided - prev)[0].abs().mean(-1)
    assert torch.all(gap_guided[:s] < gap_plain[:s])
    torch.testing.assert_close(guided[:, s:], plain[:, s:], atol=0.35, rtol=0)


def test_sign_wrong_way_would_diverge():
    # the velocity must be v - w g in this convention: adding it moves x away from the target
    velocity = gaussian_velocity(0.3, 1.0)
    prev, noise = _prev_and_noise(1)
    w = torch.ones(H, A)
    good = PrefixGuidance(prev[0], w, beta=5.0)

    def flipped(x, t, fn):
        return 2 * fn(x, t) - good(x, t, fn)
    plain, _ = euler_sample(velocity, noise, 10)
    guided, _ = euler_sample(velocity, noise, 10, guidance=good)
    wrong, _ = euler_sample(velocity, noise, 10, guidance=flipped)
    err = lambda x: (x - prev).abs().mean().item()  # noqa: E731
    assert err(guided) < err(plain) < err(wrong)


def test_beta_clips_the_correction():
    velocity = gaussian_velocity(0.0, 1.0)
    prev, noise = _prev_and_noise(2)
    w = torch.ones(H, A)
    x = noise.clone()
    v = velocity(x, 0.9)
    outs = {}
    for beta in (1.0, 2.0, 100.0):
        g = PrefixGuidance(prev[0], w, beta=beta)
        outs[beta] = g(x, 0.9, velocity) - v
        assert g.last_weight == pytest.approx(min(beta, (0.01 + 0.81) / 0.09))
    torch.testing.assert_close(outs[2.0], 2 * outs[1.0])
    torch.testing.assert_close(outs[100.0], (0.82 / 0.09) * outs[1.0], rtol=1e-4, atol=1e-5)


def test_zero_weights_equal_no_guidance():
    velocity = gaussian_velocity(0.3, 1.0)
    prev, noise = _prev_and_noise(3)
    plain, _ = euler_sample(velocity, noise, 5)
    zero, _ = euler_sample(velocity, noise, 5,
                           guidance=PrefixGuidance(prev[0], torch.zeros(H, A), 5.0))
    torch.testing.assert_close(zero, plain)


# ----------------------------------------------------------------------- latency
def test_latency_estimator_excludes_warmup_and_rounds_up():
    est = LatencyEstimator(warmup=2, window=3)
    assert est.estimate == 0.0 and est.delay_steps(0.1) == 0
    est.record(5.0)      # warm-up (compile, allocator)
    est.record(4.0)      # warm-up
    assert est.count == 0 and est.delay_steps(0.1) == 0
    for x in (0.12, 0.08, float('nan'), -1.0, 0.1):
        est.record(x)
    assert est.count == 3 and est.estimate == pytest.approx(0.12)
    assert est.delay_steps(0.1) == 2
    est.record(0.05)
    est.record(0.05)
    assert est.estimate == pytest.approx(0.1) and est.delay_steps(0.1) == 1
    est.record(0.05)
    assert est.delay_steps(0.1) == 1 and est.delay_steps(0.02) == 3
    est.reset()
    est.record(0.3)
    assert est.count == 0
    with pytest.raises(ValueError):
        est.delay_steps(0.0)


# ------------------------------------------------------------------ on a real tiny π0
STATS = NormStats(np.zeros(4), np.ones(4), np.array([0.5, -0.5, 1.0]), np.array([2.0, 1.0, 0.5]),
                  source='test')


@pytest.fixture(scope='module')
def policy():
    cfg = tiny_pi0_config(4, 3, chunk_size=8, camera_names=('front',), image_size=32,
                          num_inference_steps=10)
    return Pi0Policy.from_config(cfg, stats=STATS, init_seed=0)


def _obs(seed=0):
    rng = np.random.default_rng(seed)
    return Observation({'front': rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)},
                       'put the gripper on the red block', rng.normal(size=4))


def test_chunker_on_pi0_pulls_prefix_to_previous_chunk(policy):
    rtc = RealTimeChunker(policy, execution_horizon=6, beta=5.0)
    prev = policy.predict(_obs(0)).actions          # the chunk being executed
    plain = policy.predict(_obs(1)).actions         # a new observation, unguided
    remaining = prev[2:]                            # 2 steps executed by the new observation
    guidance = rtc.guidance_for(remaining, delay_steps=3)
    assert guidance is not None
    guided = policy.predict(_obs(1), guidance=guidance).actions
    assert np.all(np.isfinite(guided))
    before = np.abs(plain[:3] - remaining[:3]).max()
    after = np.abs(guided[:3] - remaining[:3]).max()
    assert after < 0.5 * before, (before, after)
    # model-space target: normalized with the action statistics, zero weight on padding
    expected = (remaining[0] - STATS.action_mean) / STATS.action_std
    np.testing.assert_allclose(guidance.target[0, :3].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert float(guidance.weights[:, 3:].abs().sum()) == 0.0
    np.testing.assert_allclose(guidance.weights[:, 0].numpy(), prefix_weights(3, 6, 8), rtol=1e-6)


def test_chunker_returns_none_when_nothing_to_guide(policy):
    rtc = RealTimeChunker(policy, execution_horizon=4, schedule='hard')
    prev = np.zeros((8, 3))
    assert rtc.guidance_for(None, 2) is None
    assert rtc.guidance_for(np.zeros((0, 3)), 2) is None
    assert rtc.guidance_for(prev, 0) is None        # hard mask, d = 0: plain sampling
    assert RealTimeChunker(policy, 4).guidance_for(prev, 0) is not None  # soft part remains
    # the previous chunk's remaining rows limit the execution horizon
    g = RealTimeChunker(policy, 8).guidance_for(prev[:3], 1)
    assert g is not None and float(g.weights[3:].abs().sum()) == 0.0


def test_chunker_rejects_bad_input(policy):
    rtc = RealTimeChunker(policy, execution_horizon=4)
    with pytest.raises(ValueError, match=r'\(R, 3\)'):
        rtc.guidance_for(np.zeros((4, 2)), 1)
    with pytest.raises(ValueError, match='non-finite'):
        rtc.guidance_for(np.full((4, 3), np.nan), 1)
    with pytest.raises(ValueError, match='delay_steps'):
        rtc.guidance_for(np.zeros((4, 3)), -1)
    with pytest.raises(ValueError, match='execution_horizon'):
        RealTimeChunker(policy, execution_horizon=9)
    with pytest.raises(ValueError, match='beta'):
        RealTimeChunker(policy, execution_horizon=4, beta=0.0)
    with pytest.raises(ValueError, match='schedule'):
        RealTimeChunker(policy, execution_horizon=4, schedule='x')


def test_align_previous_chunk_on_the_new_time_grid():
    from retain_ros.policies.rtc import align_previous_chunk
    prev = np.arange(10, dtype=float)[:, None] * np.array([[1.0, -1.0]])   # row j = j
    out = align_previous_chunk(prev, 100.0, 100.5, 0.1)                   # 5 periods later
    np.testing.assert_allclose(out[:, 0], [5, 6, 7, 8, 9])
    out = align_previous_chunk(prev, 100.0, 100.25, 0.1)                  # off the grid
    np.testing.assert_allclose(out[:, 0], [2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5])
    np.testing.assert_allclose(out[:, 1], -out[:, 0])
    assert align_previous_chunk(prev, 100.0, 101.0, 0.1) is None          # it has ended
    assert align_previous_chunk(prev, 100.0, 100.95, 0.1) is None
