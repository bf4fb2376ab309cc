"""Content digests of checkpoint files, cached per (path, size, mtime_ns, inode).

Fingerprints of merged states name the inputs by content, not by path. Hashing 13 GB at every
start would cost a full extra read, so each file's digest is kept:

- in memory for the life of the process;
- on disk under ``$ROS_HOME/retain_ros/digests`` (``~/.ros`` when ``ROS_HOME`` is unset), one small
  JSON file per checkpoint file, keyed by its absolute path and checked against its size,
  ``mtime_ns``, inode and device (a rewritten file gets a new digest). When that directory is not
  writable the cache lives in memory only.

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

from retain_ros.merging.safetensors_io import file_identity

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
    name = hashlib.sha256(path.encode('utf-8')).hexdigest()[:32]
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


def hash_file(path: str) -> str:
    """BLAKE3 hex digest of a file's bytes (no cache)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, 'rb', buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def file_digest(path: str, use_disk_cache: bool = True) -> str:
    """Content digest of ``path``, from the cache when size, mtime_ns and inode are unchanged.

    :param path: file to hash.
    :param use_disk_cache: read and write the on-disk cache (in-memory cache always).
    """
    path = os.path.abspath(path)
    ident = file_identity(os.stat(path))
    key = (path, ident)
    with _LOCK:
        cached = _MEMORY.get(key)
    if cached is not None:
        return cached
    if use_disk_cache:
        cached = _load(path, ident)
    if cached is None:
        cached = hash_file(path)
        if file_identity(os.stat(path)) != ident:
            raise OSError(f'{path} changed while it was being hashed')
        if use_disk_cache:
            _store(path, ident, cached)
    else:
        LOG.debug('digest of %s from the cache', path)
    with _LOCK:
        _MEMORY[key] = cached
    return cached
