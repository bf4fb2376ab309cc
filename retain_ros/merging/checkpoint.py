"""Open checkpoints lazily, in whatever layout and key dialect they come, under canonical names.

Accepted: a ``.safetensors`` file; a sharded checkpoint (``*.safetensors.index.json`` or a
directory holding one); a directory with ``model.safetensors`` (+ ``config.json``, processor and
normalization files: LeRobot / openpi / Hugging Face layouts); a PEFT LoRA adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``) applied as a delta to its base.
Pickle formats (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) are refused: loading them
executes code.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
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
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.safetensors_io import SafetensorsFile

LOG = logging.getLogger(__name__)

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')
_ADAPTER_FILES = ('adapter_config.json', 'adapter_model.safetensors')


def _refuse_pickle(path: str) -> None:
    raise CheckpointError(
        f'{path}: pickle checkpoints ({", ".join(PICKLE_SUFFIXES)}) are refused because loading '
        'them executes arbitrary code; convert to safetensors first (e.g. '
        'safetensors.torch.save_file(torch.load(p, weights_only=True), "model.safetensors"))')


def file_hash(path: str) -> str:
    """Content digest of a file (BLAKE3, cached per path, size, mtime_ns and inode)."""
    try:
        return file_digest(path)
    except OSError as exc:
        raise CheckpointError(f'{path}: cannot hash: {exc}') from exc


def weight_file_hash(f: SafetensorsFile) -> str:
    """Content digest of an opened weight file, hashed from the descriptor its tensors are read
    from, and only while that descriptor's ``fstat`` matches the identity recorded at open.

    :raises FileChangedError: the file is not the one opened any more (naming it).
    :raises CheckpointError: it cannot be read.
    """
    try:
        return file_digest(f.path, fd=f.descriptor(), identity=f.identity)
    except OSError as exc:
        raise CheckpointError(f'{f.path}: cannot hash: {exc}') from exc


def is_float(dtype: torch.dtype) -> bool:
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
        """Flat elements ``[start, start + count)`` of ``key`` (see
        :meth:`SafetensorsFile.read_range`)."""
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
        """:raises FileChangedError: a weight file was rewritten, truncated or replaced since it
        was opened (checked from size, mtime_ns and inode, without reading data)."""
        for f in self.weight_files():
            f.check_unchanged()

    def digest(self) -> str:
        """Content digest: BLAKE3 over the weight files' bytes (cached per file identity), read
        from the descriptors opened with the files (see :func:`weight_file_hash`)."""
        if self._digest is None:
            h = hashlib.sha256()
            for f in self.files:
                h.update(os.path.basename(f.path).encode())
                h.update(weight_file_hash(f).encode())
            self._digest = h.hexdigest()
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


class LoraSource(CheckpointSource):
    """A PEFT LoRA adapter seen as a full checkpoint: ``W = W_base + scale * B @ A``.

    Keys, dialect, layout and auxiliary files are the base's (adapter-directory files such as
    processor or normalization stats are added to the auxiliary files).
    """

    is_lora = True

    def __init__(self, adapter_dir: str, base: CheckpointSource):
        # pylint: disable=super-init-not-called
        self.path = os.path.abspath(adapter_dir)
        self.base = base
        cfg_path = os.path.join(self.path, 'adapter_config.json')
        try:
            with open(cfg_path, encoding='utf-8') as fh:
                self.adapter_config = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f'{cfg_path}: unreadable adapter config: {exc}') from exc
        weights = os.path.join(self.path, 'adapter_model.safetensors')
        if not os.path.isfile(weights):
            for name in os.listdir(self.path):
                if name.endswith(PICKLE_SUFFIXES):
                    _refuse_pickle(os.path.join(self.path, name))
            raise CheckpointError(f'{self.path}: LoRA adapter without adapter_model.safetensors')
        self.adapter = SafetensorsFile(weights)
        r = int(self.adapter_config.get('r', 8))
        lora_alpha = float(self.adapter_config.get('lora_alpha', r))
        if self.adapter_config.get('use_rslora'):
            self.scale = lora_alpha / math.sqrt(r)
        else:
            self.scale = lora_alpha / r
        self.fan_in_fan_out = bool(self.adapter_config.get('fan_in_fan_out', False))
        self.root, self.index_file, self.files = base.root, base.index_file, base.files
        self.config, self.family, self.dialect = base.config, base.family, base.dialect
        self.metadata = base.metadata
        self._to_file, self._dupes, self._keys = base._to_file, base._dupes, base._keys
        self._file_of = base._file_of
        self._digest = None
        self._lora: Dict[str, Tuple[str, str]] = {}
        self._replace: Dict[str, str] = {}
        self._map_adapter()

    def _resolve(self, name: str) -> str:
        base = self.base
        if name in base:
            return name
        try:
            return base.canonical_of(name)
        except CheckpointError:
            pass
        if name.startswith('model.') and name[len('model.'):] in base:
            return name[len('model.'):]
        raise CheckpointError(
            f'{self.adapter.path}: LoRA adapter targets {name!r}, which is not in the base '
            f'checkpoint {base.path}: the adapter was trained on a different base model')

    def _map_adapter(self) -> None:
        pairs: Dict[str, Dict[str, str]] = {}
        for k in self.adapter.keys():
            name = k[len('base_model.model.'):] if k.startswith('base_model.model.') else k
            for part in ('.lora_A.', '.lora_B.'):
                if part in name:
                    module = name.split(part)[0]
                    pairs.setdefault(module, {})[part.strip('.')] = k
                    break
            else:
                self._replace[self._resolve(name)] = k
        for module, ab in sorted(pairs.items()):
            if set(ab) != {'lora_A', 'lora_B'}:
                raise CheckpointError(f'{self.adapter.path}: module {module!r} has only '
                                      f'{sorted(ab)}; LoRA needs lora_A and lora_B')
            target = self._resolve(module + '.weight')
            a_shape = self.adapter.tensors[ab['lora_A']].shape
            b_shape = self.adapter.tensors[ab['lora_B']].shape
            out_shape = (b_shape[0], a_shape[1]) if len(a_shape) == 2 else None
            if self.fan_in_fan_out and out_shape:
                out_shape = (out_shape[1], out_shape[0])
            if out_shape != tuple(self.base.shape(target)):
                raise CheckpointError(
                    f'{self.adapter.path}: LoRA delta for {target!r} has shape {out_shape} but '
                    f'the base {self.base.path} stores {list(self.base.shape(target))}: the '
                    'adapter does not match this base')
            self._lora[target] = (ab['lora_A'], ab['lora_B'])
        for target, k in self._replace.items():
            if tuple(self.adapter.tensors[k].shape) != tuple(self.base.shape(target)):
                raise CheckpointError(f'{self.adapter.path}: tensor {k!r} has shape '
                                      f'{list(self.adapter.tensors[k].shape)}, base stores '
                                      f'{list(self.base.shape(target))}')
        if not self._lora and not self._replace:
            raise CheckpointError(f'{self.adapter.path}: adapter holds no LoRA tensors')

    def __repr__(self) -> str:
        return f'<LoraSource {self.path} on {self.base.path} ({len(self._lora)} LoRA modules)>'

    def file_of(self, key: str) -> str:
        if key in self._lora or key in self._replace:
            return self.adapter.path
        return self.base.file_of(key)

    def get(self, key: str, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
        return self._materialize(key, device, read=False)

    def read(self, key: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        t = self._materialize(key, 'cpu', read=True)
        if out is None:
            return t
        return out.copy_(t)

    def read_range(self, key: str, start: int, count: int,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if key not in self._lora and key not in self._replace:
            return self.base.read_range(key, start, count, out=out)
        part = self.read(key).reshape(-1)[start:start + count]  # materialized per call
        return part.clone() if out is None else out.copy_(part)

    def iter_chunks(self, key: str, chunk_elems: int) -> Iterator[torch.Tensor]:
        if key not in self._lora and key not in self._replace:
            yield from self.base.iter_chunks(key, chunk_elems)
            return
        flat = self.read(key).reshape(-1)
        for i in range(0, flat.numel(), max(1, chunk_elems)):
            yield flat[i:i + chunk_elems]

    def weight_files(self) -> List[SafetensorsFile]:
        return [self.adapter] + self.base.weight_files()

    def _materialize(self, key: str, device, read: bool) -> torch.Tensor:
        def fetch(f: SafetensorsFile, name: str) -> torch.Tensor:
            return f.read(name) if read else f.get(name)

        if key in self._replace:
            t = fetch(self.adapter, self._replace[key])
            return t.to(device=device, dtype=self.base.dtype(key))
        base = self.base.read(key) if read else self.base.get(key, device)
        if key not in self._lora:
            return base
        a_key, b_key = self._lora[key]
        a = fetch(self.adapter, a_key).to(device=device, dtype=torch.float32)
        b = fetch(self.adapter, b_key).to(device=device, dtype=torch.float32)
        delta = b @ a
        if self.fan_in_fan_out:
            delta = delta.T
        merged = base.to(torch.float32) + self.scale * delta
        return merged.to(base.dtype)

    def release(self, key: str) -> None:
        self.base.release(key)

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            h.update(b'lora')
            h.update(weight_file_hash(self.adapter).encode())
            h.update(json.dumps(self.adapter_config, sort_keys=True).encode())
            h.update(self.base.digest().encode())
            self._digest = h.hexdigest()
        return self._digest

    def aux_files(self) -> List[str]:
        """The base's auxiliary files plus the adapter directory's own (adapter files excluded)."""
        out = list(self.base.aux_files())
        for name in sorted(os.listdir(self.path)):
            p = os.path.join(self.path, name)
            if name in _ADAPTER_FILES or name.startswith('.') or not os.path.isfile(p):
                continue
            if name.endswith(PICKLE_SUFFIXES) or name == 'README.md':
                continue
            out.append(p)
        return out

    def aux_root(self, path: str) -> str:
        """Directory that ``path`` (one of :meth:`aux_files`) is relative to."""
        return self.path if os.path.dirname(path) == self.path else self.base.root

    def close(self) -> None:
        self.adapter.close()


def _find_index(directory: str) -> Optional[str]:
    names = sorted(n for n in os.listdir(directory) if n.endswith('.safetensors.index.json'))
    if 'model.safetensors.index.json' in names:
        return os.path.join(directory, 'model.safetensors.index.json')
    return os.path.join(directory, names[0]) if names else None


def _open_index(index: str, family: str) -> CheckpointSource:
    try:
        with open(index, encoding='utf-8') as fh:
            weight_map = json.load(fh)['weight_map']
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f'{index}: unreadable sharded-checkpoint index: {exc}') from exc
    directory = os.path.dirname(os.path.abspath(index))
    shards = []
    for name in weight_map.values():
        if name not in shards:
            shards.append(name)
    paths = [os.path.join(directory, s) for s in shards]
    for p in paths:
        if p.endswith(PICKLE_SUFFIXES):
            _refuse_pickle(p)
        if not os.path.isfile(p):
            raise CheckpointError(f'{index}: shard {os.path.basename(p)} is missing')
    src = CheckpointSource(index, paths, directory, index_file=index, family=family)
    listed = set(weight_map)
    stored = set(src._file_of)
    if listed != stored:
        diff = sorted(listed ^ stored)[:5]
        raise CheckpointError(f'{index}: index and shards disagree on tensors, e.g. {diff}')
    return src


def open_checkpoint(path: Union[str, os.PathLike], family: str = 'auto',
                    base: Union[None, str, CheckpointSource] = None) -> CheckpointSource:
    """Open a checkpoint lazily.

    :param path: ``.safetensors`` file, ``*.safetensors.index.json``, checkpoint directory or PEFT
        LoRA adapter directory.
    :param family: model family or ``'auto'`` (from config.json, else key names).
    :param base: LoRA only: the base checkpoint (path or source); default: the adapter config's
        ``base_model_name_or_path`` when it is a local path.
    :raises CheckpointError: missing, refused (pickle), truncated or corrupted checkpoint.
    """
    if isinstance(path, CheckpointSource):
        return path
    path = os.path.abspath(os.fspath(path))
    if path.endswith(PICKLE_SUFFIXES):
        _refuse_pickle(path)
    if not os.path.exists(path):
        raise CheckpointError(f'{path}: no such checkpoint')
    if os.path.isfile(path):
        if path.endswith('.index.json'):
            return _open_index(path, family)
        if path.endswith('.safetensors'):
            directory = os.path.dirname(path)
            root = directory if os.path.basename(path) == 'model.safetensors' else None
            return CheckpointSource(path, [path], root, family=family)
        raise CheckpointError(f'{path}: not a safetensors checkpoint (expected .safetensors, a '
                              '.safetensors.index.json or a checkpoint directory)')
    if os.path.isfile(os.path.join(path, 'adapter_config.json')):
        if base is None:
            with open(os.path.join(path, 'adapter_config.json'), encoding='utf-8') as fh:
                try:
                    base = json.load(fh).get('base_model_name_or_path')
                except ValueError as exc:
                    raise CheckpointError(f'{path}: unreadable adapter_config.json: '
                                          f'{exc}') from exc
            if base and not os.path.isabs(base):
                candidate = os.path.join(path, base)
                base = candidate if os.path.exists(candidate) else base
            if not base or not os.path.exists(base):
                raise CheckpointError(
                    f'{path}: LoRA adapter whose base {base!r} is not a local checkpoint; pass '
                    'the base explicitly (base=..., or as --pretrained)')
        return LoraSource(path, open_checkpoint(base, family=family))
    index = _find_index(path)
    if index:
        return _open_index(index, family)
    single = os.path.join(path, 'model.safetensors')
    if os.path.isfile(single):
        return CheckpointSource(single, [single], path, family=family)
    names = sorted(os.listdir(path))
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        _refuse_pickle(os.path.join(path, pickles[0]))
    weights = [n for n in names if n.endswith('.safetensors') and 'processor' not in n]
    if len(weights) == 1:
        p = os.path.join(path, weights[0])
        return CheckpointSource(p, [p], path, family=family)
    raise CheckpointError(f'{path}: no model.safetensors or *.safetensors.index.json here '
                          f'(found: {names[:10]})')
