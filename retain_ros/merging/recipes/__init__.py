"""Merge recipes: one module per method behind :class:`.base.Recipe`, looked up with :func:`get`.

Importing this package does not import torch: :func:`names` lists the recipes without loading
them, :func:`get` loads one.
"""
from retain_ros.merging.recipes.registry import get
from retain_ros.merging.recipes.registry import names

__all__ = ['get', 'names']
