"""In-place live merger: owns a module's weights and rewrites them when alpha changes.

Weights are written with ``copy_`` / ``lerp(out=...)`` into the parameters' existing storage, so
``torch.compile``d or CUDA-graphed code that captured those tensors keeps working.

Memory is planned before anything is allocated (:mod:`retain_ros.merging.memory`):
``keep_sources='auto'`` (the default) takes the fastest mode that fits, an explicit mode that does
not fit is refused with :class:`~retain_ros.merging.memory.MemoryPlanError`.

A change is all-or-nothing without any snapshot of the model: if anything fails part-way
(unreadable file, out of memory, non-finite result) the tensors already rewritten are recomputed
from the previous merge's inputs (held in memory, or re-read from the files in disk mode) and
:class:`MergeError` says why. If that recomputation fails too, :class:`RestoreFailedError` is
raised and :attr:`LiveMerger.valid` becomes False: the module's weights are then inconsistent and
must not be used until a later :meth:`LiveMerger.apply` or :meth:`LiveMerger.reload` succeeds. The
first merge has no previous merge to go back to: if it fails the constructor raises and the module
is not usable. In disk mode each change first checks (size, mtime_ns, inode) that no checkpoint
file was rewritten since it was opened, and refuses before writing anything if one was.

Usage (policy side)::

    merger = LiveMerger(model, 'pre_dir', ['ft_dir'], MergeSpec(alpha=0.75))
    state = merger.apply(merger.state.spec.with_alpha(language=0.8))  # between inference steps
    state.to_dict()  # {'alpha': {...}, 'recipe', 'fingerprint', 'merge_ms', 'convention'}
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import logging
import threading
import time
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import torch
from torch import nn

from retain_ros.merging.checkpoint import CheckpointSource
from retain_ros.merging.checkpoint import is_float
from retain_ros.merging.engine import all_finite
from retain_ros.merging.engine import CONVENTION
from retain_ros.merging.engine import describe_sources
from retain_ros.merging.engine import fingerprint
from retain_ros.merging.engine import open_sources
from retain_ros.merging.engine import SourceLike
from retain_ros.merging.engine import TensorMerger
from retain_ros.merging.engine import validate_sources
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.errors import InvalidMergeSpecError
from retain_ros.merging.errors import KeyMismatchError
from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import RestoreFailedError
from retain_ros.merging.errors import SpecError
from retain_ros.merging.groups import assign_groups
from retain_ros.merging.memory import CHUNK_ELEMS
from retain_ros.merging.memory import KEEP_SOURCES
from retain_ros.merging.memory import MemoryPlan
from retain_ros.merging.memory import plan_memory
from retain_ros.merging.spec import MergeSpec

LOG = logging.getLogger(__name__)

#: merges that take longer show a progress bar after this many seconds
PROGRESS_DELAY_S = 2.0

Cache = Optional[Dict[str, Tuple[torch.Tensor, List[torch.Tensor]]]]


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit='tensor', leave=False, delay=PROGRESS_DELAY_S)


@dataclass
class _Inputs:
    """Where a merge reads its inputs: the sources and their in-memory copies (None: disk)."""

    pre: CheckpointSource
    fts: List[CheckpointSource]
    cache: Cache


@dataclass(frozen=True)
class MergeState:
    """The merged weights now live in the module.

    :param spec: the spec that produced them.
    :param alphas: coefficient per group (a list when finetuned models get different lambdas).
    :param recipe: recipe name.
    :param fingerprint: digest of the inputs' contents + recipe + coefficients per group.
    :param merge_ms: wall time of the in-place merge.
    """

    spec: MergeSpec
    alphas: Dict[str, object]
    recipe: str
    fingerprint: str
    merge_ms: float

    def to_dict(self) -> dict:
        """JSON-able summary (published on ``~/merge_state`` and written to episode logs)."""
        return {'alpha': dict(self.alphas), 'recipe': self.recipe,
                'fingerprint': self.fingerprint, 'merge_ms': round(self.merge_ms, 3),
                'convention': CONVENTION}


class LiveMerger:
    """Merge checkpoints into ``module`` in place and re-merge on demand.

    :param module: the model; its ``state_dict()`` names (minus ``prefix``) must be exactly the
        canonical names of the checkpoints (tied parameters sharing storage count once).
    :param pretrained: path or :class:`CheckpointSource`.
    :param finetuned: list of paths or sources (one path is accepted too).
    :param spec: initial :class:`MergeSpec`, applied before the constructor returns.
    :param keep_sources: ``'auto'`` (default: the fastest mode that fits in the free memory),
        ``'device'`` (inputs kept on the module's device: fastest re-merge), ``'host'`` (CPU
        memory, pinned when CUDA is available), ``'disk'`` (re-read from the files at every
        merge: least memory). An explicit mode that does not fit is refused before allocating.
    :param device: where ``'device'`` keeps the inputs (default: the module's device).
    :param family: model family for key normalization and groups (``'auto'``).
    :param prefix: prefix of the module's state_dict names to strip (e.g. ``'model.'``).
    :param plan: a memory plan made before the module was built (``load_merged_policy`` makes
        one); its mode is used and the memory is not checked again.
    :param check_memory: refuse modes that do not fit (False: only log the plan).
    :raises MemoryPlanError: the requested mode does not fit (nothing allocated).
    :raises MergeError: the checkpoints do not fit the module, or the first merge failed.
    """

    def __init__(self, module: nn.Module, pretrained: SourceLike,
                 finetuned: Union[SourceLike, Sequence[SourceLike]], spec: MergeSpec,
                 keep_sources: str = 'auto', device: Union[None, str, torch.device] = None,
                 family: str = 'auto', prefix: str = '', plan: Optional[MemoryPlan] = None,
                 check_memory: bool = True):
        if keep_sources not in KEEP_SOURCES:
            raise MergeError(f'keep_sources={keep_sources!r}; choose one of {KEEP_SOURCES}')
        t0 = time.perf_counter()
        self.module = module
        self.family = family
        self.prefix = prefix
        self.valid = False
        self._lock = threading.RLock()
        self._targets = self._module_targets(module, prefix)
        first = next(iter(self._targets.values()), None)
        self.device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device('cpu'))
        self._state: Optional[MergeState] = None
        self._merger: Optional[TensorMerger] = None
        self._buffers: Dict[Tuple[int, int], torch.Tensor] = {}
        pre, fts = open_sources(pretrained, finetuned, family)
        validate_sources(pre, fts)
        groups = self._check_fit(pre)
        if plan is None:
            plan = plan_memory(pre, fts, self.device, self._module_dtype(), keep_sources,
                               model_allocated=True, enforce=check_memory)
        elif keep_sources not in ('auto', plan.mode):
            raise MergeError(f'keep_sources={keep_sources!r} but the plan chose {plan.mode!r}')
        self.plan = plan
        self.keep_sources = plan.mode
        self._start_digests([pre] + fts)
        LOG.info('live merger: %s; keep_sources=%s; %d tensors; convention: %s',
                 describe_sources(pre, fts), self.keep_sources, len(self._targets), CONVENTION)
        LOG.info('phase open: %.2f s (headers, key maps, memory plan)', time.perf_counter() - t0)
        t1 = time.perf_counter()
        cache = self._load_cache(pre, fts)
        if cache is not None:
            LOG.info('phase load sources (%s): %.2f s', self.keep_sources,
                     time.perf_counter() - t1)
        self._src = _Inputs(pre, list(fts), cache)
        self._groups = groups
        self.apply(spec)

    @property
    def _pre(self) -> CheckpointSource:
        return self._src.pre

    @property
    def _fts(self) -> List[CheckpointSource]:
        return self._src.fts

    @property
    def _cache(self) -> Cache:
        return self._src.cache

    def _module_dtype(self) -> Optional[torch.dtype]:
        dts = [t.dtype for t in self._targets.values() if t.dtype.is_floating_point]
        return max(set(dts), key=dts.count) if dts else None

    def _start_digests(self, sources: Sequence[CheckpointSource]) -> None:
        """Hash the inputs (for the fingerprint) on a thread while the merge reads them.

        The thread and its error belong to these sources: a reload that fails leaves them
        behind, and the next merge of the previous sources neither waits for them nor inherits
        their error.
        """
        errors: List[BaseException] = []
        owner = sources[0] if sources else None

        def work():
            try:
                for src in sources:
                    src.digest()
            except BaseException as exc:  # noqa: B902 - reported when the fingerprint is made
                errors.append(exc)

        thread = threading.Thread(target=work, name='retain-ros-digest', daemon=True)
        self._digester = (thread, errors, owner)
        thread.start()

    def _fingerprint(self, merger: TensorMerger, src: _Inputs, spec: MergeSpec,
                     alphas: Dict[str, object]) -> str:
        if self._digester is not None and self._digester[2] is src.pre:
            thread, errors, _ = self._digester
            t0 = time.perf_counter()
            thread.join()
            self._digester = None
            waited = time.perf_counter() - t0
            if waited > 0.05:
                LOG.info('waited %.2f s for the input digests (cached for the next start)',
                         waited)
            if errors:
                exc = errors[0]
                raise CheckpointError(f'hashing the inputs failed: {exc}') from exc
        return fingerprint(src.pre, src.fts, spec, alphas)

    # -- setup -----------------------------------------------------------------------------------
    @staticmethod
    def _module_targets(module: nn.Module, prefix: str) -> Dict[str, torch.Tensor]:
        targets: Dict[str, torch.Tensor] = {}
        seen: Dict[Tuple[int, torch.dtype, Tuple[int, ...], Tuple[int, ...]], str] = {}
        for name, value in module.state_dict(keep_vars=True).items():
            if prefix:
                if not name.startswith(prefix):
                    raise MergeError(f'module tensor {name!r} lacks the prefix {prefix!r}')
                name = name[len(prefix):]
            t = value.detach()
            ident = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
            if t.numel() and ident in seen:
                continue  # tied to an earlier name; written once through it
            seen[ident] = name
            targets[name] = t
        return targets

    def _check_fit(self, pre: CheckpointSource) -> Dict[str, str]:
        ckpt = set(pre.keys())
        mod = set(self._targets)
        missing, extra = sorted(mod - ckpt), sorted(ckpt - mod)
        if missing or extra:
            raise KeyMismatchError(
                f'checkpoint {pre.path} ({pre.family}/{pre.dialect}) does not fit the module: '
                f'{len(missing)} module tensor(s) not in the checkpoint {missing[:5]}; '
                f'{len(extra)} checkpoint tensor(s) not in the module {extra[:5]}')
        for k, t in self._targets.items():
            if tuple(t.shape) != tuple(pre.shape(k)):
                raise KeyMismatchError(f'tensor {k!r}: module has shape {list(t.shape)}, '
                                       f'{pre.file_of(k)} has {list(pre.shape(k))}')
            if is_float(t.dtype) != is_float(pre.dtype(k)):
                raise KeyMismatchError(f'tensor {k!r}: module dtype {t.dtype} vs {pre.dtype(k)} '
                                       f'in {pre.file_of(k)}')
        family = pre.family if pre.family != 'unknown' else self.family
        return assign_groups(sorted(ckpt), family if family != 'unknown' else 'auto')

    def _load_cache(self, pre: CheckpointSource, fts: List[CheckpointSource]) -> Cache:
        if self.keep_sources == 'disk':
            return None
        if self.keep_sources == 'device':
            where = self.device
            pin = False
        else:
            where = torch.device('cpu')
            pin = torch.cuda.is_available()
        cache: Dict[str, Tuple[torch.Tensor, List[torch.Tensor]]] = {}
        bar = _progress(len(self._targets), f'load sources ({self.keep_sources})')
        try:
            for k in self._targets:
                tensors = []
                for src in [pre] + fts:
                    if where.type == 'cpu':
                        buf = torch.empty(src.shape(k), dtype=src.dtype(k), pin_memory=pin)
                        t = src.read(k, out=buf)
                    else:
                        t = src.read(k).to(where)
                    if is_float(t.dtype) and not all_finite(t):
                        raise CheckpointError(
                            f'non-finite values (nan/inf) in tensor {k!r} of {src.file_of(k)}')
                    tensors.append(t)
                cache[k] = (tensors[0], tensors[1:])
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return cache

    # -- public API ------------------------------------------------------------------------------
    @property
    def state(self) -> MergeState:
        """The merge that is live now (the last one that succeeded)."""
        return self._state

    @property
    def sources(self) -> Tuple[CheckpointSource, List[CheckpointSource]]:
        """``(pretrained, [finetuned, ...])``."""
        return self._pre, list(self._fts)

    @property
    def groups(self) -> Dict[str, str]:
        """Canonical key -> parameter group."""
        return dict(self._groups)

    def _scratch(self, i: int, src: CheckpointSource, dtype: torch.dtype,
                 numel: int, slot: int = 0) -> torch.Tensor:
        """Reusable read buffer of source ``i`` in buffer set ``slot`` viewed as ``numel``
        elements of ``dtype`` (no fresh allocation and page faults per tensor in disk mode)."""
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        buf = self._buffers.get((slot, i))
        if buf is None or buf.numel() < nbytes:
            size = max(nbytes, CHUNK_ELEMS * max(
                (torch.empty((), dtype=src.dtype(k)).element_size() for k in src.keys()),
                default=4))
            buf = torch.empty(size, dtype=torch.uint8, pin_memory=torch.cuda.is_available()
                              and self.device.type == 'cuda')
            self._buffers[(slot, i)] = buf
        return buf[:nbytes].view(dtype)

    def _read(self, src: _Inputs, key: str, start: Optional[int] = None,
              count: Optional[int] = None, slot: int = 0) -> List[torch.Tensor]:
        """Inputs of ``key`` (or of its flat range) read from the files into the scratch
        buffers of ``slot``."""
        out = []
        for i, s in enumerate([src.pre] + src.fts):
            if s.is_lora:  # materialized per call: read whole, slice
                t = s.read(key)
                out.append(t if start is None else t.reshape(-1)[start:start + count])
                continue
            shape = tuple(s.shape(key))
            numel = count if start is not None else int(torch.Size(shape).numel())
            buf = self._scratch(i, s, s.dtype(key), numel, slot)
            if start is None:
                out.append(s.read(key, out=buf.view(shape)))
            else:
                out.append(s.read_range(key, start, count, out=buf))
        return out

    def _pieces(self, keys: Sequence[str], whole: bool = False):
        """The merge's work items in order: ``(key, start, count)``, ``start`` None for a whole
        tensor; tensors over :data:`CHUNK_ELEMS` elements are cut in flat chunks unless ``whole``
        (a LoRA source materializes the whole tensor per read: cutting it would rebuild it once
        per chunk; the memory plan budgets the whole tensor then)."""
        for key in keys:
            target = self._targets[key]
            n = target.numel()
            if (not whole and n > CHUNK_ELEMS and target.is_contiguous()
                    and is_float(target.dtype)):
                for i in range(0, n, CHUNK_ELEMS):
                    yield key, i, min(CHUNK_ELEMS, n - i)
            else:
                yield key, None, None

    def _cached_parts(self, src: _Inputs, key: str, start: Optional[int],
                      count: Optional[int]) -> List[torch.Tensor]:
        pre_t, ft_ts = src.cache[key]
        if start is None:
            return [pre_t] + list(ft_ts)
        return [t.reshape(-1)[start:start + count] for t in [pre_t] + list(ft_ts)]

    def _prefetched(self, src: _Inputs, pieces) -> Iterator[tuple]:
        """Disk mode: ``pieces`` with their inputs, each read while the previous one is merged.

        Two buffer sets, alternating: a one-thread pool reads piece ``i + 1`` into set
        ``(i + 1) % 2`` (``pread`` releases the GIL) while the caller merges piece ``i`` from the
        other, so a pass costs about max(read, compute). Closing the generator (a failed merge)
        waits for the read in flight, so a restore never races it for the buffers.
        """
        pieces = list(pieces)
        with ThreadPoolExecutor(1, thread_name_prefix='retain-merge-read') as pool:
            ahead = pool.submit(self._read, src, *pieces[0], 0) if pieces else None
            for i, (key, start, count) in enumerate(pieces):
                parts = ahead.result()
                if i + 1 < len(pieces):
                    ahead = pool.submit(self._read, src, *pieces[i + 1], (i + 1) % 2)
                yield key, start, count, parts

    def _run(self, merger: TensorMerger, src: _Inputs, keys: Sequence[str],
             check_finite_always: bool, done: Optional[List[str]], bar=None) -> None:
        convex = {g: merger.recipe.is_convex(c) for g, c in merger.coefs.items()}
        if src.cache is not None:
            items = ((key, start, count, self._cached_parts(src, key, start, count))
                     for key, start, count in self._pieces(keys))
        else:
            lora = any(s.is_lora for s in [src.pre] + src.fts)
            items = self._prefetched(src, self._pieces(keys, whole=lora))
        last = None
        try:
            for key, start, count, parts in items:
                target = self._targets[key]
                if key != last:
                    last = key
                    if done is not None:
                        done.append(key)
                    if bar is not None:
                        bar.update(1)
                check = check_finite_always or not convex[self._groups.get(key, 'other')]
                out = target if start is None else target.view(-1)[start:start + count]
                parts = self._to_target(parts, target)
                merger.merge_tensors(key, parts[0], parts[1:], target.dtype,
                                     check_finite=check, out=out)
                if src.cache is None and target.is_cuda:
                    # the read buffer may still feed an asynchronous copy; it is refilled next
                    torch.cuda.current_stream(target.device).synchronize()
        finally:
            close = getattr(items, 'close', None)
            if close is not None:
                close()     # a failed merge stops the reader before the restore reads again

    @staticmethod
    def _to_target(parts: List[torch.Tensor], target: torch.Tensor) -> List[torch.Tensor]:
        if parts[0].device == target.device:
            return parts
        return [t.to(target.device, non_blocking=True) for t in parts]

    def _sync(self) -> None:
        if any(t.is_cuda for t in self._targets.values()):
            torch.cuda.synchronize()

    def apply(self, spec: MergeSpec) -> MergeState:
        """Merge with ``spec`` in place; all-or-nothing.

        :raises MergeError: nothing changed (old weights restored); the message says why.
        :raises RestoreFailedError: the merge failed and so did putting the old weights back;
            :attr:`valid` is False.
        """
        with self._lock:
            return self._apply(spec, self._src, None)

    def _apply(self, spec: MergeSpec, src: _Inputs,
               previous: Optional[Tuple[TensorMerger, _Inputs]]) -> MergeState:
        """Merge ``spec`` from ``src``; on failure recompute ``previous`` (default: the live
        merge from the current inputs) for the tensors already written."""
        try:
            merger = TensorMerger(src.pre, src.fts, spec, self._groups)
        except SpecError as exc:
            raise InvalidMergeSpecError(str(exc)) from exc
        if src.cache is None:
            self._check_files(src)
        if previous is None and self._merger is not None and self.valid:
            previous = (self._merger, self._src)
        done: List[str] = []
        keys = list(self._targets)
        t0 = time.perf_counter()
        bar = _progress(len(keys), 'merge')
        try:
            try:
                with torch.no_grad():
                    self._run(merger, src, keys, src.cache is None, done, bar)
                self._sync()
                alphas = merger.alphas()
                fp = self._fingerprint(merger, src, spec, alphas)
            finally:
                if bar is not None:
                    bar.close()
        except Exception as exc:  # noqa: B902 - restore on any failure, then report it
            reason = exc if isinstance(exc, MergeError) else f'{type(exc).__name__}: {exc}'
            if previous is None:
                self.valid = False
                LOG.error('merge %s failed: %s', spec.describe(), reason)
                raise MergeError(f'merge failed ({spec.describe()}): {reason}; there is no '
                                 'previous merge to go back to, the module weights are not '
                                 'valid') from exc
            self._restore(previous, done, spec, reason, exc)
            LOG.error('merge %s failed, previous weights restored: %s', spec.describe(), reason)
            raise MergeError(f'merge failed ({spec.describe()}): {reason}; the previous weights '
                             'are still live') from exc
        ms = (time.perf_counter() - t0) * 1000.0
        self._state = MergeState(spec=spec, alphas=alphas, recipe=spec.recipe, fingerprint=fp,
                                 merge_ms=ms)
        self._merger = merger
        self._src = src
        self.valid = True
        LOG.info('merged in place in %.1f ms (keep_sources=%s): %s fingerprint=%s', ms,
                 self.keep_sources, spec.describe(), fp)
        return self._state

    @staticmethod
    def _check_files(src: _Inputs) -> None:
        """Disk mode: refuse before writing anything if a file changed since it was opened."""
        for s in [src.pre] + src.fts:
            s.check_unchanged()

    def _restore(self, previous: Tuple[TensorMerger, _Inputs], done: List[str], spec: MergeSpec,
                 reason, exc: BaseException) -> None:
        merger, src = previous
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                self._run(merger, src, done, False, None)
            self._sync()
        except Exception as again:  # noqa: B902
            self.valid = False
            LOG.error('merge %s failed (%s) and restoring the previous weights failed too (%s): '
                      'the module weights are INCONSISTENT', spec.describe(), reason, again)
            raise RestoreFailedError(
                f'merge failed ({spec.describe()}): {reason}; restoring the previous weights '
                f'failed too ({type(again).__name__}: {again}): the module weights are '
                'inconsistent, do not use them until a merge or reload succeeds') from exc
        LOG.info('recomputed the previous merge for %d tensor(s) in %.1f ms', len(done),
                 (time.perf_counter() - t0) * 1e3)

    def reload(self) -> MergeState:
        """Re-open the checkpoint files and re-merge the current spec; all-or-nothing.

        In device / host mode the new sources are loaded while the old ones are still held (the
        memory plan is checked for that first).

        :raises MergeError: files unreadable or no longer fitting; old sources and weights stay.
        :raises RestoreFailedError: as for :meth:`apply`.
        """
        with self._lock:
            old = self._src
            spec = self._state.spec
            digester = self._digester
            try:
                pre, fts = open_sources(old.pre.path, [f.path for f in old.fts], self.family)
                validate_sources(pre, fts)
                groups = self._check_fit(pre)
                if self.keep_sources != 'disk':
                    plan_memory(pre, fts, self.device, self._module_dtype(), self.keep_sources,
                                model_allocated=True, extra_sources=True)
                self._start_digests([pre] + fts)
                new = _Inputs(pre, list(fts), self._load_cache(pre, fts))
            except Exception as exc:  # noqa: B902
                self._digester = digester   # the new sources' hashing is left behind
                if isinstance(exc, MergeError):
                    raise
                raise MergeError(f'reload failed: {type(exc).__name__}: {exc}; the previous '
                                 'weights are still live') from exc
            old_groups = self._groups
            self._groups = groups
            previous = (self._merger, old) if self.valid else None
            try:
                return self._apply(spec, new, previous)
            except MergeError:
                self._groups = old_groups
                if self._src is old:
                    self._digester = digester
                raise
