"""Camera preview of the operator console: the latest frame as a small JPEG, throttled.

The subscription callback only keeps the newest message; decoding, resizing and JPEG encoding
happen when the page asks for a frame, at most once per ``min_period`` seconds whatever the
camera's rate or the number of open pages.
"""
from __future__ import annotations

import threading
import time
from typing import Any
from typing import Optional

import cv2

from retain_ros.ros.conversions import to_rgb


class CameraPreview:
    """Latest camera frame, served as JPEG bytes.

    :param max_width: frames wider than this are scaled down (pixels).
    :param min_period: seconds between two encodings; requests in between get the cached JPEG.
    :param quality: JPEG quality (1..100).
    """

    def __init__(self, max_width: int = 320, min_period: float = 0.2, quality: int = 75):
        self.max_width = int(max_width)
        self.min_period = float(min_period)
        self.quality = int(quality)
        self._lock = threading.Lock()
        self._msg: Any = None
        self._received = 0.0
        self._jpeg: Optional[bytes] = None
        self._encoded = 0.0
        #: the last decoding error (shown nowhere but the log), or None
        self.error: Optional[str] = None

    def update(self, msg: Any) -> None:
        """Keep ``msg`` (``sensor_msgs/Image`` or ``CompressedImage``) as the newest frame."""
        with self._lock:
            self._msg = msg
            self._received = time.monotonic()

    @property
    def has_frame(self) -> bool:
        """Whether any frame arrived."""
        with self._lock:
            return self._msg is not None

    def age(self) -> Optional[float]:
        """Return seconds since the newest frame arrived, or None before the first."""
        with self._lock:
            return None if self._msg is None else time.monotonic() - self._received

    def jpeg(self) -> Optional[bytes]:
        """Return the newest frame as JPEG bytes (cached for ``min_period`` s), or None."""
        with self._lock:
            msg, received = self._msg, self._received
            if msg is None:
                return None
            now = time.monotonic()
            if self._jpeg is not None and (now - self._encoded < self.min_period
                                           or received <= self._encoded):
                return self._jpeg
        try:
            rgb = to_rgb(msg)
        except ValueError as exc:  # ConversionError: an encoding it cannot read
            self.error = str(exc)
            return self._jpeg
        height, width = rgb.shape[:2]
        if width > self.max_width:
            scale = self.max_width / float(width)
            rgb = cv2.resize(rgb, (self.max_width, max(1, int(round(height * scale)))),
                             interpolation=cv2.INTER_AREA)
        elif width < 160:
            # tiny sim images: scale up for the operator's eyes (nearest: no blur)
            factor = max(1, 160 // width)
            rgb = cv2.resize(rgb, (width * factor, height * factor),
                             interpolation=cv2.INTER_NEAREST)
        ok, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
        if not ok:
            self.error = 'JPEG encoding failed'
            return self._jpeg
        with self._lock:
            self._jpeg = data.tobytes()
            self._encoded = time.monotonic()
            return self._jpeg
