"""The one list of merge recipes by name; a recipe's module is imported when it is first used.

The names are known without importing torch (:func:`names`, used to validate a
:class:`~retain_ros.merging.spec.MergeSpec` and to list the choices of the CLI and the node's
``recipe`` parameter); :func:`get` imports the recipe's module and returns its instance.
"""
from __future__ import annotations

import importlib
import threading
from typing import Dict
from typing import List
from typing import Tuple

from retain_ros.merging.errors import SpecError

#: recipe name -> (module under ``retain_ros.merging.recipes``, class), in display order
_CLASSES: Dict[str, Tuple[str, str]] = {
    'interpolate': ('interpolate', 'Interpolate'),
    'sequential': ('sequential', 'Sequential'),
    'task-arithmetic': ('task_arithmetic', 'TaskArithmetic'),
    'capability': ('capability', 'CapabilityVector'),
}
_INSTANCES: Dict[str, object] = {}
_LOCK = threading.Lock()


def names() -> List[str]:
    """List the registered recipe names, in display order."""
    return list(_CLASSES)


def check_name(name: str) -> None:
    """Refuse a name that is not a recipe.

    :raises SpecError: unknown name (the message lists the valid ones).
    """
    if name not in _CLASSES:
        raise SpecError(f'unknown recipe {name!r}; choose one of {", ".join(_CLASSES)}')


def get(name: str):
    """Return the :class:`~retain_ros.merging.recipes.base.Recipe` called ``name``.

    :raises SpecError: unknown name (the message lists the valid ones).
    """
    check_name(name)
    with _LOCK:
        recipe = _INSTANCES.get(name)
        if recipe is None:
            module, cls = _CLASSES[name]
            module = importlib.import_module(f'retain_ros.merging.recipes.{module}')
            recipe = _INSTANCES[name] = getattr(module, cls)(name)
    return recipe
