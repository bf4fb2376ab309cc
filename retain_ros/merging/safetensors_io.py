"""Minimal safetensors reader (the writer is :mod:`retain_ros.merging.safetensors_writer`).

The reader parses the header itself and checks it against the file size, so a truncated or
corrupted file is caught with a message that names the file and the tensor. Tensors are read with
``pread`` into memory the caller owns (:meth:`SafetensorsFile.read`, :meth:`read_range`): a file
truncated or rewritten while it is open makes a read raise :class:`CheckpointError`, never a
``SIGBUS`` as a memory mapping would, and resident memory stays at what the caller keeps (file
pages sit in the page cache, not in the process). :meth:`SafetensorsFile.get` still gives a
zero-copy view of a mapping for callers that want one (size checked before every view).
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import threading
import weakref
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Tuple

import torch

from retain_ros.merging.errors import CheckpointError

LOG = logging.getLogger(__name__)

DTYPES: Dict[str, torch.dtype] = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
    'U8': torch.uint8, 'BOOL': torch.bool,
}
for _name, _attr in (('F8_E4M3', 'float8_e4m3fn'), ('F8_E5M2', 'float8_e5m2'),
                     ('U16', 'uint16'), ('U32', 'uint32'), ('U64', 'uint64')):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES: Dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

_MAX_HEADER = 512 * 1024 * 1024
_READ_BLOCK = 64 << 20


class FileChangedError(CheckpointError):
    """A checkpoint file was rewritten, truncated or replaced after it was opened."""


def file_identity(st: os.stat_result) -> Tuple[int, int, int, int]:
    """``(size, mtime_ns, inode, device)``: what tells a rewritten file from the one opened."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def describe_change(before: Tuple[int, int, int, int], now: Tuple[int, int, int, int]) -> str:
    """Say what differs between two :func:`file_identity` values, in words."""
    return (f'size {before[0]} -> {now[0]} bytes, mtime_ns {before[1]} -> {now[1]}, inode '
            f'{before[2]} -> {now[2]}, device {before[3]} -> {now[3]}')


def _pread_all(fd: int, count: int, offset: int) -> bytes:
    parts = []
    while count > 0:
        chunk = os.pread(fd, min(count, _READ_BLOCK), offset)
        if not chunk:
            break
        parts.append(chunk)
        count -= len(chunk)
        offset += len(chunk)
    return b''.join(parts)


