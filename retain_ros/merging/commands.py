"""``retain-ros merge`` and ``retain-ros inspect``."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Dict
from typing import List
from typing import Optional

import torch

from retain_ros.merging.checkpoint_source import is_float
from retain_ros.merging.engine import CONVENTION
from retain_ros.merging.engine import open_sources
from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import SpecError
from retain_ros.merging.groups import assign_groups
from retain_ros.merging.spec import DEFAULT_ALPHA
from retain_ros.merging.spec import GROUPS
from retain_ros.merging.spec import MergeSpec
from retain_ros.merging.spec import RECIPES
from retain_ros.merging.to_disk import merge_to_disk

LOG = logging.getLogger(__name__)


def _merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='retain-ros merge',
        description='Merge a pretrained and finetuned checkpoint(s) into a new checkpoint in the '
                    'finetuned layout. ' + CONVENTION + '.')
    p.add_argument('--pretrained', required=True, help='pretrained checkpoint (dir or file)')
    p.add_argument('--finetuned', required=True, action='append',
                   help='finetuned checkpoint; repeat for several (sequential: in training '
                        'order; capability: aux then sft); a LoRA adapter dir works too')
    p.add_argument('--alpha', type=float, default=None,
                   help='weight on the FINETUNED model (0 = pretrained, 1 = finetuned); lambda '
                        'for task-arithmetic / capability. Default with only --alpha-<group>: '
                        f'{DEFAULT_ALPHA:g} (the other groups stay finetuned)')
    for g in GROUPS:
        p.add_argument(f'--alpha-{g}', type=float, default=None,
                       help=f'alpha for the {g} parameter group (default: --alpha)')
    p.add_argument('--lambda', dest='lambdas', type=float, action='append', default=None,
                   help='per-finetuned coefficient (task-arithmetic / sequential), repeat once '
                        'per --finetuned')
    p.add_argument('--recipe', choices=RECIPES, default='interpolate')
    p.add_argument('--allow-extrapolation', action='store_true',
                   help='permit coefficients outside [0, 1]')
    p.add_argument('--family', default='auto',
                   help='model family: auto, pi0, pi05, smolvla, openvla')
    p.add_argument('--out', required=True, help='output directory (or .safetensors file)')
    p.add_argument('--fsync', action='store_true',
                   help='flush the weights to disk before renaming into place')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('-q', '--quiet', action='store_true', help='only errors')
    return p


def _setup_logging(quiet: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.ERROR if quiet else logging.INFO,
                            format='%(levelname)s %(name)s: %(message)s')


def merge_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``retain-ros merge``; returns the exit status."""
    parser = _merge_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    group_alpha = {g: getattr(args, f'alpha_{g}') for g in GROUPS}
    group_alpha = {g: a for g, a in group_alpha.items() if a is not None}
    if args.alpha is None and not args.lambdas and not group_alpha:
        parser.error('give --alpha (weight on the finetuned model), --alpha-<group> or --lambda')
    alpha = args.alpha if args.alpha is not None else (
        args.lambdas[0] if args.lambdas else DEFAULT_ALPHA)
    try:
        spec = MergeSpec(recipe=args.recipe, alpha=alpha, group_alpha=group_alpha,
                         lambdas=tuple(args.lambdas or ()),
                         allow_extrapolation=args.allow_extrapolation)
        summary = merge_to_disk(args.pretrained, args.finetuned, spec, args.out,
                                progress=not args.no_progress, family=args.family,
                                fsync=args.fsync)
    except (MergeError, SpecError) as exc:
        print(f'retain-ros merge: error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='retain-ros inspect',
        description='Family, dialect and per-group size of a checkpoint; with a second '
                    'checkpoint, the relative change per group and groups left unchanged.')
    p.add_argument('pretrained', help='checkpoint (dir, file, index json)')
    p.add_argument('finetuned', nargs='?', default=None, help='finetuned checkpoint to compare')
    p.add_argument('--family', default='auto')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    return p


#: elements per chunk of the streamed reductions of ``inspect`` (a few float32 chunks in memory)
INSPECT_CHUNK = 1 << 24


