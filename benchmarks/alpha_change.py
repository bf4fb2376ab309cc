"""α change in device mode at π0 size, profiled: where the time goes against the copy floor.

Uses the random-weight π0 pair of ``benchmarks/full_size.py`` (written there if missing, kept
for the next run) and measures in ONE process, on the SAME tensors, in interleaved rounds (this
VM's memory bandwidth moves by up to 1.7× between runs minutes apart, so a ratio is only
meaningful against a floor measured next to it). Every round:

- ``floor``: copy bandwidth (read + write of a 256 MiB tensor, best of 3) and the α-change floor
  = (bytes of both sources + bytes of the model) / that bandwidth: a re-merge must read both
  sources and write the model once;
- ``apply``: :meth:`LiveMerger.apply` with a new α (``keep_sources='device'``) on the main thread;
- ``apply, worker``: the same on a persistent worker thread right after a bf16 matmul load on a
  persistent "inference" thread, as the node runs it (re-merge on its worker thread, inference on
  its own thread, each with its own OpenMP team);
- ``bare``: the kernels alone over the merger's own tensors, no merger code around them:
  ``lerp`` per piece as the merger cuts them, ``lerp`` per whole tensor, ``copy`` (pretrained ->
  model: one read + one write, 2/3 of the floor's bytes).

Then ``cProfile`` of one more change (the functions with the most own time) and the process's
transparent-huge-page memory (``AnonHugePages``).

    nice -n 5 .venv/bin/python benchmarks/alpha_change.py --size full [--rounds 5] [--results]
    ... --code DIR    # another checkout: git archive COMMIT | tar -x -C DIR

``--size full`` needs ~21.6 GiB free (device mode holds the model and both sources, 20.1 GiB,
plus a 1.5 GiB margin instead of the memory plan's headroom: nothing else runs in this process).
``--results`` writes the ``## α change in device mode`` section of ``benchmarks/RESULTS.md``
from this run (full size) and ``--mid JSON`` (an earlier ``--size mid --out JSON``). Not run in
CI.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks.full_size import GIB  # noqa: E402
from benchmarks.full_size import make_checkpoint  # noqa: E402
from benchmarks.full_size import mem_available  # noqa: E402
from benchmarks.full_size import vm_hwm  # noqa: E402
from benchmarks.results import write_section  # noqa: E402

SECTION = '## α change in device mode'
MARGIN_BYTES = 3 << 29   # 1.5 GiB left free
#: the passes of a round, in order, and what the table says of each
PASSES = (
    ('apply', '`LiveMerger.apply`, main thread'),
    ('apply_worker', '`LiveMerger.apply` on a worker thread after an inference-like load on '
     'another thread (as the node runs it)'),
    ('lerp_pieces', 'bare `torch.lerp(out=)` per piece, as the merger cuts them'),
    ('lerp_whole', 'bare `torch.lerp(out=)` per whole tensor'),
    ('copy', 'bare copy pretrained -> model (2/3 of the floor\'s bytes)'),
)


def huge_pages() -> int:
    """Return this process's anonymous memory backed by transparent huge pages (bytes)."""
    try:
        with open('/proc/self/smaps_rollup') as fh:
            for line in fh:
                if line.startswith('AnonHugePages:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(pre: str, ft: str, rounds: int) -> dict:
    import torch

    from retain_ros.merging.engine import open_sources
    from retain_ros.merging.live import LiveMerger
    from retain_ros.merging.memory import plan_memory
    from retain_ros.merging.spec import MergeSpec
    try:
        from retain_ros.policies.pi0.backbone_pi0 import build_pi0_module
        from retain_ros.policies.pi0.checkpoint_config_pi0 import load_pi0_config
    except ImportError:     # --code: a checkout from before issue 23's split
        from retain_ros.policies.pi0.configuration_pi0 import load_pi0_config
        from retain_ros.policies.pi0.modeling_pi0 import build_pi0_module
    try:
        from retain_ros.merging.live_inputs import pieces
    except ImportError:     # --code: a checkout from before the merger's pieces had a function
        pieces = None

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    copy_src = torch.ones((256 << 20) // 4)
    copy_dst = torch.empty_like(copy_src)
    copy_dst.copy_(copy_src)
    pre_s, fts = open_sources(pre, [ft])
    # the plan's headroom (0.5 GiB + 10 %) is for a robot that runs other things; this process
    # runs nothing else, so it only needs the bytes themselves plus a margin
    plan = plan_memory(pre_s, fts, 'cpu', 'bfloat16', 'device', enforce=False)
    need = plan.need('device').host_bytes
    if need + MARGIN_BYTES > mem_available():
        raise SystemExit(f'device mode needs {need / GIB:.2f} GiB + {MARGIN_BYTES / GIB:.2f} GiB '
                         f'> MemAvailable {mem_available() / GIB:.2f} GiB')
    module = build_pi0_module(load_pi0_config(ft), torch.device('cpu'), plan.dtype)
    t = time.perf_counter()
    merger = LiveMerger(module, pre_s, fts, MergeSpec(alpha=0.5), plan=plan)
    startup = time.perf_counter() - t
    targets = merger._targets          # noqa: SLF001 - the benchmark reads the merger's tensors
    cache = merger._src.cache          # noqa: SLF001
    model_bytes = sum(t.numel() * t.element_size() for t in targets.values())
    source_bytes = sum(p.numel() * p.element_size() + sum(f.numel() * f.element_size()
                                                          for f in fs)
                       for p, fs in cache.values())
    # the merger's own cut: tensors over CHUNK_ELEMS elements in flat chunks of that size
    work = list(pieces(targets, list(targets))) if pieces is not None else []
    x = torch.randn(512, 2048, dtype=torch.bfloat16)
    w = torch.randn(2048, 16384, dtype=torch.bfloat16)
    # one persistent thread each, as the node's worker and inference threads are
    worker, inference = ThreadPoolExecutor(1), ThreadPoolExecutor(1)

    def apply_worker(a):
        inference.submit(lambda: [x @ w for _ in range(20)]).result()
        return worker.submit(timed, lambda: merger.apply(MergeSpec(alpha=a))).result()

    def lerp_pieces():
        for k, start, count in work:
            out, (p, (f,)) = targets[k], cache[k]
            if start is None:
                torch.lerp(p, f, 0.3, out=out) if out.is_floating_point() else out.copy_(f)
            else:
                torch.lerp(p.view(-1)[start:start + count], f.view(-1)[start:start + count],
                           0.3, out=out.view(-1)[start:start + count])

    def lerp_whole():
        for k, out in targets.items():
            p, (f,) = cache[k]
            torch.lerp(p, f, 0.3, out=out) if out.is_floating_point() else out.copy_(f)

    def copy():
        for k, out in targets.items():
            out.copy_(cache[k][0])

    out = {name: [] for name, _ in PASSES}
    out['floor'] = []
    with torch.no_grad():
        for r in range(rounds):
            best = min(timed(lambda: copy_dst.copy_(copy_src)) for _ in range(3))
            out['floor'].append((model_bytes + source_bytes) / (2 * copy_src.numel() * 4 / best))
            a = 0.2 + 0.6 * r / max(1, rounds - 1)
            out['apply'].append(timed(lambda: merger.apply(MergeSpec(alpha=a))))
            out['apply_worker'].append(apply_worker(1.0 - a))
            if work:
                out['lerp_pieces'].append(timed(lerp_pieces))
            out['lerp_whole'].append(timed(lerp_whole))
            out['copy'].append(timed(copy))
    worker.shutdown()
    inference.shutdown()
    prof = cProfile.Profile()
    prof.enable()
    merger.apply(MergeSpec(alpha=0.35))
    prof.disable()
    stats = pstats.Stats(prof)
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:6]
    profile = [{'function': f'{os.path.basename(fn)}:{line}({name})', 'calls': cc,
                'own_s': own, 'share': own / stats.total_tt}
               for (fn, line, name), (cc, _, own, _, _) in top]
    return {
        'params': sum(t.numel() for t in targets.values()), 'tensors': len(targets),
        'pieces': len(work), 'model_GiB': model_bytes / GIB, 'sources_GiB': source_bytes / GIB,
        'startup_s': startup, 'rounds': out, 'profile_total_s': stats.total_tt,
        'profile': profile, 'huge_pages_GiB': huge_pages() / GIB,
        'peak_rss_GiB': vm_hwm() / GIB, 'threads': torch.get_num_threads(),
        'torch': torch.__version__,
    }


def ratios(res: dict, name: str):
    """Return ``name``'s time / the same round's floor, per round."""
    return [t / f for t, f in zip(res['rounds'][name], res['rounds']['floor'])]


def table(res: dict) -> str:
    """Return the markdown table of one run: seconds and × the same round's floor."""
    rounds = res['rounds']
    lines = [f'{res["size"]}: {res["params"] / 1e9:.2f} B parameters, bfloat16, model '
             f'{res["model_GiB"]:.2f} GiB + sources {res["sources_GiB"]:.2f} GiB; floor '
             f'{min(rounds["floor"]):.3f}-{max(rounds["floor"]):.3f} s over '
             f'{len(rounds["floor"])} rounds.', '',
             '| pass | s (median, max) | × floor of its round (median, max) |', '|---|---|---|']
    for name, what in PASSES:
        if not rounds[name]:    # lerp_pieces with --code on a checkout without `pieces`
            continue
        rs = ratios(res, name)
        lines.append(f'| {what} | {statistics.median(rounds[name]):.3f}, '
                     f'{max(rounds[name]):.3f} | **{statistics.median(rs):.2f}**, '
                     f'{max(rs):.2f} |')
    return '\n'.join(lines)


def section(full: dict, mid: dict) -> str:
    """Return the RESULTS.md section for a full-size run and a mid-size one."""
    head = (f'{SECTION}\n\n`benchmarks/alpha_change.py --size full --results --mid JSON` on '
            f'{full["cpu"]}, {full["cpus"]} CPU cores, torch {full["torch"]}, '
            f'{full["threads"]} threads; `keep_sources=device`, the merger\'s own tensors, '
            'interleaved rounds (see the script\'s docstring).\n')
    parts = [head]
    for res in (full, mid):
        if res is not None:
            prof = ', '.join(f'{p["function"]} {p["share"]:.0%}' for p in res['profile'][:3])
            parts.append(table(res) + f'\n\ncProfile of one change: {prof}; transparent huge '
                         f'pages {res["huge_pages_GiB"]:.2f} GiB; peak RSS '
                         f'{res["peak_rss_GiB"]:.2f} GiB.\n')
    return '\n'.join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', choices=('full', 'mid', 'tiny'), default='full')
    ap.add_argument('--work', default=os.path.join(ROOT, '.bench', 'full_size'))
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--code', default='',
                    help='measure the retain_ros of this checkout instead (e.g. `git archive '
                    'COMMIT | tar -x -C DIR`): the same measurement of older code')
    ap.add_argument('--results', action='store_true')
    ap.add_argument('--mid', default='', help='a --size mid --out JSON for --results')
    ap.add_argument('--out', default='')
    args = ap.parse_args(argv)
    if args.code:
        sys.path.insert(0, os.path.abspath(args.code))
    work = os.path.join(args.work, args.size)
    pre, ft = os.path.join(work, 'pre'), os.path.join(work, 'ft')
    if not os.path.isfile(os.path.join(ft, 'model.safetensors')):
        make_checkpoint(pre, args.size, 'bfloat16', 1)
        make_checkpoint(ft, args.size, 'bfloat16', 2)
    res = measure(pre, ft, args.rounds)
    res.update(size=args.size, cpu=platform.processor() or platform.machine(),
               cpus=os.cpu_count(), mem_available_GiB=mem_available() / GIB,
               load=os.getloadavg(), code=args.code or 'this checkout')
    print(json.dumps(res), flush=True)
    print(table(res))
    if args.out:
        with open(args.out, 'w') as fh:
            json.dump(res, fh, indent=1)
    if args.results:
        mid = json.load(open(args.mid)) if args.mid else None
        write_section(section(res, mid), SECTION)
    return 0


if __name__ == '__main__':
    sys.exit(main())
