"""LiveMerger: in-place writes, memory modes, all-or-nothing changes, reload, fingerprints."""
from __future__ import annotations

import os
import shutil

import pytest
from safetensors.torch import save_file
import torch
from torch import nn

from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import SpecError
from retain_ros.merging.live import LiveMerger
from retain_ros.merging.spec import MergeSpec
from helpers.tiny_checkpoints import save_lerobot
from helpers.tiny_checkpoints import save_transformers
from helpers.tiny_checkpoints import tiny_pi0


@pytest.fixture(scope='module')
def pi0_pair(tmp_path_factory):
    """Pretrained in LeRobot dialect, finetuned in transformers dialect (cross-dialect)."""
    root = tmp_path_factory.mktemp('live')
    pre, ft = tiny_pi0(seed=1), tiny_pi0(seed=2)
    return {
        'pre_state': {k: v.clone() for k, v in pre.state_dict().items()},
        'ft_state': {k: v.clone() for k, v in ft.state_dict().items()},
        'pre': save_lerobot(pre.state_dict(), str(root / 'pre')),
        'ft': save_transformers(ft, str(root / 'ft')),
        'ft_lerobot': save_lerobot(ft.state_dict(), str(root / 'ft_lerobot')),
        'root': root,
    }


def _expected(pair, alphas, groups):
    out = {}
    for k, p in pair['pre_state'].items():
        a = alphas[groups[k]]
        out[k] = ((1 - a) * p.double() + a * pair['ft_state'][k].double())
    return out


def _ptrs(model):
    return {k: v.data_ptr() for k, v in model.state_dict().items()}


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize('keep', ['device', 'host', 'disk'])
def test_in_place_per_group_merge(pi0_pair, keep):
    model = tiny_pi0(seed=9)
    ptrs = _ptrs(model)
    merger = LiveMerger(model, pi0_pair['pre'], [pi0_pair['ft']], MergeSpec(alpha=0.25),
                        keep_sources=keep)
    spec = MergeSpec(alpha=0.5, group_alpha={'language': 0.8, 'vision': 1.0})
    state = merger.apply(spec)
    assert _ptrs(model) == ptrs  # same storage: compiled / CUDA-graphed code stays valid
    want = _expected(pi0_pair, spec.alphas(), merger.groups)
    for k, v in model.state_dict().items():
        assert torch.allclose(v.double(), want[k], atol=1e-6), k
    assert state.alphas == {'vision': 1.0, 'language': 0.8, 'action': 0.5, 'other': 0.5}
    d = state.to_dict()
    assert set(d) == {'alpha', 'recipe', 'fingerprint', 'merge_ms', 'convention'}
    assert 'weight on finetuned' in d['convention']
    # endpoints are the inputs bit-exactly
    merger.apply(MergeSpec(alpha=0.0))
    assert _same(model, pi0_pair['pre_state'])
    merger.apply(MergeSpec(alpha=1.0))
    assert _same(model, pi0_pair['ft_state'])
    assert _ptrs(model) == ptrs


def test_bf16_module_gets_float32_arithmetic(pi0_pair):
    model = tiny_pi0(seed=3, dtype=torch.bfloat16)
    merger = LiveMerger(model, pi0_pair['pre'], pi0_pair['ft'], MergeSpec(alpha=0.3))
    want = _expected(pi0_pair, MergeSpec(alpha=0.3).alphas(), merger.groups)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.bfloat16
        ref = torch.lerp(pi0_pair['pre_state'][k], pi0_pair['ft_state'][k], 0.3)
        assert torch.equal(v, ref.to(torch.bfloat16)), k  # float32 math, one final rounding
        assert torch.allclose(v.double(), want[k], rtol=2 ** -8, atol=1e-6), k


def test_fingerprint_depends_on_alpha_recipe_and_content(pi0_pair, tmp_path):
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pi0_pair['pre'], [pi0_pair['ft']], MergeSpec(alpha=0.5))
    f1 = merger.state.fingerprint
    assert merger.apply(MergeSpec(alpha=0.5)).fingerprint == f1
    assert merger.apply(MergeSpec(alpha=0.5, group_alpha={'action': 0.6})).fingerprint != f1
    copy = str(tmp_path / 'copy')
    shutil.copytree(pi0_pair['ft'], copy)
    other = LiveMerger(tiny_pi0(seed=9), pi0_pair['pre'], [copy], MergeSpec(alpha=0.5))
    assert other.state.fingerprint == f1  # content digest, not path
    changed = dict(pi0_pair['ft_state'])
    changed['action_out_proj.bias'] = changed['action_out_proj.bias'] + 1
    third = LiveMerger(tiny_pi0(seed=9), pi0_pair['pre'],
                       [save_lerobot(changed, str(tmp_path / 'ft2'))], MergeSpec(alpha=0.5))
    assert third.state.fingerprint != f1