def _diff_norms(pre, ft, key: str, chunk: int = INSPECT_CHUNK):
    """Return ``(sum (ft - pre)^2, sum pre^2)`` of one tensor, streamed in chunks.

    ``(None, None)`` when the shapes differ; float32 arithmetic (float64 for float64 inputs)
    with float64 accumulation.
    """
    if tuple(pre.shape(key)) != tuple(ft.shape(key)):
        return None, None
    wide = torch.float64 in (pre.dtype(key), ft.dtype(key))
    cd = torch.float64 if wide else torch.float32
    diff_sq = pre_sq = 0.0
    for a, b in zip(pre.iter_chunks(key, chunk), ft.iter_chunks(key, chunk)):
        a = a.to(cd)
        d = b.to(cd) - a
        diff_sq += float(torch.sum(d * d, dtype=torch.float64))
        pre_sq += float(torch.sum(a * a, dtype=torch.float64))
    return diff_sq, pre_sq


def inspect_checkpoints(pretrained, finetuned=None, family: str = 'auto') -> Dict[str, object]:
    """Per-group statistics of ``pretrained`` (and its change to ``finetuned``)."""
    if finetuned is None:
        from retain_ros.merging.checkpoint import open_checkpoint
        pre, fts = open_checkpoint(pretrained, family=family), []
    else:
        pre, fts = open_sources(pretrained, [finetuned], family)
    ft = fts[0] if fts else None
    groups = assign_groups(pre.keys(), pre.family if pre.family != 'unknown' else 'auto')
    stats = {g: {'tensors': 0, 'params': 0, 'bytes': 0, 'pre_sq': 0.0, 'diff_sq': 0.0,
                 'changed_tensors': 0} for g in GROUPS}
    missing = [k for k in pre.keys() if ft is not None and k not in ft]
    for k in pre.keys():
        s = stats[groups[k]]
        s['tensors'] += 1
        s['params'] += int(math.prod(pre.shape(k)))
        s['bytes'] += pre.nbytes(k)
        if ft is None or k not in ft or not is_float(pre.dtype(k)):
            continue
        d, p = _diff_norms(pre, ft, k)
        if d is None:
            missing.append(k)
            continue
        s['pre_sq'] += p
        s['diff_sq'] += d
        s['changed_tensors'] += int(d > 0.0)
    out_groups = {}
    for g, s in stats.items():
        if not s['tensors']:
            continue
        row = {'tensors': s['tensors'], 'params': s['params'], 'bytes': s['bytes']}
        if ft is not None:
            rel = math.sqrt(s['diff_sq']) / math.sqrt(s['pre_sq']) if s['pre_sq'] else 0.0
            row['rel_change'] = rel
            row['unchanged'] = s['diff_sq'] == 0.0
        out_groups[g] = row
    result = {'path': pre.path, 'family': pre.family, 'dialect': pre.dialect,
              'tensors': len(pre.keys()), 'groups': out_groups}
    if ft is not None:
        result['finetuned'] = {'path': ft.path, 'family': ft.family, 'dialect': ft.dialect,
                               'tensors': len(ft.keys())}
        result['mismatched_keys'] = sorted(set(missing) | (set(ft.keys()) - set(pre.keys())))
    return result


def _fmt_bytes(n: int) -> str:
    for unit in ('B', 'KB', 'MB', 'GB'):
        if n < 1024 or unit == 'GB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024.0
    return str(n)


def inspect_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``retain-ros inspect``; returns the exit status."""
    args = _inspect_parser().parse_args(argv)
    _setup_logging(True)
    try:
        info = inspect_checkpoints(args.pretrained, args.finetuned, args.family)
    except (MergeError, SpecError) as exc:
        print(f'retain-ros inspect: error: {exc}', file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f'{info["path"]}: family={info["family"]} dialect={info["dialect"]} '
          f'tensors={info["tensors"]}')
    if 'finetuned' in info:
        f = info['finetuned']
        print(f'vs {f["path"]}: family={f["family"]} dialect={f["dialect"]} '
              f'tensors={f["tensors"]}')
        if info['mismatched_keys']:
            print(f'WARNING: {len(info["mismatched_keys"])} tensors do not match, e.g. '
                  f'{info["mismatched_keys"][:3]}')
    header = f'{"group":<10} {"tensors":>8} {"params":>14} {"size":>10}'
    if 'finetuned' in info:
        header += f' {"|ft-pre|/|pre|":>15}'
    print(header)
    for g, row in info['groups'].items():
        line = f'{g:<10} {row["tensors"]:>8} {row["params"]:>14,} {_fmt_bytes(row["bytes"]):>10}'
        if 'rel_change' in row:
            line += f' {row["rel_change"]:>15.3e}'
            if row['unchanged']:
                line += '  UNCHANGED by the finetune (frozen?): a per-group alpha has no effect'
        print(line)
    return 0
