"""ROS message <-> numpy conversions for the policy node.

Images become ``(H, W, 3)`` ``uint8`` RGB arrays (the format of
:class:`~retain_ros.policies.base.Observation`). Every message is validated against its own
declared size and encoding first; a message that does not fit raises :class:`ConversionError`,
which the node counts as a dropped message. Images are decoded by
:mod:`retain_ros.recording.images`, the decoder (and limits) ``retain-ros export`` uses too.
"""
from __future__ import annotations

from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np

from retain_ros.recording import images
# the decoder's limits and encodings: the node's camera checks use the export's own
from retain_ros.recording.images import MAX_COMPRESSED_BYTES  # noqa: F401
from retain_ros.recording.images import MAX_SIDE  # noqa: F401
from retain_ros.recording.images import RAW_ENCODINGS  # noqa: F401


class ConversionError(ValueError):
    """A message whose content does not fit its declared size or encoding."""


def image_to_rgb(msg) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` into an RGB array (:func:`images.raw_to_rgb`).

    :param msg: the message (encodings rgb8, bgr8, rgba8, bgra8, mono8; rows may be padded,
        ``step`` >= ``width * channels``).
    :return: ``(H, W, 3)`` ``uint8`` RGB array. A copy, except for an unpadded ``rgb8`` image
        whose ``data`` is immutable (``bytes``, or a read-only memoryview such as
        :mod:`retain_ros.ros.image_cdr` gives): a read-only view of those bytes, no copy.
    :raises ConversionError: on an unsupported encoding or when step / size do not match the data.
    """
    view = rgb8_view(msg)
    if view is not None:
        return view
    try:
        return images.raw_to_rgb(msg.data, msg.encoding, msg.height, msg.width, msg.step)
    except images.ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


def rgb8_view(msg) -> Optional[np.ndarray]:
    """Return a read-only ``(H, W, 3)`` view of an unpadded rgb8 image's immutable data, or None.

    None when the image is not ``rgb8``, its rows are padded, its sizes do not match its data
    (the copying path then raises the error) or its data can be written to (an rclpy message's
    ``array.array``: a view would alias a buffer someone else may change).
    """
    data = msg.data
    if str(msg.encoding).lower() != 'rgb8' or not isinstance(data, (bytes, memoryview)):
        return None
    if isinstance(data, memoryview) and not data.readonly:
        return None
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE) or step != width * 3 \
            or len(data) != step * height:
        return None
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def check_compressed(msg) -> None:
    """Refuse a ``CompressedImage`` before decoding: format, payload size, header dimensions.

    :raises ConversionError: naming the reason (see :func:`images.check_compressed`: sides over
        :data:`MAX_SIDE` are refused, like raw images, so a small file that decodes to a huge
        image never reaches the decoder).
    """
    try:
        images.check_compressed(msg.data, str(msg.format))
    except images.ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


def compressed_to_rgb(msg) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg / png) into an RGB array.

    :param msg: the message; ``format`` as written by image_transport (``'jpeg'``,
        ``'rgb8; jpeg compressed bgr8'``, ``'png'``...).
    :return: ``(H, W, 3)`` ``uint8`` RGB array.
    :raises ConversionError: on an unknown format, a header over the size limits (checked
        before decoding, :func:`check_compressed`) or data OpenCV cannot decode.
    """
    try:
        return images.compressed_to_rgb(msg.data, str(msg.format))
    except images.ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


def to_rgb(msg) -> np.ndarray:
    """Convert an ``Image`` or ``CompressedImage`` message (dispatch on its fields)."""
    if images.is_compressed_message(msg):
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


def rgb_to_image(rgb: np.ndarray, msg=None, encoding: str = 'rgb8'):
    """Build a ``sensor_msgs/Image`` from an RGB array (tests, sim, benchmarks).

    :param rgb: ``(H, W, 3)`` ``uint8``.
    :param msg: a message to fill (a new ``Image`` when None).
    :param encoding: ``rgb8`` or ``bgr8``.
    """
    from sensor_msgs.msg import Image

    msg = Image() if msg is None else msg
    rgb = np.asarray(rgb, dtype=np.uint8)
    if encoding == 'bgr8':
        rgb = rgb[..., ::-1]
    elif encoding != 'rgb8':
        raise ValueError(f'rgb_to_image writes rgb8 or bgr8, not {encoding!r}')
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def joint_state_to_vector(msg, joint_names: Sequence[str]) -> np.ndarray:
    """Reorder a ``sensor_msgs/JointState``'s positions by ``joint_names``.

    :param msg: the message; names may come in any order and hold extra joints.
    :param joint_names: the policy's joint order; empty means the message's own order.
    :return: ``(D,)`` float64 positions.
    :raises ConversionError: when a joint is missing, positions and names differ in length,
        or a position is not finite.
    """
    names: List[str] = list(msg.name)
    positions = np.asarray(msg.position, dtype=np.float64)
    if names and len(names) != positions.shape[0]:
        raise ConversionError(
            f'JointState has {len(names)} names but {positions.shape[0]} positions')
    if joint_names:
        if not names:
            if positions.shape[0] != len(joint_names):
                raise ConversionError(
                    f'unnamed JointState has {positions.shape[0]} positions, '
                    f'expected {len(joint_names)}')
            out = positions
        else:
            index = {n: i for i, n in enumerate(names)}
            missing = [n for n in joint_names if n not in index]
            if missing:
                raise ConversionError(f'JointState lacks joint(s) {missing}')
            out = positions[[index[n] for n in joint_names]]
    else:
        out = positions
    if out.size == 0:
        raise ConversionError('JointState has no positions')
    if not np.all(np.isfinite(out)):
        raise ConversionError('JointState holds non-finite positions')
    return out.astype(np.float64, copy=True)


def joint_state_reading(msg, joint_names: Sequence[str]) -> Dict[str, List[float]]:
    """Read a ``sensor_msgs/JointState`` as the embodiment does: names, positions, velocities.

    :param msg: the message; names may come in any order and hold extra joints.
    :param joint_names: the joints the embodiment reads from it (checked: present, finite); an
        unnamed message must hold exactly these, in this order; empty: the message's own.
    :return: ``{'name': [...], 'position': [...], 'velocity': [...]}`` (velocity may be empty).
    :raises ConversionError: as :func:`joint_state_to_vector`.
    """
    positions = joint_state_to_vector(msg, joint_names)
    names = list(msg.name) or list(joint_names)
    if not msg.name:
        return {'name': names, 'position': positions.tolist(),
                'velocity': [float(v) for v in msg.velocity]}
    return {'name': names, 'position': [float(v) for v in msg.position],
            'velocity': [float(v) for v in msg.velocity]}


def pose_reading(msg) -> Dict[str, Tuple[float, ...]]:
    """Read a ``geometry_msgs/PoseStamped`` as the embodiment does (position, quaternion xyzw).

    :raises ConversionError: a non-finite value or a quaternion far from unit length.
    """
    p, q = msg.pose.position, msg.pose.orientation
    position = (float(p.x), float(p.y), float(p.z))
    orientation = (float(q.x), float(q.y), float(q.z), float(q.w))
    values = np.asarray(position + orientation, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ConversionError('PoseStamped holds non-finite values')
    norm = float(np.linalg.norm(values[3:]))
    if abs(norm - 1.0) > 1e-3:
        raise ConversionError(f'PoseStamped orientation is not a unit quaternion (norm {norm:g})')
    return {'position': position, 'orientation': orientation}


def stamp_to_sec(stamp) -> float:
    """``builtin_interfaces/Time`` -> float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def sec_to_duration(seconds: float, msg=None):
    """Float seconds -> ``builtin_interfaces/Duration``."""
    from builtin_interfaces.msg import Duration

    msg = Duration() if msg is None else msg
    nanos = int(round(float(seconds) * 1e9))
    msg.sec, msg.nanosec = nanos // 1_000_000_000, nanos % 1_000_000_000
    return msg


def is_compressed_topic(topic: str, explicit: Optional[bool] = None) -> bool:
    """Return True when a camera topic carries ``CompressedImage``.

    image_transport's convention: the compressed stream of ``camera/image_raw`` is
    ``camera/image_raw/compressed``.
    """
    if explicit is not None:
        return bool(explicit)
    return topic.rstrip('/').endswith('/compressed') or topic.rstrip('/') == 'compressed'


def sec_to_time(seconds: float, msg=None):
    """Float seconds -> ``builtin_interfaces/Time`` (0 and negative values give time 0)."""
    from builtin_interfaces.msg import Time

    msg = Time() if msg is None else msg
    nanos = max(0, int(round(float(seconds) * 1e9)))
    msg.sec, msg.nanosec = nanos // 1_000_000_000, nanos % 1_000_000_000
    return msg
