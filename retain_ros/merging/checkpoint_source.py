"""A checkpoint opened lazily under canonical tensor names: :class:`CheckpointSource`.

One or several safetensors files (shards) are read through
:class:`~retain_ros.merging.safetensors_io.SafetensorsFile`; their stored key names are mapped to
the family's canonical names (:mod:`retain_ros.merging.dialects`). The content digest names the
checkpoint in fingerprints (:meth:`CheckpointSource.digest`). Opening by path (which layout,
which files) is :func:`retain_ros.merging.checkpoint.open_checkpoint`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Tuple
from typing import Union

import torch

from retain_ros.merging.dialects import canonical_map
from retain_ros.merging.dialects import detect_dialect
from retain_ros.merging.dialects import detect_family
from retain_ros.merging.digests import file_digest
from retain_ros.merging.digests import sha256_hex
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.safetensors_io import SafetensorsFile

LOG = logging.getLogger(__name__)

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')


def refuse_pickle(path: str) -> None:
    """Refuse a pickle checkpoint file.

    :raises CheckpointError: always, naming the file and how to convert it.
    """
    raise CheckpointError(
        f'{path}: pickle checkpoints ({", ".join(PICKLE_SUFFIXES)}) are refused because loading '
        'them executes arbitrary code; convert to safetensors first (e.g. '
        'safetensors.torch.save_file(torch.load(p, weights_only=True), "model.safetensors"))')


def weight_file_hash(f: SafetensorsFile) -> str:
    """Content digest of an opened weight file, from the descriptor its tensors are read from.

    Hashed only while that descriptor's ``fstat`` matches the identity recorded at open.

    :raises FileChangedError: the file is not the one opened any more (naming it).
    :raises CheckpointError: it cannot be read.
    """
    try:
        return file_digest(f.path, fd=f.descriptor(), identity=f.identity)
    except OSError as exc:
        raise CheckpointError(f'{f.path}: cannot hash: {exc}') from exc


def is_float(dtype: torch.dtype) -> bool:
    """Whether tensors of ``dtype`` are merged (floating or complex), not copied."""
    return dtype.is_floating_point or dtype.is_complex


class CheckpointSource:
    """A checkpoint opened lazily under canonical tensor names.

    :ivar path: what was opened (file, index json or directory).
    :ivar root: directory whose non-weight files travel with the checkpoint (None: a bare file).
    :ivar family: ``'pi0'``, ``'pi05'``, ``'smolvla'``, ``'openvla'`` or ``'unknown'``.
    :ivar dialect: ``'lerobot'``, ``'openpi'``, ``'transformers'``, ``'canonical'``, ``'plain'``.
    :ivar config: dict from ``config.json`` or None.
    :ivar metadata: safetensors ``__metadata__`` of the (first) weight file.
    """

    is_lora = False

    def __init__(self, path: str, weight_files: List[str], root: Optional[str],
                 index_file: Optional[str] = None, family: str = 'auto'):
        self.path = os.path.abspath(path)
        self.root = os.path.abspath(root) if root else None
        self.index_file = os.path.abspath(index_file) if index_file else None
        self.files = [SafetensorsFile(p) for p in weight_files]
        self.config = self._read_config()
        self._file_of: Dict[str, SafetensorsFile] = {}
        for f in self.files:
            for k in f.keys():
                if k in self._file_of:
                    raise CheckpointError(f'{f.path}: tensor {k!r} is also stored in '
                                          f'{self._file_of[k].path}')
                self._file_of[k] = f
        file_keys = list(self._file_of)
        self.family = detect_family(file_keys, self.config) if family == 'auto' else family
        self.dialect = detect_dialect(file_keys, self.family)
        self.metadata: Dict[str, str] = dict(self.files[0].metadata) if self.files else {}
        self._to_file: Dict[str, str] = {}
        self._dupes: Dict[str, List[str]] = {}  # canonical -> extra stored names (tied copies)
        for fk, ck in canonical_map(file_keys, self.family, self.dialect).items():
            if ck in self._to_file:
                self._dupes.setdefault(ck, []).append(fk)
            else:
                self._to_file[ck] = fk
        self._keys = sorted(self._to_file)
        self._digest: Optional[str] = None
        LOG.debug('opened %s: family=%s dialect=%s, %d tensors', self.path, self.family,
                  self.dialect, len(self._keys))

    def _read_config(self) -> Optional[dict]:
        if not self.root:
            return None
        cfg = os.path.join(self.root, 'config.json')
        if not os.path.isfile(cfg):
            return None
        try:
            with open(cfg, encoding='utf-8') as fh:
                value = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f'{cfg}: unreadable config.json: {exc}') from exc
        return value if isinstance(value, dict) else None

    def __repr__(self) -> str:
        return (f'<CheckpointSource {self.path} family={self.family} dialect={self.dialect} '
                f'tensors={len(self._keys)}>')

    # -- tensor access ---------------------------------------------------------------------------
    def keys(self) -> List[str]:
        """Sorted canonical tensor names."""
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._to_file

    def file_key(self, key: str) -> str:
        """Name under which canonical ``key`` is stored in this checkpoint's file."""
        try:
            return self._to_file[key]
        except KeyError:
            raise CheckpointError(f'{self.path}: no tensor {key!r}') from None

    def file_of(self, key: str) -> str:
        """Path of the file that stores canonical ``key``."""
        return self._file_of[self.file_key(key)].path

    def _info(self, key: str):
        fk = self.file_key(key)
        return self._file_of[fk].tensors[fk]

    def shape(self, key: str) -> Tuple[int, ...]:
        return self._info(key).shape

    def dtype(self, key: str) -> torch.dtype:
        return self._info(key).dtype

    def nbytes(self, key: str) -> int:
        return self._info(key).nbytes

    def get(self, key: str, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
        """Tensor ``key`` (a zero-copy view of the file mapping on CPU: do not write to it)."""
        fk = self.file_key(key)
        t = self._file_of[fk].get(fk)
        if torch.device(device).type != 'cpu':
            t = t.to(device)
        return t

    def read(self, key: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tensor ``key`` read into new (or the given contiguous CPU) memory, never a mapping.

        :raises CheckpointError: the file was truncated, rewritten or became unreadable.
        """
        fk = self.file_key(key)
        return self._file_of[fk].read(fk, out=out)

    def read_range(self, key: str, start: int, count: int,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Read flat elements ``[start, start + count)`` of ``key``.

        See :meth:`SafetensorsFile.read_range`.
        """
        fk = self.file_key(key)
        return self._file_of[fk].read_range(fk, start, count, out=out)

    def iter_chunks(self, key: str, chunk_elems: int) -> Iterator[torch.Tensor]:
        """Tensor ``key`` as flat chunks of at most ``chunk_elems`` elements (bounded memory)."""
        fk = self.file_key(key)
        return self._file_of[fk].iter_chunks(fk, chunk_elems)

    def release(self, key: str) -> None:
        """Drop the resident file pages of ``key`` (see :meth:`SafetensorsFile.release`)."""
        fk = self._to_file.get(key)
        if fk is not None:
            self._file_of[fk].release(fk)

    # -- identity and layout ---------------------------------------------------------------------
    def weight_files(self) -> List[SafetensorsFile]:
        """Every safetensors file this source reads."""
        return list(self.files)

    def check_unchanged(self) -> None:
        """Check that no weight file changed since it was opened (size, mtime_ns, inode).

        No data is read.

        :raises FileChangedError: a weight file was rewritten, truncated or replaced.
        """
        for f in self.weight_files():
            f.check_unchanged()

    def digest(self) -> str:
        """Return the content digest: SHA-256 over each weight file's name and BLAKE3 digest.

        The file digests are cached per file identity and read from the descriptors opened with
        the files (see :func:`weight_file_hash`).
        """
        if self._digest is None:
            parts = []
            for f in self.files:
                parts += [os.path.basename(f.path), weight_file_hash(f)]
            self._digest = sha256_hex(*parts)
        return self._digest

    def aux_files(self) -> List[str]:
        """Non-weight files (config, processor / normalization stats, tokenizer, assets)."""
        if not self.root:
            return []
        weights = {f.path for f in self.files}
        if self.index_file:
            weights.add(self.index_file)
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                if p in weights or name.startswith('.') or name.endswith(PICKLE_SUFFIXES):
                    continue
                if name.endswith('.safetensors.index.json'):
                    continue
                out.append(p)
        return out

    def layout(self) -> List[Tuple[str, Dict[str, str], List[str]]]:
        """``[(file name relative to root, metadata, [stored keys in file order]), ...]``."""
        out = []
        for f in self.files:
            rel = os.path.relpath(f.path, self.root) if self.root else os.path.basename(f.path)
            ordered = sorted(f.keys(), key=lambda k: f.tensors[k].start)
            out.append((rel, dict(f.metadata), ordered))
        return out

    def canonical_of(self, file_key: str) -> str:
        """Canonical name of a stored key (tied duplicates map to the same name)."""
        for ck, fk in self._to_file.items():
            if fk == file_key:
                return ck
        for ck, extra in self._dupes.items():
            if file_key in extra:
                return ck
        raise CheckpointError(f'{self.path}: no stored tensor {file_key!r}')

    def close(self) -> None:
        for f in self.files:
            f.close()