class TensorInfo:
    """Where one tensor lives in a safetensors file."""

    __slots__ = ('name', 'dtype', 'shape', 'start', 'end')

    def __init__(self, name: str, dtype: torch.dtype, shape: Tuple[int, ...], start: int,
                 end: int):
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.start = start
        self.end = end

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class SafetensorsFile:
    """A safetensors file opened lazily: header parsed and checked, data read on demand.

    The file's identity (:attr:`identity`: size, ``mtime_ns``, inode, device) is recorded from
    the descriptor opened here, which stays open until :meth:`close`: reads, the mapping and the
    content digest all use it, and data read from it is used only after its ``fstat`` still
    matches the identity (:meth:`check_descriptor`). A file renamed over the path later does not
    change what is read (and :meth:`check_unchanged` reports it); a rewrite in place is refused.

    :param path: the ``.safetensors`` file.
    :raises CheckpointError: missing, truncated or corrupted file (naming file and tensor).
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._mm: Optional[mmap.mmap] = None
        self._fd: Optional[int] = None
        self._closer: Optional[weakref.finalize] = None
        self._reopen_lock = threading.Lock()
        fd = self._open_path('cannot read checkpoint')
        try:
            self._parse_header(fd)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise CheckpointError(f'{self.path}: cannot read checkpoint: {exc}') from exc
            raise
        # the descriptor stays open: every later read, mapping and the content digest go through
        # it, so their data is the file whose identity was recorded here (an open file's inode
        # is never reused), whatever the path points at later
        self._attach(fd)

    def _open_path(self, what: str) -> int:
        """Open a read-only descriptor of ``self.path``.

        :raises CheckpointError: ``what`` failed.
        """
        try:
            return os.open(self.path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        except OSError as exc:
            raise CheckpointError(f'{self.path}: {what}: {exc}') from exc

    def _attach(self, fd: int) -> None:
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)

    def _detach(self) -> Optional[int]:
        fd, closer = self._fd, self._closer
        self._fd = self._closer = None
        if closer is not None:
            closer.detach()
        return fd

    def _parse_header(self, fd: int) -> None:
        st = os.fstat(fd)
        size = st.st_size
        raw = os.pread(fd, 8, 0)
        if len(raw) < 8:
            raise CheckpointError(
                f'{self.path}: truncated safetensors file ({size} bytes, no header)')
        (n,) = struct.unpack('<Q', raw)
        if n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(
                f'{self.path}: corrupted or truncated safetensors file (header claims '
                f'{n} bytes, file has {size})')
        header_bytes = _pread_all(fd, n, 8)
        try:
            header = json.loads(header_bytes.decode('utf-8'))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(
                f'{self.path}: corrupted safetensors header (not JSON): {exc}') from exc
        if not isinstance(header, dict):
            raise CheckpointError(f'{self.path}: corrupted safetensors header (not an object)')
        meta = header.pop('__metadata__', None) or {}
        self.metadata: Dict[str, str] = {str(k): str(v) for k, v in meta.items()}
        #: ``(size, mtime_ns, inode, device)`` of the descriptor opened here
        self.identity = file_identity(st)
        self.size = size
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.tensors: Dict[str, TensorInfo] = {}
        for name, entry in header.items():
            self.tensors[name] = self._parse_entry(name, entry, data_size)
        spans = sorted((t.start, t.end, t.name) for t in self.tensors.values() if t.nbytes)
        for (s0, e0, n0), (s1, _, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                raise CheckpointError(
                    f'{self.path}: corrupted safetensors header: tensors {n0!r} and {n1!r} '
                    'overlap')

    def _parse_entry(self, name: str, entry, data_size: int) -> TensorInfo:
        try:
            dtype = DTYPES[entry['dtype']]
            shape = tuple(int(s) for s in entry['shape'])
            start, end = (int(x) for x in entry['data_offsets'])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f'{self.path}: corrupted safetensors header entry for tensor {name!r}: '
                f'{entry!r}') from exc
        numel = 1
        for s in shape:
            if s < 0:
                raise CheckpointError(f'{self.path}: tensor {name!r} has a negative dimension')
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - start != numel * itemsize or start < 0:
            raise CheckpointError(
                f'{self.path}: corrupted safetensors header: tensor {name!r} shape {list(shape)} '
                f'{entry["dtype"]} needs {numel * itemsize} bytes, offsets give {end - start}')
        if end > data_size:
            raise CheckpointError(
                f'{self.path}: truncated file: tensor {name!r} needs bytes up to {end} of the '
                f'data section but only {data_size} are present')
        return TensorInfo(name, dtype, shape, start, end)

    def keys(self) -> List[str]:
        return list(self.tensors)

    # -- identity --------------------------------------------------------------------------------
    def changed(self) -> Optional[str]:
        """Why the file is no longer the one opened (None when it is unchanged).

        Compares size, ``mtime_ns``, inode and device of the open descriptor (a rewrite in place)
        and of the path (the file replaced by another one) with those seen at open time.
        """
        try:
            now = file_identity(os.fstat(self._fd)) if self._fd is not None else None
            at_path = file_identity(os.stat(self.path))
        except OSError as exc:
            return f'cannot stat it any more ({exc})'
        for what, ident in (('rewritten in place', now), ('replaced on disk', at_path)):
            if ident is not None and ident != self.identity:
                return f'{what} since it was opened ({describe_change(self.identity, ident)})'
        return None

    def check_descriptor(self, fd: int) -> None:
        """Check that descriptor ``fd`` is the file opened, unchanged (``fstat``, not the path).

        :raises FileChangedError: its size, ``mtime_ns``, inode or device differ from
            :attr:`identity`, naming the file.
        """
        try:
            now = file_identity(os.fstat(fd))
        except OSError as exc:
            raise CheckpointError(f'{self.path}: cannot fstat it: {exc}') from exc
        if now != self.identity:
            raise FileChangedError(
                f'{self.path}: not the file that was opened any more '
                f'({describe_change(self.identity, now)}); refusing data read from it (call '
                'reload() to re-open it and re-fingerprint the new contents)')

    def check_unchanged(self) -> None:
        """Check that the file is still the one opened (:meth:`changed`).

        :raises FileChangedError: the file was rewritten, truncated or replaced.
        """
        why = self.changed()
        if why is not None:
            raise FileChangedError(
                f'{self.path}: {why}; refusing to read it as the same checkpoint (call reload() '
                'to re-open it and re-fingerprint the new contents)')

    # -- reading ---------------------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise CheckpointError(f'{self.path}: no tensor named {name!r}')
        return info

    def descriptor(self) -> int:
        """Return the open descriptor of the file.

        After :meth:`close` it is re-opened by path, then checked against :attr:`identity` with
        ``fstat``.

        :raises FileChangedError: the path now names another file, or the file changed.
        """
        fd = self._fd
        if fd is not None:
            return fd
        with self._reopen_lock:
            if self._fd is None:
                fd = self._open_path('cannot open')
                try:
                    self.check_descriptor(fd)
                except BaseException:
                    os.close(fd)
                    raise
                self._attach(fd)
            return self._fd

    def _pread_into(self, buf: memoryview, offset: int, name: str) -> None:
        fd = self.descriptor()
        done = 0
        total = buf.nbytes
        while done < total:
            step = min(_READ_BLOCK, total - done)
            try:
                got = os.preadv(fd, [buf[done:done + step]], offset + done)
            except OSError as exc:
                raise CheckpointError(f'{self.path}: reading tensor {name!r} failed: '
                                      f'{exc}') from exc
            if got <= 0:
                raise FileChangedError(
                    f'{self.path}: truncated while open: tensor {name!r} needs bytes up to '
                    f'{offset + total} but the file ends at {offset + done} (now '
                    f'{os.fstat(fd).st_size} bytes)')
            done += got
        self.check_descriptor(fd)  # the bytes are the opened file's, unchanged while read

    def read(self, name: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tensor ``name`` read into ``out`` (a new CPU tensor by default) with ``pread``.

        :param out: contiguous CPU tensor of the same dtype and shape to read into (e.g. pinned).
        :raises CheckpointError: unknown tensor, or the file was truncated / became unreadable.
        """
        info = self.info(name)
        if out is None:
            out = torch.empty(info.shape, dtype=info.dtype)
        elif (out.dtype != info.dtype or tuple(out.shape) != info.shape or out.is_cuda
              or not out.is_contiguous()):
            raise ValueError(f'{self.path}: cannot read {name!r} into {out.dtype} '
                             f'{list(out.shape)} on {out.device}')
        if info.nbytes:
            buf = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            self._pread_into(buf, self.data_start + info.start, name)
        return out

    def read_range(self, name: str, start: int, count: int,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Read elements ``[start, start + count)`` of tensor ``name`` (flat, row-major).

        :return: a 1-D CPU tensor (``out``, a contiguous tensor of ``count`` elements, when
            given).
        """
        info = self.info(name)
        item = torch.empty((), dtype=info.dtype).element_size()
        numel = info.nbytes // item
        if start < 0 or count < 0 or start + count > numel:
            raise ValueError(f'{self.path}: range {start}+{count} outside {name!r} ({numel})')
        if out is None:
            out = torch.empty(count, dtype=info.dtype)
        elif out.dtype != info.dtype or out.numel() != count or not out.is_contiguous():
            raise ValueError(f'{self.path}: cannot read {count} elements of {name!r} into '
                             f'{out.dtype} {list(out.shape)}')
        if count:
            buf = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            self._pread_into(buf, self.data_start + info.start + start * item, name)
        return out

    def iter_chunks(self, name: str, chunk_elems: int) -> Iterator[torch.Tensor]:
        """Tensor ``name`` as flat chunks of at most ``chunk_elems`` elements."""
        info = self.info(name)
        numel = 1
        for s in info.shape:
            numel *= s
        for i in range(0, numel, max(1, chunk_elems)):
            yield self.read_range(name, i, min(chunk_elems, numel - i))

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            fd = self.descriptor()  # the opened file, not whatever the path names now
            try:
                self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f'{self.path}: cannot map file: {exc}') from exc
        return self._mm

    def get(self, name: str) -> torch.Tensor:
        """Zero-copy CPU tensor backed by the file mapping (treat as read-only).

        The file's size is checked before the view is made (a file truncated under the mapping
        would raise ``SIGBUS`` on access); :meth:`read` is the path that can never fault.

        :raises CheckpointError: unknown tensor name, or the file changed since it was opened.
        """
        info = self.info(name)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        self.check_unchanged()
        mm = self._map()
        flat = torch.frombuffer(mm, dtype=torch.uint8, count=info.nbytes,
                                offset=self.data_start + info.start)
        return flat.view(info.dtype).view(info.shape)

    def release(self, name: str) -> None:
        """Drop the resident pages of tensor ``name`` (re-read from the file if used again)."""
        info = self.tensors.get(name)
        if self._mm is None or info is None or not hasattr(mmap, 'MADV_DONTNEED'):
            return
        start = self.data_start + info.start
        end = self.data_start + info.end
        start -= start % mmap.PAGESIZE
        end -= end % mmap.PAGESIZE  # keep a page shared with the next tensor
        if end > start:
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Drop the mapping (it stays alive while tensors still reference it) and the descriptor.

        A later read re-opens the file by path and refuses it unless it is still the file
        opened (:meth:`descriptor`).
        """
        mm, self._mm = self._mm, None
        fd = self._detach()
        if fd is not None:
            os.close(fd)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # tensors still view it; released with the last of them
