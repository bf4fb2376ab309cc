"""In-place live merger: owns a module's weights and rewrites them when alpha changes.

Weights are written with ``copy_`` / ``lerp(out=...)`` into the parameters' existing storage, so
``torch.compile``d or CUDA-graphed code that captured those tensors keeps working. A change is
all-or-nothing: if anything fails part-way (unreadable file, out of memory, non-finite result),
the previous weights are put back bit-exactly and :class:`MergeError` says why.

Usage (policy side)::

    merger = LiveMerger(model, 'pre_dir', ['ft_dir'], MergeSpec(alpha=0.75))
    state = merger.apply(merger.state.spec.with_alpha(language=0.8))  # between inference steps
    state.to_dict()  # {'alpha': {...}, 'recipe', 'fingerprint', 'merge_ms', 'convention'}
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
import time
from typing import Dict
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
from retain_ros.merging.errors import SpecError
from retain_ros.merging.groups import assign_groups
from retain_ros.merging.spec import MergeSpec

LOG = logging.getLogger(__name__)

KEEP_SOURCES = ('device', 'host', 'disk')


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
    :param keep_sources: ``'device'`` (inputs kept on the module's device: fastest re-merge),
        ``'host'`` (CPU memory, pinned when CUDA is available), ``'disk'`` (re-read through the
        file mapping at every merge: least memory).
    :param device: where ``'device'`` keeps the inputs (default: the module's device).
    :param family: model family for key normalization and groups (``'auto'``).
    :param prefix: prefix of the module's state_dict names to strip (e.g. ``'model.'``).
    :raises MergeError: the checkpoints do not fit the module, or the first merge failed.
    """

    def __init__(self, module: nn.Module, pretrained: SourceLike,
                 finetuned: Union[SourceLike, Sequence[SourceLike]], spec: MergeSpec,
                 keep_sources: str = 'device', device: Union[None, str, torch.device] = None,
                 family: str = 'auto', prefix: str = ''):
        if keep_sources not in KEEP_SOURCES:
            raise MergeError(f'keep_sources={keep_sources!r}; choose one of {KEEP_SOURCES}')
        self.module = module
        self.keep_sources = keep_sources
        self.family = family
        self.prefix = prefix
        self._targets = self._module_targets(module, prefix)
        first = next(iter(self._targets.values()), None)
        self.device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device('cpu'))
        self._state: Optional[MergeState] = None
        pre, fts = open_sources(pretrained, finetuned, family)
        self._install_sources(pre, fts)
        LOG.info('live merger: %s; keep_sources=%s; %d tensors; convention: %s',
                 describe_sources(pre, fts), keep_sources, len(self._targets), CONVENTION)
        self.apply(spec)

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

    def _load_cache(self, pre: CheckpointSource, fts: List[CheckpointSource]):
        if self.keep_sources == 'disk':
            return None
        if self.keep_sources == 'device':
            where = self.device
            pin = False
        else:
            where = torch.device('cpu')
            pin = torch.cuda.is_available()
        cache: Dict[str, Tuple[torch.Tensor, List[torch.Tensor]]] = {}
        for k in self._targets:
            tensors = []
            for src in [pre] + fts:
                t = src.get(k)
                if is_float(t.dtype) and not all_finite(t):
                    raise CheckpointError(
                        f'non-finite values (nan/inf) in tensor {k!r} of {src.file_of(k)}')
                if where.type == 'cpu':
                    t = t.clone()
                    if pin:
                        t = t.pin_memory()
                else:
                    t = t.to(where)
                tensors.append(t)
            cache[k] = (tensors[0], tensors[1:])
        return cache

    def _install_sources(self, pre: CheckpointSource, fts: List[CheckpointSource]) -> None:
        validate_sources(pre, fts)
        self._groups = self._check_fit(pre)
        self._cache = self._load_cache(pre, fts)
        self._pre, self._fts = pre, list(fts)

    # -- public API ------------------------------------------------------------------------------
    @property
    def state(self) -> MergeState:
        """The merge that is live now."""
        return self._state

    @property
    def sources(self) -> Tuple[CheckpointSource, List[CheckpointSource]]:
        """``(pretrained, [finetuned, ...])``."""
        return self._pre, list(self._fts)

    @property
    def groups(self) -> Dict[str, str]:
        """Canonical key -> parameter group."""
        return dict(self._groups)

    def _inputs(self, key: str, target: torch.Tensor):
        if self._cache is not None:
            pre_t, ft_ts = self._cache[key]
        else:
            pre_t = self._pre.get(key)
            ft_ts = [f.get(key) for f in self._fts]
        if pre_t.device != target.device:
            pre_t = pre_t.to(target.device, non_blocking=True)
            ft_ts = [t.to(target.device, non_blocking=True) for t in ft_ts]
        return pre_t, ft_ts

    def _run(self, merger: TensorMerger, keys: Sequence[str], check_finite_always: bool,
             snapshot: Optional[Dict[str, torch.Tensor]], done: List[str]) -> None:
        convex = {g: merger.recipe.is_convex(c) for g, c in merger.coefs.items()}
        for key in keys:
            target = self._targets[key]
            pre_t, ft_ts = self._inputs(key, target)
            check = check_finite_always or not convex[self._groups.get(key, 'other')]
            if snapshot is not None:
                snapshot[key] = target.to('cpu', copy=True)
            done.append(key)
            merger.merge_tensors(key, pre_t, ft_ts, target.dtype, check_finite=check, out=target)
            if self._cache is None:
                merger.release(key)

    def _sync(self) -> None:
        if any(t.is_cuda for t in self._targets.values()):
            torch.cuda.synchronize()

    def apply(self, spec: MergeSpec) -> MergeState:
        """Merge with ``spec`` in place; all-or-nothing.

        :raises MergeError: nothing changed (old weights restored); the message says why.
        """
        return self._apply(spec, force_snapshot=False)

    def _apply(self, spec: MergeSpec, force_snapshot: bool) -> MergeState:
        try:
            merger = TensorMerger(self._pre, self._fts, spec, self._groups)
        except SpecError as exc:
            raise InvalidMergeSpecError(str(exc)) from exc
        # Restore by recomputing the previous merge when its inputs are in memory (no extra copy
        # of the model); otherwise snapshot each tensor before overwriting it.
        recompute = (not force_snapshot and self._state is not None and self._cache is not None)
        snapshot = None if recompute else {}
        done: List[str] = []
        keys = list(self._targets)
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                self._run(merger, keys, self._cache is None, snapshot, done)
            self._sync()
        except Exception as exc:  # noqa: B902 - restore on any failure, then report it
            self._restore(done, snapshot)
            reason = exc if isinstance(exc, MergeError) else f'{type(exc).__name__}: {exc}'
            LOG.error('merge %s failed, previous weights restored: %s', spec.describe(), reason)
            raise MergeError(f'merge failed ({spec.describe()}): {reason}; the previous weights '
                             'are still live') from exc
        ms = (time.perf_counter() - t0) * 1000.0
        alphas = merger.alphas()
        self._state = MergeState(spec=spec, alphas=alphas, recipe=spec.recipe,
                                 fingerprint=fingerprint(self._pre, self._fts, spec, alphas),
                                 merge_ms=ms)
        self._merger = merger
        LOG.info('merged in place in %.1f ms: %s fingerprint=%s', ms, spec.describe(),
                 self._state.fingerprint)
        return self._state

    def _restore(self, done: List[str], snapshot: Optional[Dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            if snapshot is not None:
                for key in done:
                    if key in snapshot:
                        self._targets[key].copy_(snapshot[key])
                return
            try:
                self._run(self._merger, done, False, None, [])
            except Exception as exc:  # noqa: B902
                raise MergeError(f'restoring the previous weights failed too ({exc}); the '
                                 'module weights are inconsistent, reload them') from exc

    def reload(self) -> MergeState:
        """Re-open the checkpoint files and re-merge the current spec; all-or-nothing.

        :raises MergeError: files unreadable or no longer fitting; old sources and weights stay.
        """
        old = (self._pre, self._fts, self._cache, self._groups)
        spec = self._state.spec
        try:
            pre, fts = open_sources(self._pre.path, [f.path for f in self._fts], self.family)
            self._install_sources(pre, fts)
            return self._apply(spec, force_snapshot=True)
        except Exception as exc:  # noqa: B902
            self._pre, self._fts, self._cache, self._groups = old
            if isinstance(exc, MergeError):
                raise
            raise MergeError(f'reload failed: {type(exc).__name__}: {exc}; the previous weights '
                             'are still live') from exc
