"""Memory plan of a live merge: what each ``keep_sources`` mode needs, checked before allocating.

Everything comes from the safetensors headers (shapes and dtypes, no data read), the target dtype
and device, and the memory free now:

- host: ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's limit minus its usage
  (cgroup v2 ``memory.max``, or v1 ``memory.limit_in_bytes``) when a limit is set;
- CUDA: ``torch.cuda.mem_get_info`` of the device.

What a mode needs, for a model of ``M`` bytes (in the target dtype), sources of ``S`` bytes in all
(pretrained + finetuned, as stored) and a transient ``T`` of a few copies of the largest tensor:

========== ======================== ==========================
mode       on the model's device    on the host
========== ======================== ==========================
``device`` ``M + S + T``            ``T``
``host``   ``M + T``                ``S + T``
``disk``   ``M + T``                ``T`` (file pages stay in the page cache, reclaimable)
========== ======================== ==========================

On a CPU device both columns are the same memory and add up. A mode *fits* when its need plus a
headroom (``HEADROOM_BYTES`` + ``HEADROOM_FRACTION`` of the need) is at most what is free.
``keep_sources='auto'`` takes the fastest mode that fits (device, then host, then disk);
``dtype='auto'`` keeps the checkpoint's own dtype, and widens it to the device's preferred one
(float32 on a CPU without bfloat16 matrix instructions, where bfloat16 matmuls are emulated and
slow; see :func:`preferred_dtype`) only when the wider model fits in the same mode
the checkpoint's dtype would get. An explicit mode that does not fit is refused with
:class:`MemoryPlanError`, naming the numbers and the modes that would fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import logging
import math
import os
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import torch

from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import is_float
from retain_ros.merging.devices import parse_dtype
from retain_ros.merging.devices import preferred_dtype
from retain_ros.merging.errors import MergeError

LOG = logging.getLogger(__name__)

#: fastest first
MODES = ('device', 'host', 'disk')
KEEP_SOURCES = ('auto',) + MODES
HEADROOM_BYTES = 512 << 20
HEADROOM_FRACTION = 0.10
#: tensors larger than this many elements are merged in flat chunks of this size (live merger),
#: so the transient memory is a few chunks, not a few copies of the largest tensor
CHUNK_ELEMS = 1 << 24
GIB = float(1 << 30)


class MemoryPlanError(MergeError):
    """The requested merge does not fit in the memory that is free (nothing was allocated)."""


def gib(n: float) -> str:
    return f'{n / GIB:.2f} GiB'


# -- free memory ----------------------------------------------------------------------------------
def _meminfo() -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open('/proc/meminfo', encoding='ascii') as fh:
            for line in fh:
                name, _, rest = line.partition(':')
                parts = rest.split()
                if parts:
                    out[name] = int(parts[0]) * (1024 if parts[1:] == ['kB'] else 1)
    except OSError:
        pass
    return out


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding='ascii') as fh:
            raw = fh.read().strip()
    except OSError:
        return None
    if not raw or raw == 'max':
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _cgroup_free() -> Tuple[Optional[int], str]:
    """Bytes the cgroup still allows (limit - usage + inactive file pages), or None."""
    try:
        with open('/proc/self/cgroup', encoding='ascii') as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None, ''
    for line in lines:
        _, controllers, rel = line.split(':', 2)
        rel = rel.lstrip('/')
        if controllers == '':  # cgroup v2
            base = os.path.join('/sys/fs/cgroup', rel)
            limit = _read_int(os.path.join(base, 'memory.max'))
            usage = _read_int(os.path.join(base, 'memory.current'))
            stat = os.path.join(base, 'memory.stat')
            inactive_key = 'inactive_file'
        elif 'memory' in controllers.split(','):
            base = os.path.join('/sys/fs/cgroup/memory', rel)
            limit = _read_int(os.path.join(base, 'memory.limit_in_bytes'))
            usage = _read_int(os.path.join(base, 'memory.usage_in_bytes'))
            stat = os.path.join(base, 'memory.stat')
            inactive_key = 'total_inactive_file'
        else:
            continue
        if limit is None or usage is None or limit >= 1 << 60:
            continue
        inactive = 0
        try:
            with open(stat, encoding='ascii') as fh:
                for row in fh:
                    k, _, v = row.partition(' ')
                    if k == inactive_key:
                        inactive = int(v)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + inactive), f'cgroup limit {gib(limit)}'
    return None, ''


def host_free() -> Tuple[int, str]:
    """``(bytes, where from)``: host memory that can be allocated now."""
    avail = _meminfo().get('MemAvailable')
    what = 'MemAvailable'
    if avail is None:
        avail, what = 1 << 62, 'unknown (no /proc/meminfo)'
    cg, cg_what = _cgroup_free()
    if cg is not None and cg < avail:
        return cg, cg_what
    return avail, what


def device_free(device: torch.device) -> Tuple[Optional[int], str]:
    """Free bytes on a CUDA device (None for CPU: it is host memory)."""
    if device.type != 'cuda':
        return None, ''
    free, _ = torch.cuda.mem_get_info(device)
    return int(free), f'torch.cuda.mem_get_info({device})'


# -- needs ----------------------------------------------------------------------------------------
def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def checkpoint_dtype(src: CheckpointSource) -> torch.dtype:
    """Return the floating dtype holding most of a checkpoint's bytes (float32 if it has none)."""
    by: Dict[torch.dtype, int] = {}
    for k in src.keys():
        dt = src.dtype(k)
        if is_float(dt):
            by[dt] = by.get(dt, 0) + src.nbytes(k)
    return max(by, key=by.get) if by else torch.float32


