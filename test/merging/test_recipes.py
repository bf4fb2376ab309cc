"""Recipes: float64 references, exact endpoints, dtype handling, registry and spec checks."""
from __future__ import annotations

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest
import torch

from retain_ros.merging import recipes
from retain_ros.merging.errors import SpecError
from retain_ros.merging.spec import MergeSpec

FLOATS = [torch.float32, torch.bfloat16, torch.float16]
coef = st.floats(0.0, 1.0, allow_nan=False, width=32)


def _tensors(seed, n, dtype, shape=(4, 5)):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).to(dtype) for _ in range(n)]


def _reference(name, pre, fts, coefs):
    """Float64 formulas straight from DESIGN.md."""
    p = pre.double()
    f = [t.double() for t in fts]
    if name == 'interpolate':
        return (1 - coefs[0]) * p + coefs[0] * f[0]
    if name == 'sequential':
        cur = p
        for t, a in zip(f, coefs):
            cur = (1 - a) * cur + a * t
        return cur
    if name == 'task-arithmetic':
        return p + sum(lam * (t - p) for t, lam in zip(f, coefs))
    if name == 'capability':
        return p + coefs[0] * (f[0] - f[1])
    raise AssertionError(name)


N_FT = {'interpolate': 1, 'sequential': 3, 'task-arithmetic': 3, 'capability': 2}


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(N_FT)), seed=st.integers(0, 10 ** 6),
       coefs=st.lists(coef, min_size=3, max_size=3), dtype=st.sampled_from(FLOATS))
def test_every_recipe_matches_float64_reference(name, seed, coefs, dtype):
    n = N_FT[name]
    pre, *fts = _tensors(seed, n + 1, dtype)
    recipe = recipes.get(name)
    c = tuple(coefs[:n]) if name != 'capability' else (coefs[0], coefs[0])
    got = recipe.combine(pre, fts, c)
    assert got.dtype == torch.float32  # arithmetic in float32 even for bf16 / fp16 inputs
    want = _reference(name, pre, fts, c)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    # the cast back to the tensor's dtype is the nearest representable value
    assert torch.allclose(got.to(dtype).double(), want.to(dtype).double(), rtol=1e-2, atol=1e-2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), dtype=st.sampled_from(FLOATS + [torch.float64]))
def test_endpoints_are_bit_exact(seed, dtype):
    pre, ft = _tensors(seed, 2, dtype)
    for name in ('interpolate', 'sequential', 'task-arithmetic'):
        r = recipes.get(name)
        assert torch.equal(r.combine(pre, [ft], (0.0,)).to(dtype), pre), name
        assert torch.equal(r.combine(pre, [ft], (1.0,)).to(dtype), ft), name
    out = torch.empty(pre.shape)
    if dtype != torch.float64:
        recipes.get('interpolate').combine(pre, [ft], (1.0,), out=out)
        assert torch.equal(out.to(dtype), ft)
    capability = recipes.get('capability')
    assert torch.equal(capability.combine(pre, [ft, ft * 2], (0.0, 0.0)).to(dtype), pre)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10 ** 6), a=coef)
def test_out_argument_writes_in_place(seed, a):
    pre, ft = _tensors(seed, 2, torch.float32)
    out = torch.zeros(pre.shape)
    ptr = out.data_ptr()
    res = recipes.get('interpolate').combine(pre, [ft], (a,), out=out)
    assert res.data_ptr() == ptr
    assert torch.allclose(out.double(), _reference('interpolate', pre, [ft], (a,)), atol=1e-6)


def test_sequential_with_one_step_is_interpolation_and_chains():
    pre, f1, f2 = _tensors(0, 3, torch.float32)
    seq = recipes.get('sequential')
    assert torch.equal(seq.combine(pre, [f1], (0.3,)),
                       recipes.get('interpolate').combine(pre, [f1], (0.3,)))
    chained = seq.combine(pre, [f1, f2], (0.5, 0.5))
    assert torch.allclose(chained, 0.25 * pre + 0.25 * f1 + 0.5 * f2, atol=1e-6)


def test_coefficients_follow_group_overrides_and_lambdas():
    spec = MergeSpec(recipe='task-arithmetic', alpha=0.5, lambdas=(0.2, 0.7),
                     group_alpha={'vision': 1.0})
    ta = recipes.get('task-arithmetic')
    assert ta.coefficients(spec, 'language', 2) == (0.2, 0.7)
    assert ta.coefficients(spec, 'vision', 2) == (1.0, 1.0)
    cap = recipes.get('capability')
    assert cap.coefficients(MergeSpec(recipe='capability', alpha=0.4), 'action', 2) == (0.4, 0.4)


def test_finetuned_count_and_lambda_count_checked():
    with pytest.raises(SpecError, match='exactly 2'):
        recipes.get('capability').check(MergeSpec(recipe='capability'), 1)
    with pytest.raises(SpecError, match='exactly 1'):
        recipes.get('interpolate').check(MergeSpec(), 2)
    with pytest.raises(SpecError, match='3 lambdas for 2'):
        recipes.get('task-arithmetic').check(
            MergeSpec(recipe='task-arithmetic', lambdas=(0.1, 0.2, 0.3)), 2)


def test_registry_lists_names_on_unknown():
    assert recipes.names() == ['interpolate', 'sequential', 'task-arithmetic', 'capability']
    with pytest.raises(SpecError, match='interpolate, sequential, task-arithmetic, capability'):
        recipes.get('slerp')
