"""The recipe interface: one module per recipe, registered by name in :mod:`.registry`.

A recipe combines, tensor by tensor, the pretrained tensor and the finetuned tensors with the
coefficients of the tensor's group. Arithmetic runs in float32 (float64 when an input is float64);
the caller casts the result back to the tensor's own dtype.
"""
from __future__ import annotations

from abc import ABC
from abc import abstractmethod
from typing import Optional
from typing import Sequence
from typing import Tuple

import torch

from retain_ros.merging.errors import SpecError
from retain_ros.merging.spec import MergeSpec


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def as_compute(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in the compute dtype (no copy when it already is)."""
    return t if t.dtype == dtype else t.to(dtype)


class Recipe(ABC):
    """A merge method.

    Subclasses set :attr:`pretty_name`, :attr:`reference_url` and the number of finetuned
    checkpoints they take (:attr:`min_finetuned`, :attr:`max_finetuned`, None = unbounded), and
    implement :meth:`combine`. The registry (:mod:`.registry`) names each instance.

    :param name: the registered name (``'interpolate'``...).
    """

    pretty_name: str = ''
    reference_url: str = ''
    min_finetuned: int = 1
    max_finetuned: Optional[int] = 1
    #: combine() may write a bfloat16 / float16 ``out`` of the inputs' own dtype (exact
    #: float32-internal lerp) instead of producing a float32 result first
    lowp_out: bool = False

    def __init__(self, name: str):
        self.name = name

    def check(self, spec: MergeSpec, n_finetuned: int) -> None:
        """Validate the number of finetuned checkpoints and of lambdas.

        :raises SpecError: with the expected counts.
        """
        hi = self.max_finetuned
        if n_finetuned < self.min_finetuned or (hi is not None and n_finetuned > hi):
            want = (f'exactly {hi}' if hi == self.min_finetuned else
                    f'at least {self.min_finetuned}' if hi is None else
                    f'{self.min_finetuned} to {hi}')
            raise SpecError(f'recipe {self.name!r} takes {want} finetuned checkpoint(s), got '
                            f'{n_finetuned}')
        if spec.lambdas and len(spec.lambdas) != n_finetuned:
            raise SpecError(f'recipe {self.name!r}: {len(spec.lambdas)} lambdas for '
                            f'{n_finetuned} finetuned checkpoint(s)')

    def coefficients(self, spec: MergeSpec, group: str, n_finetuned: int) -> Tuple[float, ...]:
        """Coefficient per finetuned checkpoint for tensors of ``group``.

        A per-group override applies to every finetuned checkpoint; otherwise ``lambdas`` when
        given, else ``alpha`` for each.
        """
        override = spec.group_alpha.get(group)
        if override is not None:
            return (float(override),) * n_finetuned
        if spec.lambdas:
            return tuple(float(x) for x in spec.lambdas)
        return (float(spec.alpha),) * n_finetuned

    def is_convex(self, coefs: Sequence[float]) -> bool:
        """Tell whether the result is a convex combination of the inputs (finite by design)."""
        return False

    @abstractmethod
    def combine(self, pre: torch.Tensor, finetuned: Sequence[torch.Tensor],
                coefs: Sequence[float], out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the merged tensor in the compute dtype, or written into ``out`` (float32).

        :param pre: pretrained tensor (any float dtype).
        :param finetuned: finetuned tensors, same shape.
        :param coefs: one coefficient per finetuned tensor.
        :param out: optional float32 destination of the same shape.
        """
