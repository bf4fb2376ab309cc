"""Streaming safetensors writer: the header is laid out first, then tensors one by one.

Memory stays near one tensor (or one flat piece of it) whatever the checkpoint's size.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Tuple

import torch

from retain_ros.merging.safetensors_io import DTYPE_NAMES


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """Raw little-endian bytes of a CPU tensor (contiguous copy only when needed)."""
    t = tensor.detach()
    if t.device.type != 'cpu':
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b'')
    return memoryview(t.view(torch.uint8).numpy())


class StreamingWriter:
    """Write one safetensors file whose layout is known up front, one tensor at a time.

    :param path: output file (the caller renames it into place).
    :param layout: ``[(name, dtype, shape), ...]`` in file order.
    :param metadata: ``__metadata__`` strings.
    :param fsync: force the data to disk on close (durable across power loss, slower).
    """

    def __init__(self, path: str, layout: Iterable[Tuple[str, torch.dtype, Tuple[int, ...]]],
                 metadata: Optional[Dict[str, str]] = None, fsync: bool = False):
        self.path = path
        self.fsync = fsync
        header: Dict[str, object] = {}
        if metadata:
            header['__metadata__'] = dict(metadata)
        offset = 0
        self._expect: List[Tuple[str, torch.dtype, Tuple[int, ...], int]] = []
        for name, dtype, shape in layout:
            numel = 1
            for s in shape:
                numel *= s
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            header[name] = {'dtype': DTYPE_NAMES[dtype], 'shape': list(shape),
                            'data_offsets': [offset, offset + nbytes]}
            self._expect.append((name, dtype, tuple(shape), nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(',', ':')).encode('utf-8')
        raw += b' ' * ((8 - len(raw) % 8) % 8)
        self._fh = open(path, 'wb')
        self._fh.write(struct.pack('<Q', len(raw)))
        self._fh.write(raw)
        self._next = 0
        self._part_bytes = 0
        self.total_bytes = offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor; it must be the one the layout names next."""
        exp_name, dtype, shape, _ = self._expect[self._next]
        if name != exp_name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f'{self.path}: writer expected {exp_name!r} {dtype} {list(shape)}, '
                             f'got {name!r} {tensor.dtype} {list(tensor.shape)}')
        self._fh.write(tensor_bytes(tensor))
        self._next += 1

    def write_part(self, name: str, part: torch.Tensor) -> None:
        """Append the next flat piece of tensor ``name`` (finish it with :meth:`end_tensor`)."""
        exp_name, dtype, _, nbytes = self._expect[self._next]
        if name != exp_name or part.dtype != dtype:
            raise ValueError(f'{self.path}: writer expected {exp_name!r} {dtype}, got {name!r} '
                             f'{part.dtype}')
        data = tensor_bytes(part)
        self._part_bytes += data.nbytes
        if self._part_bytes > nbytes:
            raise ValueError(f'{self.path}: too many bytes for tensor {name!r}')
        self._fh.write(data)

    def end_tensor(self, name: str) -> None:
        """Check that tensor ``name`` was written completely and move to the next one."""
        exp_name, _, _, nbytes = self._expect[self._next]
        if name != exp_name or self._part_bytes != nbytes:
            raise ValueError(f'{self.path}: tensor {exp_name!r} got {self._part_bytes} of '
                             f'{nbytes} bytes')
        self._part_bytes = 0
        self._next += 1

    def close(self) -> None:
        """Flush and close; raises if tensors are missing."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())
        fh.close()
        if self._next != len(self._expect):
            raise ValueError(f'{self.path}: only {self._next} of {len(self._expect)} tensors '
                             'were written')

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
