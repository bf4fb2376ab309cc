"""``retain-ros merge`` / ``inspect`` end to end on real files, and merge_to_disk guarantees."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from safetensors import safe_open
import torch

from retain_ros.cli import main
from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.errors import MergeError
from retain_ros.merging.spec import MergeSpec
from retain_ros.merging import to_disk
from retain_ros.merging.to_disk import merge_to_disk
from helpers.tiny_checkpoints import save_lerobot
from helpers.tiny_checkpoints import save_transformers
from helpers.tiny_checkpoints import tiny_pi0
from helpers.tiny_checkpoints import write_lora

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    pre, ft, ft2 = tiny_pi0(seed=1), tiny_pi0(seed=2), tiny_pi0(seed=3)
    with torch.no_grad():  # a finetune that froze the vision tower
        for k, v in ft2.state_dict().items():
            if k.startswith(('model.vlm.vision_tower.', 'model.vlm.multi_modal_projector.')):
                v.copy_(pre.state_dict()[k])
    return {
        'pre_state': {k: v.clone() for k, v in pre.state_dict().items()},
        'ft_state': {k: v.clone() for k, v in ft.state_dict().items()},
        'ft2_state': {k: v.clone() for k, v in ft2.state_dict().items()},
        'pre': save_lerobot(pre.state_dict(), str(root / 'pre_lerobot')),
        'ft_tf': save_transformers(ft, str(root / 'ft_transformers')),
        'ft_lerobot': save_lerobot(ft.state_dict(), str(root / 'ft_lerobot')),
        'ft2_openpi': save_lerobot(ft2.state_dict(), str(root / 'ft2_openpi'), openpi=True),
    }


def _load(path):
    src = open_checkpoint(path)
    return src, {k: src.get(k) for k in src.keys()}


def test_cli_merge_cross_dialect_writes_finetuned_layout(ckpts, tmp_path, capsys):
    out = str(tmp_path / 'merged')
    rc = main(['merge', '--pretrained', ckpts['pre'], '--finetuned', ckpts['ft_tf'],
               '--alpha', '0.5', '--alpha-language', '0.8', '--alpha-vision', '1',
               '--out', out, '--no-progress', '-q'])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary['alpha']['language'] == 0.8 and summary['layout'] == 'transformers'
    src, got = _load(out)
    assert src.dialect == 'transformers'
    assert sorted(os.listdir(out)) == sorted(os.listdir(ckpts['ft_tf']))
    for name in os.listdir(out):
        assert stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) == 0o644
    from retain_ros.merging.groups import assign_groups
    groups = assign_groups(src.keys())
    alphas = {'vision': 1.0, 'language': 0.8, 'action': 0.5, 'other': 0.5}
    for k, v in got.items():
        a = alphas[groups[k]]
        want = (1 - a) * ckpts['pre_state'][k].double() + a * ckpts['ft_state'][k].double()
        assert torch.allclose(v.double(), want, atol=1e-6), k
    # transformers itself loads the merged checkpoint with nothing missing
    from transformers import PI0ForConditionalGeneration
    model = PI0ForConditionalGeneration.from_pretrained(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, got[k]), k


def test_merge_keeps_lerobot_tied_alias_and_aux_files(ckpts, tmp_path):
    out = str(tmp_path / 'merged')
    merge_to_disk(ckpts['ft_tf'], [ckpts['ft_lerobot']], MergeSpec(alpha=1.0), out,
                  progress=False)
    with safe_open(os.path.join(out, 'model.safetensors'), 'pt') as f:
        meta, keys = f.metadata(), set(f.keys())
    with safe_open(os.path.join(ckpts['ft_lerobot'], 'model.safetensors'), 'pt') as f:
        assert keys == set(f.keys())
        for k, v in f.metadata().items():
            assert meta[k] == v  # tied-weight alias kept
    assert json.loads(meta['retain_ros.merge'])['recipe'] == 'interpolate'
    assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors',
                                       'policy_preprocessor.json']
    _, got = _load(out)
    for k, v in ckpts['ft_state'].items():
        assert torch.equal(got[k], v), k  # alpha = 1 is the finetuned model bit-exactly


@pytest.mark.parametrize('recipe,finetuned,extra', [
    ('sequential', ['ft_lerobot', 'ft2_openpi'], ['--alpha', '0.5']),
    ('task-arithmetic', ['ft_lerobot', 'ft2_openpi'], ['--lambda', '0.3', '--lambda', '0.6']),
    ('capability', ['ft_lerobot', 'ft2_openpi'], ['--alpha', '0.7']),
])
def test_multi_model_recipes_on_disk(ckpts, tmp_path, recipe, finetuned, extra):
    out = str(tmp_path / recipe)
    rc = main(['merge', '--pretrained', ckpts['pre'], '--recipe', recipe, '--out', out,
               '--no-progress', '-q'] + sum((['--finetuned', ckpts[f]] for f in finetuned), [])
              + extra)
    assert rc == 0
    src, got = _load(out)
    assert src.dialect == ('openpi' if recipe == 'sequential' else 'lerobot')
    k = 'model.vlm.language_model.layers.0.mlp.up_proj.weight'
    p, f1, f2 = (ckpts[s][k].double() for s in ('pre_state', 'ft_state', 'ft2_state'))
    want = {'sequential': 0.5 * (0.5 * p + 0.5 * f1) + 0.5 * f2,
            'task-arithmetic': p + 0.3 * (f1 - p) + 0.6 * (f2 - p),
            'capability': p + 0.7 * (f1 - f2)}[recipe]
    assert torch.allclose(got[k].double(), want, atol=1e-6)


def test_lora_finetune_merges_as_delta(ckpts, tmp_path):
    key = 'model.vlm.language_model.layers.1.self_attn.o_proj.weight'
    deltas = write_lora(str(tmp_path / 'lora'), ckpts['pre_state'], [key], base_path=None)
    out = str(tmp_path / 'merged')
    assert main(['merge', '--pretrained', ckpts['pre'], '--finetuned', str(tmp_path / 'lora'),
                 '--alpha', '0.5', '--out', out, '--no-progress', '-q']) == 0
    _, got = _load(out)
    want = ckpts['pre_state'][key].double() + 0.5 * deltas[key]
    assert torch.allclose(got[key].double(), want, atol=1e-5)
    other = 'model.vlm.language_model.layers.0.self_attn.o_proj.weight'
    assert torch.equal(got[other], ckpts['pre_state'][other])


def test_failed_merge_writes_nothing(ckpts, tmp_path, monkeypatch):
    out = tmp_path / 'merged'
    out.mkdir()
    (out / 'keep.txt').write_text('old result')
    calls = {'n': 0}
    original = to_disk.merged_chunks

    def flaky(merge, key, dtype, *args):
        calls['n'] += 1
        if calls['n'] == 30:
            raise OSError('disk full (injected)')
        return original(merge, key, dtype, *args)

    monkeypatch.setattr(to_disk, 'merged_chunks', flaky)
    with pytest.raises(MergeError, match='disk full.*nothing was written'):
        merge_to_disk(ckpts['pre'], [ckpts['ft_lerobot']], MergeSpec(alpha=0.5), str(out),
                      progress=False)
    assert os.listdir(tmp_path) == ['merged']  # no temp left behind
    assert os.listdir(out) == ['keep.txt']


def test_cli_bad_inputs_exit_1_with_named_keys(ckpts, tmp_path, capsys):
    smaller = {k: v for k, v in ckpts['ft_state'].items() if 'layers.1.' not in k}
    partial = save_lerobot(smaller, str(tmp_path / 'partial'))
    out = str(tmp_path / 'never')
    assert main(['merge', '--pretrained', ckpts['pre'], '--finetuned', partial, '--alpha',
                 '0.5', '--out', out, '-q', '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'missing from the finetuned one' in err and 'layers.1.' in err and 'partial' in err
    assert not os.path.exists(out)
    assert main(['merge', '--pretrained', ckpts['pre'], '--finetuned', ckpts['ft_tf'],
                 '--alpha', '1.5', '--out', out, '-q']) == 1
    assert 'outside [0, 1]' in capsys.readouterr().err
    assert main(['merge', '--pretrained', ckpts['pre'], '--finetuned', ckpts['ft_tf'],
                 '--alpha', '1.5', '--allow-extrapolation', '--out', out, '-q',
                 '--no-progress']) == 0
    (tmp_path / 'model.bin').write_bytes(b'x')
    assert main(['merge', '--pretrained', str(tmp_path / 'model.bin'), '--finetuned',
                 ckpts['ft_tf'], '--alpha', '0.5', '--out', out + '2', '-q']) == 1
    assert 'executes arbitrary code' in capsys.readouterr().err
    wrong_shape = dict(ckpts['ft_state'])
    wrong_shape['action_out_proj.bias'] = torch.zeros(7)
    bad = save_lerobot(wrong_shape, str(tmp_path / 'shape'))
    assert main(['merge', '--pretrained', ckpts['pre'], '--finetuned', bad, '--alpha', '0.5',
                 '--out', out + '3', '-q']) == 1
    assert "'action_out_proj.bias': shape [32]" in capsys.readouterr().err


def test_inspect_flags_frozen_group(ckpts, capsys):
    assert main(['inspect', ckpts['pre'], ckpts['ft2_openpi']]) == 0
    text = capsys.readouterr().out
    assert 'family=pi0 dialect=lerobot' in text and 'dialect=openpi' in text
    vision = [line for line in text.splitlines() if line.startswith('vision')][0]
    assert 'UNCHANGED' in vision
    language = [line for line in text.splitlines() if line.startswith('language')][0]
    assert 'UNCHANGED' not in language
    assert main(['inspect', ckpts['pre'], ckpts['ft2_openpi'], '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['groups']['vision']['unchanged'] is True
    assert info['groups']['vision']['rel_change'] == 0.0
    assert info['groups']['language']['rel_change'] > 0.1
    assert sum(g['params'] for g in info['groups'].values()) == \
        sum(v.numel() for v in ckpts['pre_state'].values())


def test_console_entry_runs_as_module(ckpts, tmp_path):
    out = str(tmp_path / 'merged')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-m', 'retain_ros.cli', 'merge', '--pretrained',
                           ckpts['pre'], '--finetuned', ckpts['ft_lerobot'], '--alpha', '0.75',
                           '--out', out], capture_output=True, text=True, env=env, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])['alpha']['vision'] == 0.75
    assert 'weight on finetuned' in proc.stderr  # the convention is named in the log
    assert open_checkpoint(out).dialect == 'lerobot'
