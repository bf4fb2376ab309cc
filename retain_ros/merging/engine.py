"""What every merge shares: opening and validating the sources, the prepared merge, fingerprints.

Used by the live merger (:mod:`retain_ros.merging.live`) and by ``retain-ros merge``
(:mod:`retain_ros.merging.to_disk`); both call the recipe themselves, with the checks of
:class:`PreparedMerge` around it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import torch

from retain_ros.merging.checkpoint import open_checkpoint
from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import is_float
from retain_ros.merging.digests import json_digest
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.errors import KeyMismatchError
from retain_ros.merging.errors import MergeError
from retain_ros.merging.memory import CHUNK_ELEMS
from retain_ros.merging.recipes import get as get_recipe
from retain_ros.merging.recipes.base import Recipe
from retain_ros.merging.recipes.interpolate import native_lerp_exact
from retain_ros.merging.spec import GROUPS
from retain_ros.merging.spec import MergeSpec

LOG = logging.getLogger(__name__)

CONVENTION = 'theta = (1 - alpha) * theta_pre + alpha * theta_ft (alpha = weight on finetuned)'
SourceLike = Union[str, os.PathLike, CheckpointSource]
_SHOW = 5
_LOWP = (torch.bfloat16, torch.float16)
_F32_INPUTS = (torch.float32, torch.bfloat16, torch.float16)


def _adapter_base(path: str) -> Optional[str]:
    cfg = os.path.join(path, 'adapter_config.json')
    try:
        with open(cfg, encoding='utf-8') as fh:
            base = json.load(fh).get('base_model_name_or_path')
    except (OSError, ValueError):
        return None
    if base and not os.path.isabs(base):
        base = os.path.join(path, base)
    return base if base and os.path.exists(base) else None


def open_sources(pretrained: SourceLike, finetuned: Sequence[SourceLike],
                 family: str = 'auto'):
    """Open the pretrained and finetuned checkpoints.

    A finetuned LoRA adapter whose own base is not a local path is applied to ``pretrained``.

    :return: ``(pretrained_source, [finetuned_source, ...])``.
    """
    if isinstance(finetuned, (str, os.PathLike, CheckpointSource)):
        finetuned = [finetuned]
    if not finetuned:
        raise MergeError('no finetuned checkpoint given')
    pre = open_checkpoint(pretrained, family=family)
    fts = []
    for f in finetuned:
        if isinstance(f, CheckpointSource):
            fts.append(f)
            continue
        path = os.fspath(f)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, 'adapter_config.json')):
            fts.append(open_checkpoint(path, family=family, base=_adapter_base(path) or pre))
        else:
            fts.append(open_checkpoint(path, family=family))
    return pre, fts


def _names(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f' (+{len(keys) - _SHOW} more)' if len(keys) > _SHOW else ''
    return ', '.join(repr(k) for k in keys[:_SHOW]) + more


def validate_sources(pre: CheckpointSource, fts: Sequence[CheckpointSource]) -> None:
    """Check that the sources hold the same canonical keys, shapes and dtype families.

    Run before anything changes.

    :raises KeyMismatchError: naming the files and the first offending keys.
    """
    pre_keys = set(pre.keys())
    for ft in fts:
        ft_keys = set(ft.keys())
        missing, extra = pre_keys - ft_keys, ft_keys - pre_keys
        if missing or extra:
            parts = []
            if missing:
                parts.append(f'{len(missing)} tensor(s) of the pretrained checkpoint missing from '
                             f'the finetuned one: {_names(missing)}')
            if extra:
                parts.append(f'{len(extra)} tensor(s) only in the finetuned one: {_names(extra)}')
            raise KeyMismatchError(
                f'{ft.path} ({ft.family}/{ft.dialect}) does not hold the same tensors as '
                f'{pre.path} ({pre.family}/{pre.dialect}) after key normalization: '
                + '; '.join(parts))
        for k in sorted(pre_keys):
            if tuple(pre.shape(k)) != tuple(ft.shape(k)):
                raise KeyMismatchError(
                    f'tensor {k!r}: shape {list(pre.shape(k))} in {pre.file_of(k)} but '
                    f'{list(ft.shape(k))} in {ft.file_of(k)}')
            if is_float(pre.dtype(k)) != is_float(ft.dtype(k)):
                raise KeyMismatchError(
                    f'tensor {k!r}: dtype {pre.dtype(k)} in {pre.file_of(k)} but '
                    f'{ft.dtype(k)} in {ft.file_of(k)} (floating vs integer/bool)')


def all_finite(t: torch.Tensor) -> bool:
    """Tell whether no element is nan / inf, allocating nothing of the tensor's size.

    A float sum is finite only if every element is (nan and inf propagate); only when the sum
    is not finite (a non-finite element, or an overflow of the sum) is the exact test run, in
    chunks of :data:`~retain_ros.merging.memory.CHUNK_ELEMS` elements. The sum is taken in the
    tensor's own dtype: half-precision reductions accumulate in float32 internally, while
    ``sum(dtype=torch.float32)`` first copies the whole tensor to float32 (2 GiB for π0's
    embedding, held next to the sources while they are loaded).
    """
    if t.numel() == 0:
        return True
    if math.isfinite(float(t.sum())):
        return True
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + CHUNK_ELEMS]).all())
               for i in range(0, flat.numel(), CHUNK_ELEMS))


def fingerprint(pre: CheckpointSource, fts: Sequence[CheckpointSource], spec: MergeSpec,
                alphas: Dict[str, object]) -> str:
    """Short id of a merged state: input digests + recipe + coefficients per group."""
    payload = {
        'pretrained': pre.digest(), 'finetuned': [f.digest() for f in fts],
        'recipe': spec.recipe, 'alphas': alphas, 'lambdas': list(spec.lambdas),
        'convention': 'alpha=weight_on_finetuned',
    }
    return json_digest(payload)


class DigestThread:
    """The sources' content digests (for the fingerprint), hashed on a thread meanwhile.

    A merge reads the inputs while BLAKE3 (which releases the GIL) hashes them; digests are
    cached per file identity for the next run (:mod:`retain_ros.merging.digests`).

    :param sources: the checkpoints to hash, pretrained first.
    """

    def __init__(self, sources: Sequence[CheckpointSource]):
        self.sources = list(sources)
        self._errors: List[BaseException] = []
        self._thread = threading.Thread(target=self._work, name='retain-ros-digest', daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for src in self.sources:
                src.digest()
        except BaseException as exc:  # noqa: B902 - reported by wait()
            self._errors.append(exc)

    def wait(self) -> float:
        """Wait until every digest is known; return the seconds waited.

        :raises CheckpointError: hashing failed (the first error, chained).
        """
        t0 = time.perf_counter()
        self._thread.join()
        if self._errors:
            exc = self._errors[0]
            raise CheckpointError(f'hashing the inputs failed: {exc}') from exc
        return time.perf_counter() - t0


class PreparedMerge:
    """A :class:`MergeSpec` checked against its sources.

    It holds the recipe, each group's coefficients, and the checks every merged tensor goes
    through. The callers (:class:`~retain_ros.merging.live.LiveMerger`,
    :func:`~retain_ros.merging.to_disk.merge_to_disk`) call :attr:`recipe` themselves, between
    :meth:`check_equal` (integer / bool tensors) and the finiteness check
    (:meth:`diagnose_nonfinite` says which input or coefficient is to blame).

    :param pre: pretrained source.
    :param fts: finetuned sources.
    :param spec: merge spec (validated against the recipe here).
    :param groups: canonical key -> group.
    :raises SpecError: the recipe does not take this many finetuned checkpoints or lambdas.
    """

    def __init__(self, pre: CheckpointSource, fts: Sequence[CheckpointSource], spec: MergeSpec,
                 groups: Dict[str, str]):
        self.pre, self.fts, self.spec, self.groups = pre, list(fts), spec, groups
        self.recipe: Recipe = get_recipe(spec.recipe)
        self.recipe.check(spec, len(self.fts))
        self.coefs = {g: self.recipe.coefficients(spec, g, len(self.fts))
                      for g in set(groups.values()) | {'other'}}

    def coefs_for(self, key: str) -> Tuple[float, ...]:
        """Coefficient per finetuned checkpoint of tensor ``key`` (its group's)."""
        return self.coefs[self.groups.get(key, 'other')]

    def check_equal(self, key: str, pre_t: torch.Tensor, ft_ts: Sequence[torch.Tensor]) -> None:
        """Integer / bool tensors are never interpolated: they must match exactly.

        :raises KeyMismatchError: naming the tensor and both files.
        """
        for ft, t in zip(self.fts, ft_ts):
            if pre_t.dtype != t.dtype or not torch.equal(pre_t, t.to(pre_t.device)):
                raise KeyMismatchError(
                    f'non-float tensor {key!r} ({pre_t.dtype}) differs between '
                    f'{self.pre.file_of(key)} and {ft.file_of(key)}; integer/bool tensors are '
                    'copied, never interpolated, so they must be equal')

    def diagnose_nonfinite(self, key: str, inputs: Sequence[torch.Tensor], coefs) -> MergeError:
        """Error naming the input file with non-finite values, else the coefficients."""
        for src, t in zip([self.pre] + self.fts, inputs):
            if is_float(t.dtype) and not all_finite(t):
                return CheckpointError(f'non-finite values (nan/inf) in tensor {key!r} of '
                                       f'{src.file_of(key)}')
        return MergeError(f'merging tensor {key!r} with coefficients {list(coefs)} '
                          f'({self.spec.recipe}) produced non-finite values (overflow)')

    def native_lowp(self, dtype: torch.dtype, tensors: Sequence[torch.Tensor]) -> bool:
        """Tell whether the recipe can write ``dtype`` directly (exact float32-internal math)."""
        return (self.recipe.lowp_out and dtype in _LOWP and native_lerp_exact(dtype)
                and all(t.dtype == dtype for t in tensors))

    def writes_into(self, out: torch.Tensor, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether the recipe may write its result straight into ``out`` (no float32 copy first).

        True for a float32 ``out`` with float32 / half-precision inputs, and for a half-precision
        ``out`` when :meth:`native_lowp` holds.
        """
        return ((out.dtype == torch.float32 and all(t.dtype in _F32_INPUTS for t in inputs))
                or self.native_lowp(out.dtype, inputs))

    def alphas(self) -> Dict[str, object]:
        """Coefficient(s) per group, as reported in merge states (floats for one finetuned)."""
        out: Dict[str, object] = {}
        for g in GROUPS:
            c = self.recipe.coefficients(self.spec, g, len(self.fts))
            out[g] = c[0] if len(set(c)) == 1 else list(c)
        return out


def describe_sources(pre: CheckpointSource, fts: List[CheckpointSource]) -> str:
    """One line for logs: each source's path, family and key dialect."""
    return (f'pretrained {pre.path} [{pre.family}/{pre.dialect}], finetuned '
            + ', '.join(f'{f.path} [{f.family}/{f.dialect}]' for f in fts))
