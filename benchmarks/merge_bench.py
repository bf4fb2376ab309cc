"""Merge benchmark: retain_ros merge_to_disk vs mergekit ``linear``, copy floor, in-place alpha.

Builds, in one run, two pairs of ~100M-parameter Llama-shaped checkpoints (float32 and bfloat16,
random weights, Hugging Face layout so mergekit accepts them) and measures:

1. ``retain-ros merge --alpha 0.5`` (subprocess: wall time and peak RSS of the child);
2. mergekit ``linear`` with weights 0.5 / 0.5 (same result) from its own virtual environment
   (``benchmarks/.venv-mergekit``: ``python3 -m venv`` then ``pip install torch==2.13.0`` then
   ``pip install mergekit``, so it never touches the project's torch);
3. the memory-copy floor: bytes read + written / measured copy bandwidth;
4. an in-place alpha change of a loaded model (LiveMerger, keep_sources='device') vs its floor.

Usage: ``.venv/bin/python benchmarks/merge_bench.py [--work DIR] [--repeats N] [--markdown]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from retain_ros.merging.live import LiveMerger  # noqa: E402
from retain_ros.merging.spec import MergeSpec  # noqa: E402

MERGEKIT_VENV = os.path.join(HERE, '.venv-mergekit')
CONFIG = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=10,
              num_attention_heads=12, num_key_value_heads=12, vocab_size=16000)


def llama_shapes(cfg):
    h, i, v = cfg['hidden_size'], cfg['intermediate_size'], cfg['vocab_size']
    shapes = {'model.embed_tokens.weight': (v, h), 'model.norm.weight': (h,),
              'lm_head.weight': (v, h)}
    for n in range(cfg['num_hidden_layers']):
        p = f'model.layers.{n}.'
        for name in ('q_proj', 'k_proj', 'v_proj', 'o_proj'):
            shapes[p + f'self_attn.{name}.weight'] = (h, h)
        shapes[p + 'mlp.gate_proj.weight'] = (i, h)
        shapes[p + 'mlp.up_proj.weight'] = (i, h)
        shapes[p + 'mlp.down_proj.weight'] = (h, i)
        shapes[p + 'input_layernorm.weight'] = (h,)
        shapes[p + 'post_attention_layernorm.weight'] = (h,)
    return shapes


def write_checkpoint(path, dtype, seed):
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: (torch.randn(s, generator=gen) * 0.02).to(dtype)
               for k, s in llama_shapes(CONFIG).items()}
    save_file(tensors, os.path.join(path, 'model.safetensors'), metadata={'format': 'pt'})
    cfg = dict(CONFIG, architectures=['LlamaForCausalLM'], model_type='llama',
               torch_dtype=str(dtype).replace('torch.', ''), tie_word_embeddings=False,
               max_position_embeddings=2048, rms_norm_eps=1e-5, hidden_act='silu')
    with open(os.path.join(path, 'config.json'), 'w') as fh:
        json.dump(cfg, fh, indent=2)
    return sum(t.numel() for t in tensors.values()), sum(
        t.numel() * t.element_size() for t in tensors.values())


# A small launcher forks the measured command: a child forked straight from this (large)
# process would inherit its RSS high-water mark in ru_maxrss.
_LAUNCHER = (
    'import os, sys, time\n'
    't0 = time.perf_counter()\n'
    'pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execvp(sys.argv[1], sys.argv[1:])\n'
    '_, status, usage = os.wait4(pid, 0)\n'
    'wall = time.perf_counter() - t0\n'
    'code = os.waitstatus_to_exitcode(status)\n'
    'sys.stderr.write(f"\\nBENCH {code} {wall} {usage.ru_maxrss}\\n")\n'
)


def run_child(cmd, env=None):
    """Run ``cmd``; return (wall seconds, peak RSS MiB of the command)."""
    proc = subprocess.run([sys.executable, '-S', '-c', _LAUNCHER] + list(cmd),
                          capture_output=True, text=True, env=env, cwd=ROOT)
    last = proc.stderr.strip().splitlines()[-1].split()
    if proc.returncode != 0 or last[0] != 'BENCH' or last[1] != '0':
        raise RuntimeError(f'{cmd[0]} failed:\n{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}')
    return float(last[2]), int(last[3]) / 1024.0


def copy_bandwidth(nbytes=256 << 20, repeats=5):
    """Bytes moved (read + written) per second by a large tensor copy, best of ``repeats``."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def python_baseline_rss():
    """Peak RSS of a child that only imports torch (the interpreter + torch floor)."""
    return run_child([sys.executable, '-c', 'import torch'])[1]


def ours(pre, ft, out):
    env = dict(os.environ, PYTHONPATH=ROOT)
    shutil.rmtree(out, ignore_errors=True)
    return run_child([sys.executable, '-m', 'retain_ros.cli', 'merge', '--pretrained', pre,
                      '--finetuned', ft, '--alpha', '0.5', '--out', out, '--no-progress', '-q'],
                     env)


def mergekit(pre, ft, out, dtype, work):
    exe = os.path.join(MERGEKIT_VENV, 'bin', 'mergekit-yaml')
    if not os.path.exists(exe):
        return None
    cfg = os.path.join(work, f'mergekit_{dtype}.yml')
    with open(cfg, 'w') as fh:
        fh.write(textwrap.dedent(f'''\
            merge_method: linear
            models:
              - model: {pre}
                parameters: {{weight: 0.5}}
              - model: {ft}
                parameters: {{weight: 0.5}}
            dtype: {dtype}
            '''))
    shutil.rmtree(out, ignore_errors=True)
    return run_child([exe, cfg, out, '--lazy-unpickle', '--quiet', '--no-copy-tokenizer',
                      '--no-write-model-card'], dict(os.environ, HF_HUB_OFFLINE='1'))


