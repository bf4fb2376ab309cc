"""The module a live merge writes into: its tensors, and whether a checkpoint fits them."""
from __future__ import annotations

from typing import Dict
from typing import Tuple

import torch
from torch import nn

from retain_ros.merging.checkpoint_source import CheckpointSource
from retain_ros.merging.checkpoint_source import is_float
from retain_ros.merging.errors import KeyMismatchError
from retain_ros.merging.errors import MergeError
from retain_ros.merging.groups import assign_groups


def module_targets(module: nn.Module, prefix: str = '') -> Dict[str, torch.Tensor]:
    """Canonical name -> the module's tensor, written in place by the merge.

    Tied tensors (sharing storage, shape and strides) appear once, under their first name.

    :param prefix: prefix of the module's ``state_dict`` names to strip (e.g. ``'model.'``).
    :raises MergeError: a name lacks ``prefix``.
    """
    targets: Dict[str, torch.Tensor] = {}
    seen: Dict[Tuple[int, torch.dtype, Tuple[int, ...], Tuple[int, ...]], str] = {}
    for name, value in module.state_dict(keep_vars=True).items():
        if prefix:
            if not name.startswith(prefix):
                raise MergeError(f'module tensor {name!r} lacks the prefix {prefix!r}')
            name = name[len(prefix):]
        t = value.detach()
        ident = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and ident in seen:
            continue  # tied to an earlier name; written once through it
        seen[ident] = name
        targets[name] = t
    return targets


def check_fit(targets: Dict[str, torch.Tensor], pre: CheckpointSource,
              family: str = 'auto') -> Dict[str, str]:
    """Check that checkpoint ``pre`` holds exactly the module's tensors; return their groups.

    :param targets: :func:`module_targets` of the module.
    :param family: model family for the groups when the checkpoint's own is unknown.
    :return: canonical key -> parameter group.
    :raises KeyMismatchError: naming the first missing / extra tensors, or a tensor whose shape
        or dtype family (floating vs integer) differs.
    """
    ckpt = set(pre.keys())
    mod = set(targets)
    missing, extra = sorted(mod - ckpt), sorted(ckpt - mod)
    if missing or extra:
        raise KeyMismatchError(
            f'checkpoint {pre.path} ({pre.family}/{pre.dialect}) does not fit the module: '
            f'{len(missing)} module tensor(s) not in the checkpoint {missing[:5]}; '
            f'{len(extra)} checkpoint tensor(s) not in the module {extra[:5]}')
    for k, t in targets.items():
        if tuple(t.shape) != tuple(pre.shape(k)):
            raise KeyMismatchError(f'tensor {k!r}: module has shape {list(t.shape)}, '
                                   f'{pre.file_of(k)} has {list(pre.shape(k))}')
        if is_float(t.dtype) != is_float(pre.dtype(k)):
            raise KeyMismatchError(f'tensor {k!r}: module dtype {t.dtype} vs {pre.dtype(k)} '
                                   f'in {pre.file_of(k)}')
    family = pre.family if pre.family != 'unknown' else family
    return assign_groups(sorted(ckpt), family if family != 'unknown' else 'auto')
