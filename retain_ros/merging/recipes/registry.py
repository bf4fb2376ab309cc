"""Explicit registry of merge recipes by name."""
from __future__ import annotations

from typing import Dict
from typing import List

from retain_ros.merging.errors import SpecError
from retain_ros.merging.recipes.base import Recipe
from retain_ros.merging.recipes.capability import CapabilityVector
from retain_ros.merging.recipes.interpolate import Interpolate
from retain_ros.merging.recipes.sequential import Sequential
from retain_ros.merging.recipes.task_arithmetic import TaskArithmetic

_ALL: List[Recipe] = [Interpolate(), Sequential(), TaskArithmetic(), CapabilityVector()]
REGISTRY: Dict[str, Recipe] = {r.name: r for r in _ALL}


def names() -> List[str]:
    """Registered recipe names."""
    return list(REGISTRY)


def get(name: str) -> Recipe:
    """The recipe called ``name``.

    :raises SpecError: unknown name (the message lists the valid ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise SpecError(f'unknown recipe {name!r}; choose one of {", ".join(REGISTRY)}') from None