@pytest.mark.parametrize('keep', ['device', 'host', 'disk'])
def test_failure_mid_merge_restores_previous_weights(pi0_pair, keep, monkeypatch):
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pi0_pair['pre'], [pi0_pair['ft']], MergeSpec(alpha=0.3),
                        keep_sources=keep)
    before = _snapshot(model)
    state = merger.state
    calls = {'n': 0}
    original = LiveMerger._merge_piece

    def flaky(self, merge, key, *args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 40:
            raise RuntimeError('CUDA out of memory (injected)')
        return original(self, merge, key, *args, **kwargs)

    monkeypatch.setattr(LiveMerger, '_merge_piece', flaky)
    with pytest.raises(MergeError, match='out of memory.*previous weights are still live'):
        merger.apply(MergeSpec(alpha=0.9))
    assert calls['n'] >= 40
    assert _same(model, before)
    assert merger.state is state
    monkeypatch.setattr(LiveMerger, '_merge_piece', original)
    merger.apply(MergeSpec(alpha=0.9))
    assert not _same(model, before)


@pytest.mark.parametrize('keep', ['device', 'host', 'disk'])
def test_non_finite_result_is_refused_and_restored(pi0_pair, tmp_path, keep):
    big = {k: v.clone() for k, v in pi0_pair['ft_state'].items()}
    big['model.dit.norm.weight'] = torch.full_like(big['model.dit.norm.weight'], 3e38)
    ft = save_lerobot(big, str(tmp_path / 'big'))
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pi0_pair['pre'], [ft], MergeSpec(alpha=0.5), keep_sources=keep)
    before = _snapshot(model)
    spec = MergeSpec(alpha=4.0, allow_extrapolation=True)
    with pytest.raises(MergeError, match="model.dit.norm.weight.*non-finite"):
        merger.apply(spec)
    assert _same(model, before)


def test_non_finite_input_named(pi0_pair, tmp_path):
    bad = {k: v.clone() for k, v in pi0_pair['ft_state'].items()}
    bad['action_out_proj.weight'][0, 0] = float('nan')
    ft = save_lerobot(bad, str(tmp_path / 'nan'))
    with pytest.raises(MergeError, match=r"non-finite values.*'action_out_proj.weight'.*nan/"):
        LiveMerger(tiny_pi0(seed=9), pi0_pair['pre'], [ft], MergeSpec(alpha=0.5))
    # disk mode checks inputs while merging; a first merge has nothing to go back to (no
    # snapshot of the model is ever taken): the constructor raises and says so
    with pytest.raises(MergeError, match=r"action_out_proj.weight.*model.safetensors.*no "
                                         r"previous merge.*not valid"):
        LiveMerger(tiny_pi0(seed=9), pi0_pair['pre'], [ft], MergeSpec(alpha=0.5),
                   keep_sources='disk')


def test_bad_spec_changes_nothing(pi0_pair):
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pi0_pair['pre'], [pi0_pair['ft']], MergeSpec(alpha=0.5))
    before = _snapshot(model)
    with pytest.raises(MergeError, match='exactly 2') as info:
        merger.apply(MergeSpec(recipe='capability'))
    assert isinstance(info.value, SpecError)
    assert _same(model, before)


def test_reload_reads_new_files_and_keeps_old_on_failure(pi0_pair, tmp_path):
    ft_dir = str(tmp_path / 'ft')
    shutil.copytree(pi0_pair['ft_lerobot'], ft_dir)
    model = tiny_pi0(seed=9)
    merger = LiveMerger(model, pi0_pair['pre'], [ft_dir], MergeSpec(alpha=1.0))
    assert _same(model, pi0_pair['ft_state'])
    fp = merger.state.fingerprint
    newer = {k: v + 0.5 for k, v in pi0_pair['ft_state'].items()}
    save_lerobot(newer, ft_dir)
    state = merger.reload()
    assert _same(model, newer) and state.fingerprint != fp
    before = _snapshot(model)
    with open(os.path.join(ft_dir, 'model.safetensors'), 'r+b') as fh:
        fh.truncate(1000)
    with pytest.raises(MergeError, match='truncated'):
        merger.reload()
    assert _same(model, before)
    merger.apply(MergeSpec(alpha=0.0))  # old sources still in use
    assert _same(model, pi0_pair['pre_state'])


def test_module_that_does_not_fit_is_refused(pi0_pair):
    with pytest.raises(MergeError, match='does not fit the module'):
        LiveMerger(nn.Linear(3, 3), pi0_pair['pre'], [pi0_pair['ft']], MergeSpec())
    with pytest.raises(MergeError, match='keep_sources'):
        LiveMerger(tiny_pi0(), pi0_pair['pre'], [pi0_pair['ft']], MergeSpec(), keep_sources='x')


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer('steps', torch.tensor([1, 2, 3]))


def test_tied_parameters_and_int_buffers(tmp_path):
    a, b = _Tied(), _Tied()
    torch.nn.init.normal_(b.embed.weight)
    save_file({'embed.weight': a.embed.weight.detach().clone(), 'steps': a.steps},
              str(tmp_path / 'a.safetensors'))
    save_file({'embed.weight': b.embed.weight.detach().clone(), 'steps': b.steps},
              str(tmp_path / 'b.safetensors'))
    model = _Tied()
    LiveMerger(model, str(tmp_path / 'a.safetensors'), [str(tmp_path / 'b.safetensors')],
               MergeSpec(alpha=1.0))
    assert torch.equal(model.head.weight, b.embed.weight)
    save_file({'embed.weight': b.embed.weight.detach().clone(), 'steps': b.steps + 1},
              str(tmp_path / 'c.safetensors'))
    with pytest.raises(MergeError, match="non-float tensor 'steps'.*c.safetensors"):
        LiveMerger(_Tied(), str(tmp_path / 'a.safetensors'), [str(tmp_path / 'c.safetensors')],
                   MergeSpec(alpha=0.5))
