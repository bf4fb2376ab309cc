"""Content digests of checkpoint files, cached per (path, size, mtime_ns, inode).

Fingerprints of merged states name the inputs by content, not by path. Hashing 13 GB at every
start would cost a full extra read, so each file's digest is kept:

- in memory for the life of the process;
- on disk under ``$ROS_HOME/retain_ros/digests`` (``~/.ros`` when ``ROS_HOME`` is unset), one small
  JSON file per checkpoint file, keyed by its absolute path and checked against its size,
  ``mtime_ns``, inode and device (a rewritten file gets a new digest). When that directory is not
  writable the cache lives in memory only.

The identity is read with ``fstat`` from the descriptor that is hashed (for a checkpoint, the
descriptor its tensors are read from, checked against the identity recorded when it was opened),
never from the path: a file renamed over the path in between cannot take the cached digest of the
file that was opened, nor lend it its own.

Files are hashed with BLAKE3 (the ``blake3`` package, the Rust implementation, several threads on
large inputs) in 16 MiB blocks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from typing import Dict
from typing import Optional
from typing import Tuple

import blake3

from retain_ros.merging.safetensors_io import describe_change
from retain_ros.merging.safetensors_io import file_identity
from retain_ros.merging.safetensors_io import FileChangedError

LOG = logging.getLogger(__name__)

ALGORITHM = 'blake3'
_BLOCK = 16 << 20
_MEMORY: Dict[Tuple[str, Tuple[int, int, int, int]], str] = {}
_LOCK = threading.Lock()


def cache_dir() -> str:
    """Where digests are kept: ``$ROS_HOME/retain_ros/digests`` (default ``~/.ros/...``)."""
    home = os.environ.get('ROS_HOME') or os.path.join(os.path.expanduser('~'), '.ros')
    return os.path.join(home, 'retain_ros', 'digests')


def _entry_path(path: str) -> str:
    name = sha256_hex(path)[:32]
    return os.path.join(cache_dir(), name + '.json')


def _load(path: str, ident: Tuple[int, int, int, int]) -> Optional[str]:
    try:
        with open(_entry_path(path), encoding='utf-8') as fh:
            entry = json.load(fh)
    except (OSError, ValueError):
        return None
    if (entry.get('path') == path and entry.get('algorithm') == ALGORITHM
            and tuple(entry.get('identity', ())) == ident):
        digest = entry.get('digest')
        return digest if isinstance(digest, str) else None
    return None


def _store(path: str, ident: Tuple[int, int, int, int], digest: str) -> None:
    dest = _entry_path(path)
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f'{dest}.tmp-{os.getpid()}-{threading.get_ident()}'
        with open(tmp, 'w', encoding='utf-8') as fh:
            json.dump({'path': path, 'identity': list(ident), 'algorithm': ALGORITHM,
                       'digest': digest}, fh)
        os.replace(tmp, dest)
    except OSError as exc:
        LOG.debug('digest cache not written (%s): %s', dest, exc)


def sha256_hex(*parts) -> str:
    """Full SHA-256 hex digest of ``parts`` one after the other (``bytes``, or ``str`` as UTF-8).

    The one SHA-256 rule of this package: :func:`short_sha256`, :func:`json_digest` and the
    checkpoint digests (over their files' BLAKE3 digests) are made with it.
    """
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode('utf-8') if isinstance(part, str) else part)
    return h.hexdigest()


def short_sha256(data) -> str:
    """First 16 hex digits of the SHA-256 of ``data`` (``bytes``, or ``str`` encoded as UTF-8).

    The one rule for short ids of settings and merged states (fingerprints, cache keys).
    """
    return sha256_hex(data)[:16]


def json_digest(payload) -> str:
    """:func:`short_sha256` of ``payload`` as JSON with sorted keys (default separators)."""
    return short_sha256(json.dumps(payload, sort_keys=True))


def file_sha256(path: str) -> str:
    """Full SHA-256 hex digest of a file's bytes (published artifacts; checkpoints use BLAKE3)."""
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def hash_fd(fd: int) -> str:
    """BLAKE3 hex digest of the bytes of an open file (read with ``pread``, no cache)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if not n:
            break
        h.update(view[:n])
        offset += n
    return h.hexdigest()


def hash_file(path: str) -> str:
    """BLAKE3 hex digest of a file's bytes (no cache)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


def file_digest(path: str, use_disk_cache: bool = True, fd: Optional[int] = None,
                identity: Optional[Tuple[int, int, int, int]] = None) -> str:
    """Content digest of a file, from the cache when its identity is unchanged.

    The identity (size, ``mtime_ns``, inode, device) is taken with ``fstat`` from the descriptor
    that is hashed, never from the path, so a file renamed over ``path`` between the check and
    the read cannot lend its digest (or its bytes) to another.

    :param path: the file (names the cache entry and the errors).
    :param use_disk_cache: read and write the on-disk cache (in-memory cache always).
    :param fd: an open descriptor of the file to hash (e.g. the one its data is read from);
        None: ``path`` is opened here.
    :param identity: the :func:`~retain_ros.merging.safetensors_io.file_identity` recorded when
        the file was opened; the descriptor must still match it.
    :raises FileChangedError: the descriptor does not match ``identity``, or the file changed
        while it was being hashed (both name the file).
    :raises OSError: the file cannot be opened or read.
    """
    path = os.path.abspath(path)
    if fd is None:
        own = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        try:
            return _digest_of(path, own, use_disk_cache, identity)
        finally:
            os.close(own)
    return _digest_of(path, fd, use_disk_cache, identity)


def _check(path: str, fd: int, expected: Tuple[int, int, int, int], what: str) -> None:
    now = file_identity(os.fstat(fd))
    if now != expected:
        raise FileChangedError(f'{path}: {what} ({describe_change(expected, now)}); its digest '
                               'is refused (re-open it to fingerprint the new contents)')


def _digest_of(path: str, fd: int, use_disk_cache: bool,
               identity: Optional[Tuple[int, int, int, int]]) -> str:
    ident = file_identity(os.fstat(fd))
    if identity is not None and tuple(identity) != ident:
        _check(path, fd, tuple(identity), 'not the file that was opened any more')
    key = (path, ident)
    with _LOCK:
        cached = _MEMORY.get(key)
    if cached is not None:
        return cached
    if use_disk_cache:
        cached = _load(path, ident)
    if cached is None:
        cached = hash_fd(fd)
        _check(path, fd, ident, 'changed while it was being hashed')
        if use_disk_cache:
            _store(path, ident, cached)
    else:
        LOG.debug('digest of %s from the cache', path)
    with _LOCK:
        _MEMORY[key] = cached
    return cached
