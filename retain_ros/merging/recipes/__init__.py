"""Merge recipes: one module per method behind :class:`Recipe`, looked up with :func:`get`."""
from retain_ros.merging.recipes.base import Recipe
from retain_ros.merging.recipes.registry import get
from retain_ros.merging.recipes.registry import names

__all__ = ['Recipe', 'get', 'names']