@dataclass
class Sizes:
    """Byte counts from the headers.

    :param model: the model's merged tensors in the target dtype.
    :param sources: every source as stored (pretrained + finetuned).
    :param largest: elements of the largest tensor.
    :param source_itemsize: sum over sources of the largest tensor's item size.
    :param lora: a source is a LoRA adapter (materialized in float32 per tensor).
    :param sources_count: number of sources.
    """

    model: int
    sources: int
    largest: int
    source_itemsize: int
    lora: bool
    sources_count: int = 2

    def transient(self) -> int:
        """Return the transient bytes where the model is: a float32 result of one chunk.

        LoRA: of the largest tensor, with its ``B @ A`` product.
        """
        if self.lora:
            return self.largest * 4 * 3
        return min(self.largest, CHUNK_ELEMS) * 4

    def read_buffers(self) -> int:
        """Return the bytes of the host buffers one chunk of each source is read into.

        LoRA: whole tensors. Two sets: disk mode reads the next chunk while the current one is
        merged.
        """
        return (self.largest if self.lora else min(self.largest, CHUNK_ELEMS)) * 8 * (
            self.sources_count) * 2


def sizes(pre: CheckpointSource, fts: Sequence[CheckpointSource],
          dtype: Optional[torch.dtype]) -> Sizes:
    """Model and source bytes for the module in ``dtype`` (None: each tensor's own dtype)."""
    model = sources = largest = 0
    items = 0
    for k in pre.keys():
        numel = int(math.prod(pre.shape(k)))
        own = pre.dtype(k)
        model += numel * (_itemsize(dtype) if dtype is not None and is_float(own)
                          else _itemsize(own))
        if numel > largest:
            largest = numel
            items = sum(_itemsize(s.dtype(k)) for s in [pre, *fts])
        for s in [pre, *fts]:
            sources += numel * _itemsize(s.dtype(k))
    return Sizes(model, sources, largest, items, any(getattr(f, 'is_lora', False) for f in fts),
                 1 + len(fts))


@dataclass
class ModeNeed:
    """Bytes one mode needs on the device and on the host, and whether it fits."""

    mode: str
    device_bytes: int
    host_bytes: int
    fits: bool
    why: str = ''


