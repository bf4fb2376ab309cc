"""Where a model runs and in which dtype: the one rule behind ``device`` / ``dtype`` ``auto``.

- device: ``auto`` is ``cuda`` when CUDA is available, else ``cpu``; ``cpu``, ``cuda`` and
  ``cuda:N`` are checked to exist (:func:`resolve_device`).
- dtype: ``float32`` / ``fp32``, ``bfloat16`` / ``bf16``, ``float16`` / ``fp16`` are taken as
  given. ``auto`` keeps the checkpoint's own dtype and widens it to what the device computes well
  (:func:`preferred_dtype`) when that is wider; it never narrows (:func:`resolve_dtype`). A
  model without a checkpoint counts as float32.

The memory plan (:func:`retain_ros.merging.memory.plan_memory`) applies this rule with the free
memory in view: it widens only when the wider model fits in the same ``keep_sources`` mode, and
narrows to the preferred dtype only when the checkpoint's own dtype does not fit.
"""
from __future__ import annotations

import functools
import re
from typing import Dict
from typing import Optional
from typing import Union

import torch

#: dtype names accepted wherever a ``dtype`` is configured (``auto`` aside)
DTYPE_NAMES: Dict[str, torch.dtype] = {
    'float32': torch.float32, 'fp32': torch.float32, 'bfloat16': torch.bfloat16,
    'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16,
}

#: CPU feature flags (``/proc/cpuinfo``) of bfloat16 matrix instructions: x86 AVX512-BF16 and
#: AMX-BF16, Arm's BF16 extension (Graviton 3, Neoverse V1/V2; not Jetson Orin's Cortex-A78AE)
CPU_BF16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16', 'bf16'})

DeviceLike = Union[str, torch.device, None]
DtypeLike = Union[str, torch.dtype, None]


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = '/proc/cpuinfo') -> bool:
    """Tell whether this CPU multiplies bfloat16 matrices natively (see :data:`CPU_BF16_FLAGS`).

    Measured here (2-core AMD EPYC with avx512_bf16, torch 2.13): a 300x2048 @ 2048x16384 matmul
    runs at 154 GFLOPS in bfloat16 and 47 in float32; without the instructions bfloat16 is
    emulated and slower than float32.
    """
    try:
        with open(cpuinfo) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return False
    flags = set()
    for line in lines:
        if line.startswith(('flags', 'Features')) and ':' in line:
            flags.update(line.split(':', 1)[1].split())
    return bool(flags & CPU_BF16_FLAGS)


def preferred_dtype(device: torch.device) -> torch.dtype:
    """Return what ``device`` computes well.

    bfloat16 on a bf16-capable GPU or on a CPU with native bfloat16 matrix instructions,
    float32 otherwise.
    """
    if device.type == 'cuda':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def parse_dtype(dtype: DtypeLike) -> Optional[torch.dtype]:
    """Return the torch dtype named by ``dtype``, or ``None`` for ``auto`` / empty / ``None``.

    :param dtype: a name of :data:`DTYPE_NAMES`, ``auto``, or a torch dtype (returned as is).
    :raises ValueError: an unknown name.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).strip().lower()
    if name in ('', 'auto'):
        return None
    if name not in DTYPE_NAMES:
        raise ValueError(f'dtype must be auto, float32, bfloat16 or float16, got {dtype!r}')
    return DTYPE_NAMES[name]


def resolve_device(device: DeviceLike = 'auto') -> torch.device:
    """Return the torch device ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` names.

    :param device: the configured name (empty / ``None`` = ``auto``) or a torch device.
    :raises ValueError: another name, or a CUDA device that is not there.
    """
    name = str(device or 'auto').strip().lower()
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if not re.fullmatch(r'cpu|cuda(:\d+)?', name):
        raise ValueError(f'device must be auto, cpu, cuda or cuda:N, got {name!r}')
    dev = torch.device(name)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {name!r} requested but CUDA is not available')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {name!r}: only {torch.cuda.device_count()} CUDA device(s)')
    return dev


def itemsize(dtype: torch.dtype) -> int:
    """Return the bytes of one element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def dtype_name(dtype: torch.dtype) -> str:
    """Return the configuration name of a torch dtype (``torch.bfloat16`` -> ``bfloat16``)."""
    return str(dtype).replace('torch.', '')


def resolve_dtype(dtype: DtypeLike, device: torch.device,
                  checkpoint_dtype: torch.dtype = torch.float32) -> torch.dtype:
    """Return the model dtype that ``dtype`` names on ``device`` (the module docstring's rule).

    :param dtype: ``auto`` (or empty / ``None``), a name of :data:`DTYPE_NAMES` or a torch dtype.
    :param device: where the model runs.
    :param checkpoint_dtype: the checkpoint's own floating dtype (float32 when there is none).
    :return: the explicit dtype; for ``auto`` the wider of the checkpoint's dtype and
        :func:`preferred_dtype` (the checkpoint's on a tie).
    :raises ValueError: an unknown name.
    """
    want = parse_dtype(dtype)
    if want is not None:
        return want
    preferred = preferred_dtype(device)
    return preferred if itemsize(preferred) > itemsize(checkpoint_dtype) else checkpoint_dtype
