"""Where a live merge reads its inputs: copies held in memory, or the files, piece by piece.

- ``keep_sources`` device / host: :func:`load_cache` reads every tensor of every source once
  (host: pinned CPU memory when CUDA is available) and refuses non-finite values;
- disk: nothing is held; every merge re-reads the tensors from the files into reusable buffers
  (:class:`PieceReader`), the next piece read on a thread while the current one is merged.

Tensors over :data:`CHUNK_ELEMS` elements are merged in flat chunks (:func:`pieces`), so the
transient memory is a few chunks, never a few copies of the largest tensor.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict
from typing import Iterator
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

import torch

from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import is_float
from retain_ros.merging.engine import all_finite
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.memory import CHUNK_ELEMS
from retain_ros.merging.progress import LIVE_DELAY_S
from retain_ros.merging.progress import tensor_bar

#: canonical key -> (pretrained tensor, [finetuned tensors]) held in memory; None in disk mode
Cache = Optional[Dict[str, Tuple[torch.Tensor, List[torch.Tensor]]]]
#: one work item: ``(key, start, count)``, ``start`` None for a whole tensor
Piece = Tuple[str, Optional[int], Optional[int]]


@dataclass(frozen=True)
class Reopened:
    """Checkpoint files opened (again) and checked against the module (``LiveMerger.reopen``).

    :param pre: pretrained source.
    :param fts: finetuned sources.
    :param groups: canonical key -> parameter group.
    """

    pre: CheckpointSource
    fts: List[CheckpointSource]
    groups: Dict[str, str]


@dataclass
class MergeInputs:
    """The inputs of a merge: the sources and their in-memory copies (None: disk mode)."""

    pre: CheckpointSource
    fts: List[CheckpointSource]
    cache: Cache

    @property
    def sources(self) -> List[CheckpointSource]:
        """``[pretrained, finetuned...]``."""
        return [self.pre] + self.fts


def load_cache(pre: CheckpointSource, fts: Sequence[CheckpointSource], keys: Sequence[str],
               mode: str, device: torch.device) -> Cache:
    """Read every input tensor into memory for ``mode`` device / host (None for disk).

    :raises CheckpointError: a tensor holds nan / inf (naming it and its file).
    """
    if mode == 'disk':
        return None
    if mode == 'device':
        where = device
        pin = False
    else:
        where = torch.device('cpu')
        pin = torch.cuda.is_available()
    cache: Dict[str, Tuple[torch.Tensor, List[torch.Tensor]]] = {}
    with tensor_bar(len(keys), f'load sources ({mode})', delay=LIVE_DELAY_S) as bar:
        for k in keys:
            tensors = []
            for src in [pre] + list(fts):
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
            bar.update(1)
    return cache


def pieces(targets: Mapping[str, torch.Tensor], keys: Sequence[str],
           whole: bool = False) -> Iterator[Piece]:
    """List the merge's work items, in order.

    Tensors over :data:`CHUNK_ELEMS` elements are cut in flat chunks unless ``whole`` (a LoRA
    source materializes the whole tensor per read: cutting it would rebuild it once per chunk;
    the memory plan budgets the whole tensor then).
    """
    for key in keys:
        target = targets[key]
        n = target.numel()
        if (not whole and n > CHUNK_ELEMS and target.is_contiguous()
                and is_float(target.dtype)):
            for i in range(0, n, CHUNK_ELEMS):
                yield key, i, min(CHUNK_ELEMS, n - i)
        else:
            yield key, None, None


def _cached_parts(inputs: MergeInputs, key: str, start: Optional[int],
                  count: Optional[int]) -> List[torch.Tensor]:
    pre_t, ft_ts = inputs.cache[key]
    if start is None:
        return [pre_t] + list(ft_ts)
    return [t.reshape(-1)[start:start + count] for t in [pre_t] + list(ft_ts)]


class PieceReader:
    """Reads a merge's inputs piece by piece, from the in-memory copies or from the files.

    From the files (disk mode) the pieces are read into two sets of reusable buffers (no fresh
    allocation and page faults per tensor), pinned when the model is on CUDA.

    :param device: the model's device.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._buffers: Dict[Tuple[int, int], torch.Tensor] = {}

    def parts(self, inputs: MergeInputs, targets: Mapping[str, torch.Tensor],
              keys: Sequence[str]) -> Iterator[Tuple[str, Optional[int], Optional[int],
                                                     List[torch.Tensor]]]:
        """``(key, start, count, [pre, ft...])`` for every piece of ``keys``, in order.

        Close the iterator when a merge stops early: that waits for the read in flight.
        """
        if inputs.cache is not None:
            return ((key, start, count, _cached_parts(inputs, key, start, count))
                    for key, start, count in pieces(targets, keys))
        lora = any(s.is_lora for s in inputs.sources)
        return self._prefetched(inputs, pieces(targets, keys, whole=lora))

    def _scratch(self, i: int, src: CheckpointSource, dtype: torch.dtype,
                 numel: int, slot: int = 0) -> torch.Tensor:
        """Reusable read buffer of source ``i`` in set ``slot``, viewed as ``numel`` ``dtype``."""
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

    def _read(self, inputs: MergeInputs, key: str, start: Optional[int] = None,
              count: Optional[int] = None, slot: int = 0) -> List[torch.Tensor]:
        """Read the inputs of ``key`` (or of its flat range) from the files into set ``slot``.

        A LoRA source is materialized whole per call (then sliced).
        """
        out = []
        for i, s in enumerate(inputs.sources):
            if s.is_lora:
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

    def _prefetched(self, inputs: MergeInputs, work: Iterator[Piece]) -> Iterator[tuple]:
        """Disk mode: the pieces with their inputs, each read while the previous one is merged.

        Two buffer sets, alternating: a one-thread pool reads piece ``i + 1`` into set
        ``(i + 1) % 2`` (``pread`` releases the GIL) while the caller merges piece ``i`` from the
        other, so a pass costs about max(read, compute). Closing the generator (a failed merge)
        waits for the read in flight, so a restore never races it for the buffers.
        """
        work = list(work)
        with ThreadPoolExecutor(1, thread_name_prefix='retain-merge-read') as pool:
            ahead = pool.submit(self._read, inputs, *work[0], 0) if work else None
            for i, (key, start, count) in enumerate(work):
                parts = ahead.result()
                if i + 1 < len(work):
                    ahead = pool.submit(self._read, inputs, *work[i + 1], (i + 1) % 2)
                yield key, start, count, parts
