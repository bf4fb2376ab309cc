"""Open checkpoints lazily, in whatever layout and key dialect they come, under canonical names.

Accepted: a ``.safetensors`` file; a sharded checkpoint (``*.safetensors.index.json`` or a
directory holding one); a directory with ``model.safetensors`` (+ ``config.json``, processor and
normalization files: LeRobot / openpi / Hugging Face layouts); a PEFT LoRA adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``) applied as a delta to its base
(:class:`~retain_ros.merging.lora_source.LoraSource`). Pickle formats (``.bin``, ``.pt``,
``.pth``, ``.ckpt``, ``.pkl``) are refused: loading them executes code.
"""
from __future__ import annotations

import json
import os
from typing import Optional
from typing import Union

from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import PICKLE_SUFFIXES
from retain_ros.merging.checkpoint_source import refuse_pickle
from retain_ros.merging.errors import CheckpointError
from retain_ros.merging.lora_source import LoraSource


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
            refuse_pickle(p)
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
        refuse_pickle(path)
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
        refuse_pickle(os.path.join(path, pickles[0]))
    weights = [n for n in names if n.endswith('.safetensors') and 'processor' not in n]
    if len(weights) == 1:
        p = os.path.join(path, weights[0])
        return CheckpointSource(p, [p], path, family=family)
    raise CheckpointError(f'{path}: no model.safetensors or *.safetensors.index.json here '
                          f'(found: {names[:10]})')
