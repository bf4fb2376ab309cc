"""ROS 2 message definitions for MCAP schemas (``ros2msg``), read from the installed files.

rosbag2 stores, for every topic type, the ``.msg`` text of the type followed by the text of every
type it uses, each introduced by a line of 80 ``=`` and ``MSG: pkg/Type`` (the format the ``mcap``
and ``rosbags`` readers and ``ros2 bag play`` decode). The texts come from ``share/<pkg>/msg/``
of the ROS installation (any prefix on ``AMENT_PREFIX_PATH``; a ROS 2 install and the PyPI wheels
both ship them), so they match the distribution the node runs on; the type hash (``RIHS01_...``,
what rosbag2 writes as ``type_description_hash`` since Iron) comes from the ``.json`` type
description next to it. No ROS import: this module is pure Python.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from typing import List
from typing import Tuple

SEPARATOR = '=' * 80
PRIMITIVES = frozenset((
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16', 'int32',
    'uint32', 'int64', 'uint64', 'string', 'wstring'))
_FIELD = re.compile(r'^\s*([A-Za-z0-9_/]+)(?:<=\d+)?(?:\[[^\]]*\])?\s+([A-Za-z0-9_]+)')


class MessageDefinitionError(LookupError):
    """A message type whose definition files cannot be found."""


def split_type(msgtype: str) -> Tuple[str, str]:
    """``'sensor_msgs/msg/Image'`` (or ``'sensor_msgs/Image'``) -> ``('sensor_msgs', 'Image')``."""
    parts = msgtype.split('/')
    if len(parts) == 3 and parts[1] == 'msg':
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise MessageDefinitionError(
        f'message type {msgtype!r}: expected pkg/msg/Type (e.g. sensor_msgs/msg/Image)')


def _prefixes() -> List[str]:
    paths = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    for extra in (sys.prefix, '/opt/ros/' + os.environ.get('ROS_DISTRO', 'none')):
        if extra not in paths:
            paths.append(extra)
    return paths


def find_definition_file(msgtype: str, suffix: str = '.msg') -> str:
    """Path of ``share/<pkg>/msg/<Type><suffix>`` on the first prefix that has it.

    :raises MessageDefinitionError: when no prefix has it (the message names the prefixes).
    """
    pkg, name = split_type(msgtype)
    prefixes = _prefixes()
    for prefix in prefixes:
        path = os.path.join(prefix, 'share', pkg, 'msg', name + suffix)
        if os.path.isfile(path):
            return path
    raise MessageDefinitionError(
        f'no {pkg}/msg/{name}{suffix} under any of {prefixes} (share/{pkg}/msg/); is the '
        f'{pkg} package installed and AMENT_PREFIX_PATH set (source the ROS setup file)?')


def _dependencies(pkg: str, text: str) -> List[str]:
    deps = []
    for line in text.splitlines():
        line = line.split('#', 1)[0]
        match = _FIELD.match(line)
        if not match or match.group(1) in PRIMITIVES:
            continue        # not a field, or a primitive field / constant
        base = match.group(1)
        if base == 'Header':
            base = 'std_msgs/Header'
        deps.append(base if '/' in base else f'{pkg}/{base}')
    return deps


@functools.lru_cache(maxsize=None)
def message_definition(msgtype: str) -> str:
    """Return the ``ros2msg`` schema text of ``msgtype`` and every type it uses, as rosbag2 does.

    :param msgtype: ``'sensor_msgs/msg/Image'``.
    :raises MessageDefinitionError: when a definition file is missing.
    """
    pkg, name = split_type(msgtype)
    with open(find_definition_file(msgtype), encoding='utf-8') as handle:
        main = handle.read()
    parts = [main.rstrip('\n')]
    seen = {f'{pkg}/{name}'}
    queue = _dependencies(pkg, main)
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        dep_pkg, _ = split_type(dep)
        with open(find_definition_file(dep), encoding='utf-8') as handle:
            text = handle.read()
        parts.append(f'{SEPARATOR}\nMSG: {dep}\n{text.rstrip(chr(10))}')
        queue.extend(_dependencies(dep_pkg, text))
    return '\n'.join(parts) + '\n'


@functools.lru_cache(maxsize=None)
def type_hash(msgtype: str) -> str:
    """``RIHS01_...`` hash of ``msgtype`` from its ``.json`` type description; '' when absent.

    Humble ships no type descriptions (rosbag2 leaves the field empty there too).
    """
    pkg, name = split_type(msgtype)
    try:
        path = find_definition_file(msgtype, '.json')
    except MessageDefinitionError:
        return ''
    with open(path, encoding='utf-8') as handle:
        data = json.load(handle)
    full = f'{pkg}/msg/{name}'
    for entry in data.get('type_hashes', []):
        if entry.get('type_name') == full:
            return str(entry.get('hash_string', ''))
    return ''


def ros_type_name(msg_or_class) -> str:
    """``'sensor_msgs/msg/Image'`` for an rclpy message (or message class), from its module."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    module = cls.__module__.split('.')
    if len(module) < 2 or module[1] != 'msg':
        raise MessageDefinitionError(f'{cls!r} is not a ROS message class')
    return f'{module[0]}/msg/{cls.__name__}'
