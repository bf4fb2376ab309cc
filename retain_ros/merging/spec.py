"""What to merge: recipe name and coefficients, validated once.

Alpha convention: ``theta = (1 - alpha) * theta_pre + alpha * theta_ft`` (alpha = weight on the
finetuned model). A per-group alpha of ``None`` (or -1 on the ROS side) follows ``alpha``.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
import math
from typing import Dict
from typing import Optional
from typing import Tuple

from retain_ros.merging.errors import SpecError

GROUPS: Tuple[str, ...] = ('vision', 'language', 'action', 'other')
RECIPES: Tuple[str, ...] = ('interpolate', 'sequential', 'task-arithmetic', 'capability')


@dataclass(frozen=True)
class MergeSpec:
    """A validated merge request.

    :param recipe: one of :data:`RECIPES`.
    :param alpha: weight on the finetuned model (interpolate / sequential), or the single lambda
        for task arithmetic / capability vectors when ``lambdas`` is empty.
    :param group_alpha: per-group override, ``{'vision': 1.0, 'language': 0.8}``; groups not named
        (or named with ``None``) follow ``alpha``. Applies to every recipe: the coefficient of a
        tensor is the one of its group.
    :param lambdas: task arithmetic only: one lambda per finetuned checkpoint (default: alpha).
    :param allow_extrapolation: permit coefficients outside [0, 1].
    """

    recipe: str = 'interpolate'
    alpha: float = 0.5
    group_alpha: Dict[str, Optional[float]] = field(default_factory=dict)
    lambdas: Tuple[float, ...] = ()
    allow_extrapolation: bool = False

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise SpecError(f'unknown recipe {self.recipe!r}; choose one of {", ".join(RECIPES)}')
        unknown = sorted(set(self.group_alpha) - set(GROUPS))
        if unknown:
            raise SpecError(f'unknown parameter group(s) {unknown}; groups are {list(GROUPS)}')
        self._check('alpha', self.alpha)
        for group, value in self.group_alpha.items():
            if value is not None:
                self._check(f'alpha_{group}', value)
        for i, value in enumerate(self.lambdas):
            self._check(f'lambda[{i}]', value)

    def _check(self, name: str, value: float) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f'{name} must be a finite number, got {value!r}')
        if not self.allow_extrapolation and not 0.0 <= value <= 1.0:
            raise SpecError(
                f'{name}={value} is outside [0, 1] (alpha is the weight on the FINETUNED model: '
                '0 = pretrained, 1 = finetuned); pass allow_extrapolation to go beyond')

    def alpha_for(self, group: str) -> float:
        """Coefficient used for tensors of ``group``."""
        value = self.group_alpha.get(group)
        return self.alpha if value is None else float(value)

    def alphas(self) -> Dict[str, float]:
        """Effective coefficient of every group."""
        return {g: self.alpha_for(g) for g in GROUPS}

    def with_alpha(self, alpha: Optional[float] = None, **group_alpha) -> 'MergeSpec':
        """Copy with a new alpha and/or per-group overrides (``vision=0.9``, ``language=None``)."""
        merged = dict(self.group_alpha)
        merged.update(group_alpha)
        return replace(self, alpha=self.alpha if alpha is None else alpha, group_alpha=merged)

    def describe(self) -> str:
        """One line for logs, naming the convention."""
        per = ', '.join(f'{g}={a:g}' for g, a in self.alphas().items())
        return f'recipe={self.recipe} alpha(weight on finetuned)={self.alpha:g} [{per}]'
