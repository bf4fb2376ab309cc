"""A PEFT LoRA adapter seen as a full checkpoint: :class:`LoraSource`."""
from __future__ import annotations

import json
import math
import os
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Tuple
from typing import Union

import torch

from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import PICKLE_SUFFIXES
from retain_ros.merging.checkpoint_source import refuse_pickle
from retain_ros.merging.checkpoint_source import weight_file_hash
from retain_ros.merging.digests import sha256_hex
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.safetensors_io import SafetensorsFile

_ADAPTER_FILES = ('adapter_config.json', 'adapter_model.safetensors')


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
                    refuse_pickle(os.path.join(self.path, name))
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
            self._digest = sha256_hex(b'lora', weight_file_hash(self.adapter),
                                      json.dumps(self.adapter_config, sort_keys=True),
                                      self.base.digest())
        return self._digest

    def aux_files(self) -> List[str]:
        """Return the base's auxiliary files plus the adapter directory's own (not the adapter)."""
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