def check_same(a_dir, b_dir, atol):
    from safetensors import safe_open
    import glob
    a, b = {}, {}
    for d, into in ((a_dir, a), (b_dir, b)):
        for f in glob.glob(os.path.join(d, '*.safetensors')):
            with safe_open(f, 'pt') as fh:
                for k in fh.keys():
                    into[k] = fh.get_tensor(k)
    assert a.keys() == b.keys(), 'mergekit and retain_ros wrote different tensors'
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= atol


def build_module(shapes, dtype):
    root = nn.Module()
    for key, shape in shapes.items():
        *path, leaf = key.split('.')
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(torch.zeros(shape, dtype=dtype),
                                                  requires_grad=False))
    return root


def alpha_change(pre, ft, dtype, nbytes, bandwidth, repeats):
    model = build_module(llama_shapes(CONFIG), dtype)
    merger = LiveMerger(model, pre, [ft], MergeSpec(alpha=0.5), keep_sources='device')
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        merger.apply(MergeSpec(alpha=0.2 + 0.1 * (i % 5)))
        times.append(time.perf_counter() - t0)
    floor = 3 * nbytes / bandwidth  # read theta_pre and theta_ft, write the parameter
    return min(times), sorted(times)[len(times) // 2], floor


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--work', default=os.path.join(HERE, '.bench-merge'))
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--markdown', action='store_true', help='print a RESULTS.md table')
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    bw = copy_bandwidth()
    base_rss = python_baseline_rss()
    rows = []
    for dtype, name in ((torch.float32, 'float32'), (torch.bfloat16, 'bfloat16')):
        pre = os.path.join(args.work, f'pre_{name}')
        ft = os.path.join(args.work, f'ft_{name}')
        nparams, nbytes = write_checkpoint(pre, dtype, 1)
        write_checkpoint(ft, dtype, 2)
        floor = 3 * nbytes / bw  # read two inputs, write one output
        ours_runs = [ours(pre, ft, os.path.join(args.work, f'out_ours_{name}'))
                     for _ in range(args.repeats)]
        mk_runs = [mergekit(pre, ft, os.path.join(args.work, f'out_mk_{name}'), name, args.work)
                   for _ in range(args.repeats)]
        mk_ok = all(r is not None for r in mk_runs)
        same = mk_ok and check_same(os.path.join(args.work, f'out_ours_{name}'),
                                    os.path.join(args.work, f'out_mk_{name}'),
                                    1e-6 if dtype == torch.float32 else 1e-2)
        a_best, a_med, a_floor = alpha_change(pre, ft, dtype, nbytes, bw, 2 * args.repeats + 1)
        row = {
            'dtype': name, 'params_M': nparams / 1e6, 'bytes_MB': nbytes / 1e6,
            'ours_s': min(r[0] for r in ours_runs), 'ours_rss_MiB': max(r[1] for r in ours_runs),
            'mergekit_s': min(r[0] for r in mk_runs) if mk_ok else None,
            'mergekit_rss_MiB': max(r[1] for r in mk_runs) if mk_ok else None,
            'outputs_match': same, 'copy_floor_s': floor,
            'alpha_change_s': a_best, 'alpha_change_median_s': a_med,
            'alpha_floor_s': a_floor,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {'copy_bandwidth_GBps': bw / 1e9, 'torch_import_rss_MiB': base_rss,
               'cpus': os.cpu_count(), 'torch': torch.__version__,
               'machine': platform.machine(), 'rows': rows}
    print(json.dumps(summary), flush=True)
    if args.markdown:
        print(markdown(summary))
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


def markdown(s):
    lines = [
        f'Copy bandwidth (read + write, torch copy of 256 MiB): {s["copy_bandwidth_GBps"]:.2f} '
        f'GB/s; `python -c "import torch"` peak RSS: {s["torch_import_rss_MiB"]:.0f} MiB; '
        f'{s["cpus"]} CPUs; torch {s["torch"]}.', '',
        '| dtype | params | ours wall | mergekit wall | speed-up | ours peak RSS | '
        'mergekit peak RSS | same result | merge copy floor | ours / floor | alpha change '
        '(best / median) | alpha floor | alpha / floor |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in s['rows']:
        mk = r['mergekit_s']
        lines.append(
            f'| {r["dtype"]} | {r["params_M"]:.1f} M | {r["ours_s"]:.2f} s | '
            + (f'{mk:.2f} s | {mk / r["ours_s"]:.2f}x | ' if mk else 'n/a | n/a | ')
            + f'{r["ours_rss_MiB"]:.0f} MiB | '
            + (f'{r["mergekit_rss_MiB"]:.0f} MiB | ' if mk else 'n/a | ')
            + f'{r["outputs_match"]} | {r["copy_floor_s"]:.3f} s | '
            f'{r["ours_s"] / r["copy_floor_s"]:.1f}x | {r["alpha_change_s"]:.3f} / '
            f'{r["alpha_change_median_s"]:.3f} s | {r["alpha_floor_s"]:.3f} s | '
            f'{r["alpha_change_s"] / r["alpha_floor_s"]:.2f}x |')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
