"""Camera inputs of the ``retain_policy`` node: cheap checks on the executor, decoding off it.

Camera messages (``sensor_msgs/Image``, or ``CompressedImage`` on topics ending in
``/compressed``) are only checked in the executor callback (declared sizes, the PNG / JPEG
header's dimensions); converting and decoding run on the node's decode thread, which keeps the
latest pending message per camera slot (older pending ones are dropped), so a huge or slow image
never stalls subscriptions, services or parameter sets.

The subscriptions take the serialized bytes (``raw=True``) and read them with
:mod:`retain_ros.ros.image_cdr`: no rclpy deserialization, no copy of the pixels before the
conversion, and none at all for unpadded ``rgb8`` (the image is a read-only view of the bytes).
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
import threading
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Tuple

from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image

from retain_ros.ros.conversions import check_compressed
from retain_ros.ros.conversions import ConversionError
from retain_ros.ros.conversions import is_compressed_topic
from retain_ros.ros.conversions import MAX_SIDE
from retain_ros.ros.conversions import stamp_to_sec
from retain_ros.ros.conversions import to_rgb
from retain_ros.ros.image_cdr import parse_camera
from retain_ros.ros.policy_node.qos import SENSOR_QOS
from retain_ros.ros.policy_node.qos import Subscriptions


@dataclass
class Slot:
    """Latest message of one input, converted.

    :param value: the converted value (RGB array, position vector).
    :param recv: ``time.monotonic()`` at arrival.
    :param stamp: header stamp (s), 0 when none.
    :param time: the input's time on the node's clock (s): ``stamp - clock_offset``, or the
        arrival time when the stamp is 0.
    :param convert_ms: conversion time.
    """

    value: Any
    recv: float
    stamp: float
    time: float
    convert_ms: float = 0.0


class _Decoder:
    """The decode thread: converts the latest pending camera message of each slot."""

    def __init__(self, convert: Callable[[str, str, Any, float, float], None]):
        self._convert = convert
        self._cond = threading.Condition()
        self._pending: Dict[str, Tuple[str, Any, float, float]] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name='retain_policy.decode',
                                        daemon=True)
        self._thread.start()

    def put(self, topic: str, slot: str, msg: Any, recv: float, recv_ros: float) -> None:
        """Queue ``msg`` for ``slot``, replacing a message of that slot still pending."""
        with self._cond:
            self._pending[slot] = (topic, msg, recv, recv_ros)
            self._cond.notify()

    def stop(self) -> None:
        """End the thread (the pending messages are dropped)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                work, self._pending = self._pending, {}
            for slot, (topic, msg, recv, recv_ros) in work.items():
                self._convert(topic, slot, msg, recv, recv_ros)


class CameraInputs:
    """The camera subscriptions and the latest converted image of each camera slot.

    :param camera_slots: camera topic -> the policy's camera slot, in slot order.
    :param time_of: ``time_of(stamp, recv_ros)``: the input's time on the node's clock.
    :param now: the node clock (s).
    :param drop: ``drop(key, reason)`` counts and logs a dropped message.
    """

    def __init__(self, camera_slots: Dict[str, str], time_of: Callable[[float, float], float],
                 now: Callable[[], float], drop: Callable[[str, str], None]):
        self.camera_slots = dict(camera_slots)
        self._time_of = time_of
        self._now = now
        self._drop = drop
        self._lock = threading.Lock()
        self._images: Dict[str, Slot] = {}
        self._decoder: Optional[_Decoder] = None

    def start(self, subscriptions: Subscriptions) -> None:
        """Start the decode thread and subscribe to every camera topic."""
        self._decoder = _Decoder(self._convert)
        for topic, slot in self.camera_slots.items():
            msg_type = CompressedImage if is_compressed_topic(topic) else Image
            subscriptions.add(msg_type, topic,
                              functools.partial(self._raw_callback, topic, slot, msg_type),
                              SENSOR_QOS, raw=True)

    def stop(self) -> None:
        """Stop the decode thread and forget the images (the subscriptions are destroyed)."""
        if self._decoder is not None:
            self._decoder.stop()
            self._decoder = None
        with self._lock:
            self._images.clear()

    def latest(self) -> Dict[str, Slot]:
        """Return the latest image of each slot that has one (a copy)."""
        with self._lock:
            return dict(self._images)

    def _raw_callback(self, topic: str, slot: str, msg_type, data: bytes) -> None:
        try:
            msg = parse_camera(data, msg_type)[0]
        except ConversionError as exc:
            self._drop(f'image {topic}', str(exc))
            return
        self._camera_callback(topic, slot, msg)

    def _camera_callback(self, topic: str, slot: str, msg) -> None:
        # cheap checks only: no conversion or decoding on the executor thread
        try:
            if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
                check_compressed(msg)
            elif not (0 < int(msg.height) <= MAX_SIDE and 0 < int(msg.width) <= MAX_SIDE):
                raise ConversionError(f'bad image size {msg.width}x{msg.height}')
        except ConversionError as exc:
            self._drop(f'image {topic}', str(exc))
            return
        decoder = self._decoder
        if decoder is not None:
            decoder.put(topic, slot, msg, time.monotonic(), self._now())

    def _convert(self, topic: str, slot: str, msg, recv: float, recv_ros: float) -> None:
        t0 = time.perf_counter()
        try:
            rgb = to_rgb(msg)
        except ConversionError as exc:
            self._drop(f'image {topic}', str(exc))
            return
        except Exception as exc:  # noqa: B902 - a bad image must not kill the decode thread
            # broad on purpose: a decoder library may raise anything on a malformed frame; the
            # frame is dropped and counted with the exception's type and message (diagnostics)
            self._drop(f'image {topic}', f'{type(exc).__name__}: {exc}')
            return
        stamp = stamp_to_sec(msg.header.stamp)
        entry = Slot(rgb, recv, stamp, self._time_of(stamp, recv_ros),
                     (time.perf_counter() - t0) * 1e3)
        with self._lock:
            self._images[slot] = entry
