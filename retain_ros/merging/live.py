"""In-place live merger: owns a module's weights and rewrites them when alpha changes.

Alpha's path from the node, one file per hop::

    ros/policy_node/live_merge.py   the parameter callback builds a MergeSpec
    runtime/merged_policy.py        MergedPolicy.set_spec: lock, generation, validity
    merging/live.py                 LiveMerger.apply (here): tensor by tensor, all-or-nothing
    merging/recipes/<recipe>.py     Recipe.combine, e.g. recipes/interpolate.py (RETAIN's lerp)

:meth:`LiveMerger.apply` prepares the spec against the sources
(:class:`~retain_ros.merging.engine.PreparedMerge`: the recipe and each group's coefficients),
reads the inputs piece by piece (:mod:`retain_ros.merging.live_inputs`) and calls the recipe on
each piece in :meth:`LiveMerger._merge_piece`, with the engine's checks around it.

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

from dataclasses import dataclass
import logging
import threading
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import torch
from torch import nn

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
from retain_ros.merging.errors import InvalidMergeSpecError
from retain_ros.merging.errors import MergeError
from retain_ros.merging.errors import RestoreFailedError
from retain_ros.merging.errors import SpecError
from retain_ros.merging.live_inputs import load_cache
from retain_ros.merging.live_inputs import MergeInputs
from retain_ros.merging.live_inputs import PieceReader
from retain_ros.merging.live_inputs import Reopened
from retain_ros.merging.memory import KEEP_SOURCES
from retain_ros.merging.memory import MemoryPlan
from retain_ros.merging.memory import plan_memory
from retain_ros.merging.module_fit import check_fit
from retain_ros.merging.module_fit import module_targets
from retain_ros.merging.progress import LIVE_DELAY_S
from retain_ros.merging.progress import tensor_bar
from retain_ros.merging.spec import MergeSpec

LOG = logging.getLogger(__name__)


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
        self._targets = module_targets(module, prefix)
        first = next(iter(self._targets.values()), None)
        self.device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device('cpu'))
        self._state: Optional[MergeState] = None
        self._merge: Optional[PreparedMerge] = None
        self._reader = PieceReader(self.device)
        pre, fts = open_sources(pretrained, finetuned, family)
        validate_sources(pre, fts)
        groups = check_fit(self._targets, pre, family)
        if plan is None:
            plan = plan_memory(pre, fts, self.device, self._module_dtype(), keep_sources,
                               model_allocated=True, enforce=check_memory)
        elif keep_sources not in ('auto', plan.mode):
            raise MergeError(f'keep_sources={keep_sources!r} but the plan chose {plan.mode!r}')
        self.plan = plan
        self.keep_sources = plan.mode
        self._digester = DigestThread([pre] + fts)
        LOG.info('live merger: %s; keep_sources=%s; %d tensors; convention: %s',
                 describe_sources(pre, fts), self.keep_sources, len(self._targets), CONVENTION)
        LOG.info('phase open: %.2f s (headers, key maps, memory plan)', time.perf_counter() - t0)
        t1 = time.perf_counter()
        cache = self._load_cache(pre, fts)
        if cache is not None:
            LOG.info('phase load sources (%s): %.2f s', self.keep_sources,
                     time.perf_counter() - t1)
        self._src = MergeInputs(pre, list(fts), cache)
        self._groups = groups
        self.apply(spec)

    def _module_dtype(self) -> Optional[torch.dtype]:
        dts = [t.dtype for t in self._targets.values() if t.dtype.is_floating_point]
        return max(set(dts), key=dts.count) if dts else None

    def _load_cache(self, pre: CheckpointSource, fts: Sequence[CheckpointSource]):
        return load_cache(pre, fts, list(self._targets), self.keep_sources, self.device)

    def _fingerprint(self, src: MergeInputs, spec: MergeSpec, alphas: Dict[str, object]) -> str:
        digester = self._digester
        if digester is not None and digester.sources[0] is src.pre:
            self._digester = None
            waited = digester.wait()
            if waited > 0.05:
                LOG.info('waited %.2f s for the input digests (cached for the next start)',
                         waited)
        return fingerprint(src.pre, src.fts, spec, alphas)

    # -- public API ------------------------------------------------------------------------------
    @property
    def state(self) -> MergeState:
        """The merge that is live now (the last one that succeeded)."""
        return self._state

    @property
    def sources(self) -> Tuple[CheckpointSource, List[CheckpointSource]]:
        """``(pretrained, [finetuned, ...])``."""
        return self._src.pre, list(self._src.fts)

    @property
    def groups(self) -> Dict[str, str]:
        """Canonical key -> parameter group."""
        return dict(self._groups)

    def apply(self, spec: MergeSpec) -> MergeState:
        """Merge with ``spec`` in place; all-or-nothing.

        :raises MergeError: nothing changed (old weights restored); the message says why.
        :raises RestoreFailedError: the merge failed and so did putting the old weights back;
            :attr:`valid` is False.
        """
        with self._lock:
            return self._apply(spec, self._src, None)

    # -- merging ---------------------------------------------------------------------------------
    def _merge_piece(self, merge: PreparedMerge, key: str, parts: List[torch.Tensor],
                     out: torch.Tensor, check_finite: bool) -> None:
        """Write the merge of one tensor (or flat chunk) into ``out``: the recipe, between checks.

        Integer / bool tensors are copied (they must be equal in every input); float tensors are
        combined by the recipe, straight into ``out`` when its dtype allows
        (:meth:`PreparedMerge.writes_into`), and checked for nan / inf when ``check_finite``.
        """
        pre_t, ft_ts = parts[0], parts[1:]
        if not is_float(pre_t.dtype):
            merge.check_equal(key, pre_t, ft_ts)
            out.copy_(ft_ts[0])
            return
        coefs = merge.coefs_for(key)
        direct = merge.writes_into(out, parts)
        res = merge.recipe.combine(pre_t, ft_ts, coefs, out=out if direct else None)
        if check_finite and not all_finite(res):
            raise merge.diagnose_nonfinite(key, parts, coefs)
        if not direct:
            out.copy_(res)

    def _run(self, merge: PreparedMerge, src: MergeInputs, keys: Sequence[str],
             check_finite_always: bool, done: Optional[List[str]], bar=None) -> None:
        """Merge ``keys`` from ``src`` into the module, listing each key in ``done`` when begun.

        Results are checked for nan / inf when ``check_finite_always`` (inputs re-read from the
        files) or when the recipe is not convex for the tensor's group.
        """
        convex = {g: merge.recipe.is_convex(c) for g, c in merge.coefs.items()}
        items = self._reader.parts(src, self._targets, keys)
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
                self._merge_piece(merge, key, self._to_target(parts, target), out, check)
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

    def _apply(self, spec: MergeSpec, src: MergeInputs,
               previous: Optional[Tuple[PreparedMerge, MergeInputs]]) -> MergeState:
        """Merge ``spec`` from ``src``; all-or-nothing.

        On failure ``previous`` (default: the live merge from the current inputs) is recomputed
        for the tensors already written.
        """
        try:
            merge = PreparedMerge(src.pre, src.fts, spec, self._groups)
        except SpecError as exc:
            raise InvalidMergeSpecError(str(exc)) from exc
        if src.cache is None:
            self._check_files(src)
        if previous is None and self._merge is not None and self.valid:
            previous = (self._merge, self._src)
        done: List[str] = []
        keys = list(self._targets)
        t0 = time.perf_counter()
        try:
            with tensor_bar(len(keys), 'merge', delay=LIVE_DELAY_S) as bar:
                with torch.no_grad():
                    self._run(merge, src, keys, src.cache is None, done, bar)
                self._sync()
                alphas = merge.alphas()
                fp = self._fingerprint(src, spec, alphas)
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
        self._merge = merge
        self._src = src
        self.valid = True
        LOG.info('merged in place in %.1f ms (keep_sources=%s): %s fingerprint=%s', ms,
                 self.keep_sources, spec.describe(), fp)
        return self._state

    @staticmethod
    def _check_files(src: MergeInputs) -> None:
        """Disk mode: refuse before writing anything if a file changed since it was opened."""
        for s in src.sources:
            s.check_unchanged()

    def _restore(self, previous: Tuple[PreparedMerge, MergeInputs], done: List[str],
                 spec: MergeSpec, reason, exc: BaseException) -> None:
        merge, src = previous
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                self._run(merge, src, done, False, None)
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

    # -- reload ----------------------------------------------------------------------------------
    def reopen(self, pretrained: Optional[SourceLike] = None,
               finetuned: Optional[Sequence[SourceLike]] = None) -> Reopened:
        """Open checkpoint files (again) and check them against the module; nothing changes.

        Needs no lock: :class:`~retain_ros.runtime.merged_policy.MergedPolicy` calls it while
        inference goes on, then hands the result to :meth:`reload`.

        :param pretrained: another pretrained checkpoint (None: the live one's path).
        :param finetuned: other finetuned checkpoints (None: the live ones' paths).
        :raises MergeError: a file is unreadable, or the checkpoints do not fit each other or
            the module (naming the file and the first offending tensors).
        """
        pre, fts = self.sources
        new_pre, new_fts = open_sources(pre.path if pretrained is None else pretrained,
                                        [f.path for f in fts] if finetuned is None
                                        else list(finetuned), self.family)
        validate_sources(new_pre, new_fts)
        return Reopened(new_pre, list(new_fts), check_fit(self._targets, new_pre, self.family))

    def reload(self, reopened: Optional[Reopened] = None,
               spec: Optional[MergeSpec] = None) -> MergeState:
        """Re-merge from the checkpoint files read again; all-or-nothing.

        In device / host mode the new sources are loaded while the old ones are still held (the
        memory plan is checked for that first, before anything is allocated).

        :param reopened: the files as :meth:`reopen` opened and checked them (None: the live
            paths, opened here); other paths than the live ones switch checkpoints.
        :param spec: the spec to merge them with (None: the live one), e.g. a new alpha applied
            in the same merge as new checkpoints.
        :raises MergeError: files unreadable or not fitting, or the spec invalid for them; the
            old sources and weights stay.
        :raises RestoreFailedError: as for :meth:`apply`.
        """
        with self._lock:
            old = self._src
            spec = self._state.spec if spec is None else spec
            digester = self._digester
            try:
                if reopened is None:
                    reopened = self.reopen()
                pre, fts = reopened.pre, reopened.fts
                PreparedMerge(pre, fts, spec, reopened.groups)  # a spec unfit for them: refused
                if self.keep_sources != 'disk':
                    plan_memory(pre, fts, self.device, self._module_dtype(), self.keep_sources,
                                model_allocated=True, extra_sources=True)
                self._digester = DigestThread([pre] + fts)
                new = MergeInputs(pre, list(fts), self._load_cache(pre, fts))
            except Exception as exc:  # noqa: B902
                self._digester = digester   # the new sources' hashing is left behind
                if isinstance(exc, MergeError):
                    raise
                raise MergeError(f'reload failed: {type(exc).__name__}: {exc}; the previous '
                                 'weights are still live') from exc
            old_groups = self._groups
            self._groups = reopened.groups
            previous = (self._merge, old) if self.valid else None
            try:
                return self._apply(spec, new, previous)
            except MergeError:
                self._groups = old_groups
                if self._src is old:
                    self._digester = digester
                raise
