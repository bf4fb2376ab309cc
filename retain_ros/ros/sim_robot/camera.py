"""The sim robot's camera output: raw ``sensor_msgs/Image`` or JPEG ``CompressedImage`` frames.

``image_format`` ``raw`` publishes rgb8 images on ``camera_topic``; ``jpeg`` publishes
``CompressedImage`` frames (image_transport's ``compressed`` format string) on
``compressed_topic``, by default ``<camera_topic>/compressed`` as image_transport names it.
"""
from __future__ import annotations

import cv2
import numpy as np
from retain_ros.ros.conversions import rgb_to_image
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image

#: ``CompressedImage.format`` of a JPEG frame encoded from rgb8 (image_transport's string)
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'
IMAGE_FORMATS = ('raw', 'jpeg')


def jpeg_image(rgb: np.ndarray, quality: int) -> CompressedImage:
    """Encode an RGB array as a JPEG ``CompressedImage`` (header left to the caller).

    :param rgb: ``(H, W, 3)`` ``uint8`` RGB.
    :param quality: JPEG quality, 1..100.
    """
    _, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return CompressedImage(format=JPEG_FORMAT, data=data.tobytes())


class SimCamera:
    """The camera publisher of a sim node, in the format its parameters ask for.

    :param node: the ``sim_robot`` node; its ``image_format``, ``camera_topic``,
        ``compressed_topic``, ``camera_frame_id`` and ``jpeg_quality`` parameters are read.
    :raises ValueError: ``image_format`` is neither ``raw`` nor ``jpeg``.
    """

    def __init__(self, node):
        def param(name):
            return node.get_parameter(name).value

        fmt = str(param('image_format')).strip().lower()
        if fmt not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be 'raw' or 'jpeg', not {fmt!r}")
        self.jpeg = fmt == 'jpeg'
        self.frame_id = param('camera_frame_id')
        self.quality = int(param('jpeg_quality'))
        if self.jpeg:
            topic = param('compressed_topic') or param('camera_topic').rstrip('/') + '/compressed'
            self.publisher = node.create_publisher(CompressedImage, topic, 2)
        else:
            self.publisher = node.create_publisher(Image, param('camera_topic'), 2)

    @property
    def topic_name(self) -> str:
        """Return the topic the frames go to."""
        return self.publisher.topic_name

    def publish(self, rgb: np.ndarray, stamp) -> None:
        """Publish one rendered frame stamped ``stamp`` (``builtin_interfaces/Time``)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        msg = jpeg_image(rgb, self.quality) if self.jpeg else rgb_to_image(rgb)
        msg.header.stamp = stamp
        msg.header.frame_id = self.frame_id
        self.publisher.publish(msg)
