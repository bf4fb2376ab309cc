"""Camera messages read straight from their serialized (CDR) bytes, without rclpy's deserializer.

The node subscribes to its cameras with ``raw=True``: rclpy then hands over the serialized
message as one ``bytes`` object instead of building a ``sensor_msgs/Image`` (a C struct, a copy
of the pixels into an ``array.array``, a Python object per field). :func:`parse_camera` reads the
few header fields with :func:`struct.unpack_from` and returns a light view whose ``data`` is a
``memoryview`` into those bytes: the pixels are never copied before conversion, and an ``rgb8``
image is converted without any copy at all (:func:`retain_ros.ros.conversions.image_to_rgb`).

Plain CDR (encapsulation ``CDR_BE`` / ``CDR_LE``, what rmw_fastrtps_cpp and rmw_cyclonedds_cpp
write for these types) is read here; any other encapsulation is handed to rclpy's
``deserialize_message``, so a middleware that serializes differently still works, only slower.
A message whose lengths run past its bytes raises
:class:`~retain_ros.ros.conversions.ConversionError` (counted as a dropped frame).
"""
from __future__ import annotations

import struct
from typing import Any
from typing import Tuple

from retain_ros.ros.conversions import ConversionError

#: encapsulation identifiers of plain CDR -> struct byte order
_ENCAPSULATIONS = {b'\x00\x00': '>', b'\x00\x01': '<'}


class _Stamp:
    __slots__ = ('sec', 'nanosec')

    def __init__(self, sec: int, nanosec: int):
        self.sec, self.nanosec = sec, nanosec


class _Header:
    __slots__ = ('stamp', 'frame_id')

    def __init__(self, stamp: _Stamp, frame_id: str):
        self.stamp, self.frame_id = stamp, frame_id


class ImageView:
    """The fields of a ``sensor_msgs/Image`` read from its CDR bytes (``data``: a memoryview)."""

    __slots__ = ('header', 'height', 'width', 'encoding', 'is_bigendian', 'step', 'data')


class CompressedImageView:
    """The fields of a ``sensor_msgs/CompressedImage`` read from its CDR bytes."""

    __slots__ = ('header', 'format', 'data')


class _Reader:
    """Sequential CDR reader; alignment is relative to the end of the 4-byte encapsulation."""

    def __init__(self, data: bytes):
        self.view = memoryview(data)
        self.order = _ENCAPSULATIONS[bytes(self.view[:2])]
        self.pos = 4

    def uint32(self) -> int:
        self.pos += -(self.pos - 4) % 4
        if self.pos + 4 > len(self.view):
            raise ConversionError('serialized image ends inside a field')
        value = struct.unpack_from(self.order + 'I', self.view, self.pos)[0]
        self.pos += 4
        return value

    def uint8(self) -> int:
        if self.pos >= len(self.view):
            raise ConversionError('serialized image ends inside a field')
        self.pos += 1
        return self.view[self.pos - 1]

    def octets(self) -> memoryview:
        size = self.uint32()
        if self.pos + size > len(self.view):
            raise ConversionError(f'serialized image declares {size} bytes past its end '
                                  f'({len(self.view) - self.pos} left)')
        self.pos += size
        return self.view[self.pos - size:self.pos]

    def string(self) -> str:
        raw = self.octets()
        return bytes(raw[:-1] if len(raw) and raw[-1] == 0 else raw).decode('utf-8', 'replace')

    def header(self) -> _Header:
        sec = self.uint32()
        nanosec = self.uint32()
        if sec >= 2 ** 31:
            sec -= 2 ** 32      # builtin_interfaces/Time.sec is int32
        return _Header(_Stamp(sec, nanosec), self.string())


def is_plain_cdr(data: bytes) -> bool:
    """Return True when ``data`` starts with a plain CDR encapsulation this module reads."""
    return len(data) >= 4 and bytes(data[:2]) in _ENCAPSULATIONS


def parse_image(data: bytes) -> ImageView:
    """Read a serialized ``sensor_msgs/Image`` (plain CDR) into an :class:`ImageView`.

    :raises ConversionError: the bytes end before a field or a length says they should.
    """
    reader = _Reader(data)
    out = ImageView()
    out.header = reader.header()
    out.height = reader.uint32()
    out.width = reader.uint32()
    out.encoding = reader.string()
    out.is_bigendian = reader.uint8()
    out.step = reader.uint32()
    out.data = reader.octets()
    return out


def parse_compressed(data: bytes) -> CompressedImageView:
    """Read a serialized ``sensor_msgs/CompressedImage`` (plain CDR).

    :raises ConversionError: the bytes end before a field or a length says they should.
    """
    reader = _Reader(data)
    out = CompressedImageView()
    out.header = reader.header()
    out.format = reader.string()
    out.data = reader.octets()
    return out


def parse_camera(data: bytes, msg_type: Any) -> Tuple[Any, bool]:
    """Return ``(message, parsed)`` for the serialized camera message ``data``.

    :param msg_type: ``sensor_msgs.msg.Image`` or ``CompressedImage`` (the subscription's type).
    :return: a view (``parsed`` True) for plain CDR; otherwise the message rclpy deserializes
        (``parsed`` False).
    :raises ConversionError: malformed plain-CDR bytes.
    """
    if not is_plain_cdr(data):
        from rclpy.serialization import deserialize_message

        return deserialize_message(data, msg_type), False
    if msg_type.__name__ == 'CompressedImage':
        return parse_compressed(data), True
    return parse_image(data), True
