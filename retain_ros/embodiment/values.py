"""Typed, path-aware reads of one YAML mapping (every error names the file and the field)."""
from __future__ import annotations

import math
from typing import Any
from typing import Iterator
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.embodiment.errors import fail

_MISSING = object()


class Fields:
    """A YAML mapping at ``path`` in ``source``, with checked accessors.

    :param data: the mapping.
    :param path: its field path (``actions[0]``; ``''`` for the document).
    :param source: the file name.
    :param required: keys that must be present.
    :param optional: other keys allowed.
    """

    def __init__(self, data: Any, path: str, source: str, required: Sequence[str] = (),
                 optional: Sequence[str] = ()):
        if not isinstance(data, dict):
            raise fail(source, path, f'must be a mapping, got {data!r}')
        self.data = data
        self.path = path
        self.source = source
        self.check_keys(required, optional)

    def at(self, key: str) -> str:
        """Return the field path of ``key``."""
        return f'{self.path}.{key}' if self.path else key

    def error(self, key: str, message: str):
        """Build an error about ``key`` (returned; the caller raises it)."""
        return fail(self.source, self.at(key), message)

    def check_keys(self, required: Sequence[str] = (), optional: Sequence[str] = (),
                   context: str = '') -> None:
        """Refuse unknown keys and report the first missing required key."""
        allowed = set(required) | set(optional)
        if allowed:
            for key in self.data:
                if key not in allowed:
                    where = f' for {context}' if context else ''
                    raise self.error(str(key), f'unknown field{where} (allowed: '
                                     f'{", ".join(sorted(allowed))})')
        for key in required:
            if self.data.get(key) is None:
                raise self.error(key, 'missing (required)')

    def raw(self, key: str) -> Any:
        """Return the value of ``key`` or None."""
        return self.data.get(key)

    def string(self, key: str, default: Any = _MISSING) -> str:
        """Read a non-empty string, or ``default`` when absent."""
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, 'missing (required)')
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f'must be a non-empty string, got {value!r}')
        return value

    def choice(self, key: str, options: Sequence[str], default: Any = _MISSING) -> str:
        """Read one of ``options``."""
        value = self.data.get(key)
        if value is None and default is not _MISSING:
            return default
        if value is None:
            raise self.error(key, 'missing (required)')
        if value not in options:
            noun = 'kind' if key == 'kind' else 'value'
            raise self.error(key, f'unknown {noun} {value!r} (use one of {", ".join(options)})')
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """Read ``true`` / ``false``."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f'must be true or false, got {value!r}')
        return value

    def number(self, key: str, default: Any = _MISSING, positive: bool = False,
               non_negative: bool = False) -> Optional[float]:
        """Read a finite number; ``positive``: > 0, ``non_negative``: >= 0."""
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, 'missing (required)')
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise self.error(key, f'must be a finite number, got {value!r}')
        if positive and value <= 0:
            raise self.error(key, f'must be > 0, got {value!r}')
        if non_negative and value < 0:
            raise self.error(key, f'must be >= 0, got {value!r}')
        return float(value)

    def numbers(self, key: str) -> Tuple[float, ...]:
        """Read a list of finite numbers; ``()`` when absent."""
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value):
            raise self.error(key, f'must be a list of finite numbers, got {value!r}')
        return tuple(float(v) for v in value)

    def interval(self, key: str, default: Any = None, ordered: bool = True,
                 required: bool = False) -> Optional[Tuple[float, float]]:
        """Read ``[a, b]`` with ``a < b`` (``ordered``) or ``a != b``."""
        if self.data.get(key) is None:
            if required:
                raise self.error(key, 'missing (required)')
            return default
        pair = self.numbers(key)
        if len(pair) != 2:
            raise self.error(key, f'must be [a, b], got {self.data[key]!r}')
        if (ordered and not pair[0] < pair[1]) or pair[0] == pair[1]:
            rule = 'a < b' if ordered else 'a != b'
            raise self.error(key, f'must be [a, b] with {rule}, got {self.data[key]!r}')
        return pair[0], pair[1]

    def names(self, key: str, allow_empty: bool = False) -> Tuple[str, ...]:
        """Read a list of unique, non-empty names."""
        value = self.data.get(key)
        if value is None:
            value = []
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f'must be a list of names, got {value!r}')
        if not value and not allow_empty:
            raise self.error(key, 'must name at least one')
        for i, v in enumerate(value):
            if v in value[:i]:
                raise self.error(key, f'duplicate name {v!r}')
        return tuple(value)

    def sub(self, key: str, required: Sequence[str] = (),
            optional: Sequence[str] = ()) -> 'Fields':
        """Return the mapping under ``key``."""
        return Fields(self.data.get(key), self.at(key), self.source, required, optional)

    def items(self, key: str, keys: Tuple[Sequence[str], Sequence[str]] = ((), ())
              ) -> Iterator['Fields']:
        """Yield the mappings of the list under ``key`` (a non-empty list)."""
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f'must be a non-empty list, got {value!r}')
        for i, item in enumerate(value):
            yield Fields(item, f'{self.at(key)}[{i}]', self.source, *keys)
