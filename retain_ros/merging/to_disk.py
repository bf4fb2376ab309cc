"""Merge checkpoints into a new checkpoint on disk, streaming tensor by tensor.

The output takes the layout and key dialect of the finetuned input (the last one for the
sequential recipe, the first otherwise): same file names and shards, stored key names, safetensors
``__metadata__`` (tied-weight aliases), and its config / processor / normalization / tokenizer
files. Everything is written under a temporary path that is renamed into place only when the whole
merge succeeded; files are made readable by other users (0644).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict
from typing import Iterator
from typing import Optional
from typing import Sequence

import torch

from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import is_float
from retain_ros.merging.engine import all_finite
from retain_ros.merging.engine import CONVENTION
from retain_ros.merging.engine import describe_sources
from retain_ros.merging.engine import DigestThread
from retain_ros.merging.engine import fingerprint
from retain_ros.merging.engine import open_sources
from retain_ros.merging.engine import PreparedMerge
from retain_ros.merging.engine import SourceLike
from retain_ros.merging.engine import validate_sources
from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import SpecError
from retain_ros.merging.groups import assign_groups
from retain_ros.merging.progress import tensor_bar
from retain_ros.merging.safetensors_writer import StreamingWriter
from retain_ros.merging.spec import MergeSpec

LOG = logging.getLogger(__name__)


def layout_source(spec: MergeSpec, fts: Sequence[CheckpointSource]) -> CheckpointSource:
    """Finetuned checkpoint whose layout the output copies."""
    return fts[-1] if spec.recipe == 'sequential' else fts[0]


def _aux_rel(src: CheckpointSource, path: str) -> str:
    root = src.aux_root(path) if hasattr(src, 'aux_root') else src.root
    return os.path.relpath(path, root)


def _chmod_tree(path: str) -> None:
    if os.path.isfile(path):
        os.chmod(path, 0o644)
        return
    os.chmod(path, 0o755)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def merged_chunks(merge: PreparedMerge, key: str, out_dtype: torch.dtype,
                  chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
    """Merge tensor ``key`` into flat chunks of ``out_dtype``: the recipe, between the checks.

    Inputs are read chunk by chunk with ``pread`` (never a mapping that could fault), so memory
    stays at a few chunks whatever the tensor's size. Integer / bool tensors are copied (they
    must be equal in every input).

    :raises MergeError: unequal integer tensors, or a non-finite result (naming the cause).
    """
    if not is_float(merge.pre.dtype(key)):
        pre_t = merge.pre.read(key)
        ft_ts = [f.read(key) for f in merge.fts]
        merge.check_equal(key, pre_t, ft_ts)
        yield ft_ts[0].reshape(-1).to(out_dtype)
        return
    coefs = merge.coefs_for(key)
    streams = [src.iter_chunks(key, chunk_elems) for src in [merge.pre] + merge.fts]
    for parts in zip(*streams):
        out = torch.empty_like(parts[0]) if merge.native_lowp(out_dtype, parts) else None
        res = merge.recipe.combine(parts[0], list(parts[1:]), coefs, out=out)
        if not all_finite(res):
            raise merge.diagnose_nonfinite(key, parts, coefs)
        yield res if res.dtype == out_dtype else res.to(out_dtype)


def merge_to_disk(pretrained: SourceLike, finetuned, spec: MergeSpec, out: str,
                  progress: bool = True, family: str = 'auto',
                  fsync: bool = False) -> Dict[str, object]:
    """Merge and write a checkpoint; nothing appears at ``out`` unless everything succeeded.

    :param pretrained: path or source of the pretrained checkpoint.
    :param finetuned: path/source or list of them (order matters for sequential / capability).
    :param spec: the merge (recipe, alpha, per-group alphas, lambdas).
    :param out: output directory (or a ``.safetensors`` file when the finetuned input is a bare
        file); an existing one is replaced only after the new one is complete.
    :param progress: show a tqdm progress bar.
    :param family: model family (``'auto'``).
    :param fsync: flush weight files to disk before the rename (durable across power loss).
    :return: summary dict (out, fingerprint, alphas, recipe, seconds, bytes written).
    :raises MergeError: invalid inputs or failure; ``out`` untouched.
    """
    t0 = time.perf_counter()
    pre, fts = open_sources(pretrained, finetuned, family)
    validate_sources(pre, fts)
    fam = pre.family if pre.family != 'unknown' else fts[0].family
    groups = assign_groups(pre.keys(), fam if fam != 'unknown' else 'auto')
    merge = PreparedMerge(pre, fts, spec, groups)
    lay = layout_source(spec, fts)
    LOG.info('merging %s with %s; output in the layout of %s [%s]; convention: %s',
             describe_sources(pre, fts), spec.describe(), lay.path, lay.dialect, CONVENTION)
    hashing = DigestThread([pre] + fts)
    out = os.path.abspath(out)
    as_file = lay.root is None and out.endswith('.safetensors')
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(out) + '.tmp-', dir=parent)
    written = 0
    try:
        files = lay.layout()
        bar = tensor_bar(sum(len(k) for _, _, k in files), 'merge') if progress else None
        canon = {}
        for _, _, stored in files:
            for fk in stored:
                canon[fk] = lay.canonical_of(fk)
        for rel, metadata, stored in files:
            dest = os.path.join(tmp, os.path.basename(out) if as_file else rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            meta = dict(metadata)
            meta.setdefault('format', 'pt')
            meta['retain_ros.merge'] = json.dumps(
                {'recipe': spec.recipe, 'alpha': merge.alphas(), 'convention': CONVENTION})
            fmt = [(fk, lay.dtype(canon[fk]), tuple(lay.shape(canon[fk]))) for fk in stored]
            writer = StreamingWriter(dest, fmt, meta, fsync=fsync)
            try:
                for fk, dtype, _ in fmt:
                    for part in merged_chunks(merge, canon[fk], dtype):
                        writer.write_part(fk, part)
                    writer.end_tensor(fk)
                    for src in [pre] + fts:
                        src.release(canon[fk])  # keeps resident memory near one tensor
                    if bar is not None:
                        bar.update(1)
                writer.close()
            finally:
                writer.abort()
            written += writer.total_bytes
        if bar is not None:
            bar.close()
        if lay.index_file and not as_file:
            with open(lay.index_file, encoding='utf-8') as fh:
                index = json.load(fh)
            index.setdefault('metadata', {})['total_size'] = written
            rel = os.path.relpath(lay.index_file, lay.root)
            with open(os.path.join(tmp, rel), 'w', encoding='utf-8') as fh:
                json.dump(index, fh, indent=2)
        if not as_file:
            for path in lay.aux_files():
                dest = os.path.join(tmp, _aux_rel(lay, path))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(path, dest)
        _chmod_tree(tmp)
        hashing.wait()
        fp = fingerprint(pre, fts, spec, merge.alphas())
        final_tmp = os.path.join(tmp, os.path.basename(out)) if as_file else tmp
        _replace(final_tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (MergeError, SpecError, KeyboardInterrupt)):
            raise
        raise MergeError(f'merge into {out} failed: {type(exc).__name__}: {exc}; nothing '
                         'was written') from exc
    finally:
        if as_file:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    LOG.info('wrote %s (%.1f MB) in %.2f s, fingerprint %s', out, written / 1e6, seconds, fp)
    return {'out': out, 'fingerprint': fp, 'alpha': merge.alphas(), 'recipe': spec.recipe,
            'seconds': seconds, 'bytes': written, 'layout': lay.dialect}


def _replace(src: str, dest: str) -> None:
    """Move ``src`` to ``dest``, replacing an existing ``dest`` only at the very end."""
    old: Optional[str] = None
    if os.path.lexists(dest):
        old = dest + f'.old-{os.getpid()}'
        os.rename(dest, old)
    try:
        os.rename(src, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)