@dataclass
class MemoryPlan:
    """The chosen mode and dtype with the numbers behind the choice.

    :param mode: ``device`` | ``host`` | ``disk``.
    :param dtype: the model's floating dtype.
    :param device: where the model lives.
    :param sizes: header byte counts for ``dtype``.
    :param needs: every mode's need (for ``dtype``), fastest first.
    :param host_free: host bytes free when planned (and where the number comes from).
    :param device_free: device bytes free (None on CPU).
    :param model_allocated: the model was already allocated (its bytes are not counted).
    :param notes: how the dtype was chosen.
    """

    mode: str
    dtype: torch.dtype
    device: torch.device
    sizes: Sizes
    needs: List[ModeNeed]
    host_free: Tuple[int, str]
    device_free: Tuple[Optional[int], str]
    model_allocated: bool
    notes: List[str] = field(default_factory=list)

    def need(self, mode: Optional[str] = None) -> ModeNeed:
        mode = mode or self.mode
        return next(n for n in self.needs if n.mode == mode)

    def describe(self) -> str:
        """One line: choice, sizes, needs per mode and free memory."""
        s = self.sizes
        parts = [f'keep_sources={self.mode} dtype={str(self.dtype).replace("torch.", "")} on '
                 f'{self.device}', f'model {gib(s.model)}'
                 + (' (allocated)' if self.model_allocated else ''),
                 f'sources {gib(s.sources)}', f'largest tensor {s.largest:,} elements']
        for n in self.needs:
            where = (f'{gib(n.host_bytes)}' if self.device.type == 'cpu'
                     else f'{gib(n.device_bytes)} device + {gib(n.host_bytes)} host')
            parts.append(f'{n.mode} needs {where}{"" if n.fits else " (does not fit)"}')
        parts.append(f'free: host {gib(self.host_free[0])} ({self.host_free[1]})')
        if self.device_free[0] is not None:
            parts.append(f'device {gib(self.device_free[0])}')
        parts.append(f'headroom {gib(HEADROOM_BYTES)} + {HEADROOM_FRACTION:.0%} of the need')
        return '; '.join(parts + self.notes)


def _need(mode: str, s: Sizes, device: torch.device, model_allocated: bool,
          extra_sources: int = 0) -> Tuple[int, int]:
    model = 0 if model_allocated else s.model
    sources = s.sources + extra_sources
    t = s.transient()
    host_t = s.read_buffers()
    if mode == 'device':
        dev, host = model + sources + t, host_t
    elif mode == 'host':
        dev, host = model + t, sources + host_t
    else:
        dev, host = model + t, host_t
    if device.type == 'cpu':
        return 0, dev + host
    return dev, host


def _headroom(need: int) -> float:
    """Safety margin a need of ``need`` bytes must leave free (allocator slack, other users)."""
    return HEADROOM_BYTES + HEADROOM_FRACTION * need


def _fits(need: int, free: Optional[int]) -> bool:
    if free is None:
        return True
    return need == 0 or need + _headroom(need) <= free


def _needs(s: Sizes, device: torch.device, model_allocated: bool, host: int,
           dev_free: Optional[int], extra_sources: int = 0) -> List[ModeNeed]:
    out = []
    for mode in MODES:
        d, h = _need(mode, s, device, model_allocated, extra_sources)
        ok_dev = device.type == 'cpu' or _fits(d, dev_free)
        ok_host = _fits(h, host)
        why = []
        if not ok_dev:
            why.append(f'{gib(d)} + {gib(_headroom(d))} headroom on {device} > '
                       f'{gib(dev_free)} free')
        if not ok_host:
            why.append(f'{gib(h)} + {gib(_headroom(h))} headroom on the host > {gib(host)} free')
        out.append(ModeNeed(mode, d, h, ok_dev and ok_host, ', '.join(why)))
    return out


