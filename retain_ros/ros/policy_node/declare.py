"""Declaring the parameter table (:data:`~.params.PARAMS`) on the node, and reading it back.

A startup value that does not fit its descriptor (wrong type, out of range) is a
:class:`~.config.ConfigError` in one line: ``'<name>=<value>: <problem>, expected <allowed>'``.
"""
from __future__ import annotations

from typing import Any
from typing import Dict

from rclpy.exceptions import ParameterException
from rclpy.parameter import Parameter

from retain_ros.ros.policy_node.config import ConfigError
from retain_ros.ros.policy_node.params import PARAMS
from retain_ros.ros.policy_node.params import ParamSpec
from retain_ros.ros.policy_node.params import TYPE_WORDS

_ARRAYS = (Parameter.Type.STRING_ARRAY, Parameter.Type.DOUBLE_ARRAY)


def declare_all(node) -> None:
    """Declare every parameter of :data:`PARAMS` on ``node`` with its descriptor.

    Empty array defaults cannot be typed by rclpy from the value itself, so those parameters are
    declared by type and, when no override was given, set to the empty array before the
    descriptor (possibly read-only) is installed.

    :raises ConfigError: when a value given on the command line or in a parameter file does not
        fit its descriptor (wrong type, out of range), naming the parameter, the value and what
        is allowed (rclpy raises ``ParameterException`` subclasses, ``TypeError`` or
        ``ValueError`` for those, depending on its version).
    """
    for spec in PARAMS:
        try:
            _declare(node, spec)
        except (ParameterException, TypeError, ValueError) as exc:
            raise ConfigError(declare_error(spec, _override(node, spec), exc)) from None


def _declare(node, spec: ParamSpec) -> None:
    empty_array = isinstance(spec.default, list) and not spec.default
    if not empty_array:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())
        return
    writable = spec.descriptor()
    writable.read_only = False
    node.declare_parameter(spec.name, spec.type, writable)
    if node.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:
        node.set_parameters([Parameter(spec.name, spec.type, [])])
    node.set_descriptor(spec.name, spec.descriptor())


_NO_VALUE = object()


def _override(node, spec: ParamSpec) -> Any:
    """Return the value given for ``spec`` at startup (``-p``, ``--params-file``) or ``_NO_VALUE``.

    rclpy keeps the startup values in ``Node._parameter_overrides`` (rclpy 7 and 9 alike); there
    is no public accessor before the parameter is declared.
    """
    given = getattr(node, '_parameter_overrides', {}).get(spec.name)
    return _NO_VALUE if given is None else given.value


def declare_error(spec: ParamSpec, value: Any, exc: BaseException) -> str:
    """Return one line on why ``value`` cannot be the startup value of ``spec``.

    ``'<name>=<value>: <problem>, expected <type and range>'``, e.g. ``alpha=1.7: out of range,
    expected a double in [0, 1]`` or ``alpha='abc': a string, expected a double in [0, 1]``.

    :param spec: the parameter.
    :param value: the value given at startup (``_NO_VALUE`` when unknown).
    :param exc: what rclpy raised; its message is the problem when neither type nor range is.
    """
    if value is _NO_VALUE:
        value = spec.default
    shown = repr(value) if isinstance(value, str) else str(
        list(value) if isinstance(value, (list, tuple)) else value)
    try:
        given_type = Parameter.Type.from_parameter_value(value)
    except TypeError:
        given_type = None
    if given_type is not None and given_type != spec.type:
        problem = TYPE_WORDS.get(given_type, given_type.name.lower())
    elif given_type is not None and not spec.in_range(value):
        problem = 'out of range'
    else:
        problem = ' '.join(str(exc).split()) or type(exc).__name__
    return f'{spec.name}={shown}: {problem}, expected {spec.allowed()}'


def read_all(node) -> Dict[str, Any]:
    """Return every parameter's current value as plain Python values (lists, not arrays)."""
    out: Dict[str, Any] = {}
    for spec in PARAMS:
        value = node.get_parameter(spec.name).value
        out[spec.name] = list(value) if spec.type in _ARRAYS else value
    return out