def plan_memory(pre: CheckpointSource, fts: Sequence[CheckpointSource],
                device: Union[str, torch.device], dtype: Union[str, torch.dtype, None] = 'auto',
                keep_sources: str = 'auto', model_allocated: bool = False,
                extra_sources: bool = False, enforce: bool = True) -> MemoryPlan:
    """Choose (or check) the ``keep_sources`` mode and the model dtype before allocating.

    :param pre: pretrained source (headers only are read).
    :param fts: finetuned sources.
    :param device: where the model lives.
    :param dtype: ``'auto'`` / None (plan it) or the model's dtype.
    :param keep_sources: ``'auto'`` or one of :data:`MODES` (checked).
    :param model_allocated: the model already exists (its bytes are not needed again).
    :param extra_sources: a second set of sources is held meanwhile (``reload``).
    :param enforce: raise when nothing (or the requested mode) fits; otherwise only log.
    :return: the plan (logged at INFO).
    :raises MemoryPlanError: the requested mode / no mode fits, with the numbers.
    """
    if keep_sources not in KEEP_SOURCES:
        raise MergeError(f'keep_sources={keep_sources!r}; choose one of {KEEP_SOURCES}')
    device = torch.device(device)
    host = host_free()
    dev = device_free(device)
    want = parse_dtype(dtype)
    own = checkpoint_dtype(pre)
    notes: List[str] = []
    if want is not None:
        candidates = [want]
    else:
        pref = preferred_dtype(device)
        if pref == own:
            candidates = [own]
        elif _itemsize(pref) > _itemsize(own):
            candidates = [pref, own]  # widen only if it fits as well as the own dtype
        else:
            candidates = [own, pref]  # narrower only when the own dtype does not fit
    extra = sizes(pre, fts, None).sources if extra_sources else 0

    def evaluate(dt):
        s = sizes(pre, fts, dt)
        needs = _needs(s, device, model_allocated, host[0], dev[0], extra)
        fitting = [n.mode for n in needs if n.fits]
        if keep_sources != 'auto':
            mode = keep_sources if keep_sources in fitting else None
        else:
            mode = fitting[0] if fitting else None
        return s, needs, mode

    results = [(dt,) + evaluate(dt) for dt in candidates]
    chosen = None
    if want is None and len(results) == 2 and _itemsize(candidates[0]) > _itemsize(own):
        wide, narrow = results
        if wide[3] is not None and (narrow[3] is None
                                    or MODES.index(wide[3]) <= MODES.index(narrow[3])):
            chosen = wide
            notes.append(f'dtype auto: {_name(wide[0])} (preferred on {device.type}) instead of '
                         f'the checkpoint\'s {_name(own)}: it fits in the same mode')
        else:
            chosen = narrow
            notes.append(f'dtype auto: the checkpoint\'s {_name(own)} ({_name(wide[0])} would '
                         + (f'need keep_sources={wide[3]}' if wide[3] else 'not fit') + ')')
    else:
        for r in results:
            if r[3] is not None:
                chosen = r
                break
        if want is None:
            if chosen is not None and chosen[0] != own:
                notes.append(f'dtype auto: {_name(chosen[0])}: the checkpoint\'s {_name(own)} '
                             'does not fit')
            else:
                notes.append(f'dtype auto: the checkpoint\'s {_name(own)}')
    if chosen is None:
        dt, s, needs, _ = results[-1] if want is None else results[0]
        plan = MemoryPlan(keep_sources if keep_sources != 'auto' else 'disk', dt, device, s,
                          needs, host, dev, model_allocated, notes)
        fitting = [n.mode for n in needs if n.fits]
        if keep_sources != 'auto':
            n = plan.need(keep_sources)
            msg = (f'keep_sources={keep_sources} does not fit: it needs {n.why}; '
                   + (f'modes that fit: {", ".join(fitting)} (use keep_sources=auto or '
                      f'{fitting[0]})' if fitting else 'no mode fits')
                   + f'. Plan: {plan.describe()}')
        else:
            msg = (f'the model does not fit in memory in any keep_sources mode; the smallest '
                   f'(disk) needs {plan.need("disk").why} ({plan.describe()})')
        if enforce:
            raise MemoryPlanError(msg)
        LOG.warning('memory plan: %s (not enforced)', msg)
        return plan
    dt, s, needs, mode = chosen
    plan = MemoryPlan(mode, dt, device, s, needs, host, dev, model_allocated, notes)
    LOG.info('memory plan: %s', plan.describe())
    return plan


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace('torch.', '')
