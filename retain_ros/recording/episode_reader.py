"""Reading one episode bag as frames at a fixed rate: :func:`read_episode` -> :class:`Episode`.

Reads the episode bags written by the node (``record: true``; any rosbag2 MCAP bag with a camera,
a ``sensor_msgs/JointState`` topic and the policy's commands works) with the ``mcap`` reader and
the ``mcap_ros2`` CDR decoder (no ROS install needed) and resamples the episode to ``fps`` frames
per second.

Frames: frame ``k`` of an episode is at ``t_k = t_0 + k / fps`` on the bag's log clock (receive
time), from the first moment every camera, the joint state and a command have been seen, to the
last moment all are still covered. Its images and state are the latest received at or before
``t_k``; its ``action`` is the command in force at ``t_k``: point ``floor((t_k - t_chunk) * fps)``
of the latest ``JointTrajectory`` chunk (its points are ``1 / fps`` apart), or the latest
``Float64MultiArray`` command in stream mode. ``fps`` defaults to the node's control rate, read
from the chunks' ``time_from_start``.

Images are decoded by :mod:`retain_ros.recording.images`, with the node's guards (encodings,
``MAX_SIDE``, the PNG / JPEG header size check before decoding, the payload cap). A camera message
that is refused is skipped with a warning naming the bag, topic, message index, log time and
reason (also returned in the episode's ``meta['bad_frames']``), and the rest of the episode is
read. The episode stays consistent, one row per timestep with every feature: a frame whose latest
message is bad takes the latest good message before it (the image the node would have kept, as it
drops such a message), and timesteps before a camera's first good message are dropped for every
feature (the episode then starts at the first timestep where every camera has a good image). An
episode with no such timestep is an :class:`ExportError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import json
import logging
import math
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np

from retain_ros.recording import bag as B
from retain_ros.recording.images import ImageDecodeError
from retain_ros.recording.images import message_to_rgb

LOG = logging.getLogger(__name__)

#: message types read as cameras
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
_CAMERA_SUFFIXES = ('compressed', 'image_raw', 'image_color', 'image_rect_color', 'image_rect',
                    'image')

#: one topic's messages: ``(message type, [(log time ns, decoded message), ...])``
Stream = Tuple[str, List[Tuple[int, Any]]]


class ExportError(RuntimeError):
    """A bag that cannot be exported (the message names it and says why)."""


def camera_key(topic: str) -> str:
    """Return the feature name of a camera topic: ``/wrist/image_raw/compressed`` -> ``wrist``."""
    parts = [p for p in topic.strip('/').split('/') if p]
    while len(parts) > 1 and parts[-1] in _CAMERA_SUFFIXES:
        parts.pop()
    return '_'.join(parts) or 'camera'


def decode_image(msg, msgtype: str) -> np.ndarray:
    """Decode an ``Image`` / ``CompressedImage`` (mcap_ros2 object) to an RGB ``uint8`` array.

    Decoded by :mod:`retain_ros.recording.images`, with the node's limits.

    :param msg: the decoded message.
    :param msgtype: its type name (``'sensor_msgs/msg/CompressedImage'`` ...).
    :return: the ``(H, W, 3)`` image.
    :raises ImageDecodeError: the reason the image is refused.
    """
    return message_to_rgb(msg, compressed=msgtype.endswith('CompressedImage'))


class _CameraFrames:
    """One camera topic's messages, decoded on demand (each at most once).

    A message that does not decode is reported once (bag, topic, message index, log time,
    reason) and stands for nothing: the frame that would use it takes the latest *decodable*
    message before it instead, as the node keeps its previous image when it drops one.
    """

    def __init__(self, path: str, topic: str, msgtype: str, msgs: List[Tuple[int, Any]],
                 bad: List[str]):
        self.path, self.topic, self.msgtype, self.msgs = path, topic, msgtype, msgs
        self._decoded: Dict[int, Optional[np.ndarray]] = {}
        self._bad = bad

    def _decode(self, i: int) -> Optional[np.ndarray]:
        if i not in self._decoded:
            stamp, msg = self.msgs[i]
            try:
                self._decoded[i] = decode_image(msg, self.msgtype)
            except (ImageDecodeError, AttributeError, TypeError) as exc:
                self._decoded[i] = None
                note = (f'{self.path}: {self.topic} message {i} (log time {stamp} ns, '
                        f'{(stamp - self.msgs[0][0]) * 1e-9:.3f} s after the topic\'s first): '
                        f'skipped, {exc}')
                LOG.warning('%s', note)
                self._bad.append(note)
        return self._decoded[i]

    def latest_good(self, i: int) -> Optional[np.ndarray]:
        """Return the image of message ``i``, or of the latest decodable one before it (None)."""
        while i >= 0:
            image = self._decode(i)
            if image is not None:
                return image
            i -= 1
        return None


def _duration(d) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


@dataclass
class Episode:
    """One exported episode: frames resampled to ``fps``."""

    bag: str
    line: Optional[Dict[str, Any]]
    task: str
    fps: int
    joint_names: List[str]
    images: Dict[str, np.ndarray]          # key -> (T, H, W, 3) uint8
    state: np.ndarray                      # (T, D) float32
    action: np.ndarray                     # (T, D) float32
    status: str = B.STATUS_COMPLETE
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Number of frames."""
        return int(self.state.shape[0])


def _latest(times: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.searchsorted(times, t, side='right') - 1


def _read_streams(path: str) -> Dict[str, Stream]:
    """Decode every message of the bag folder ``path``: ``{topic: (type, [(log ns, msg)])}``."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    streams: Dict[str, Stream] = {}
    with open(B.mcap_path(path), 'rb') as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            streams.setdefault(channel.topic, (schema.name, []))[1].append(
                (message.log_time, decoded))
    return streams


def _command_stream(streams: Dict[str, Stream], trajectory: Optional[str],
                    command: Optional[str],
                    joint_msgs: List[Tuple[int, Any]]) -> Tuple[List[Tuple[int, Any]],
                                                                List[str], float]:
    """Return the commands ``[(log ns, msg)]``, their joint names and control period (s).

    Chunks (``JointTrajectory``, empty ones left out) name their joints and give the period by
    the spacing of their points; stream commands (``Float64MultiArray``) follow the joint
    state's names and give it by their own spacing. A period of 0 means unknown.
    """
    if trajectory:
        chunk_msgs = [(t, m) for t, m in streams[trajectory][1] if len(m.points)]
        names = list(chunk_msgs[0][1].joint_names) if chunk_msgs else []
        dts = [_duration(m.points[1].time_from_start) - _duration(m.points[0].time_from_start)
               for _, m in chunk_msgs if len(m.points) > 1]
        period = float(np.median(dts)) if dts else 0.0
    else:
        chunk_msgs = streams[command][1]
        names = list(joint_msgs[0][1].name)
        gaps = np.diff([t for t, _ in chunk_msgs]) * 1e-9
        period = float(np.median(gaps)) if len(gaps) else 0.0
    return chunk_msgs, names, period


def _camera_images(path: str, streams: Dict[str, Stream], cams: Dict[str, str],
                   cam_times: Dict[str, np.ndarray], t: np.ndarray,
                   rate: int) -> Tuple[Dict[str, np.ndarray], np.ndarray, List[str]]:
    """Return ``({feature: (T, H, W, 3) frames}, timesteps kept, bad-message notes)``.

    An undecodable message leaves its frames to the latest good one; only frames before a
    camera's first good message have no image: the episode starts after them, for every feature.
    """
    bad: List[str] = []
    frames: Dict[str, List[Optional[np.ndarray]]] = {}
    for topic in cams:
        camera = _CameraFrames(path, topic, streams[topic][0], streams[topic][1], bad)
        frames[topic] = [camera.latest_good(i) for i in _latest(cam_times[topic], t)]
    skip = max(next((k for k, f in enumerate(fs) if f is not None), len(fs))
               for fs in frames.values())
    if skip >= len(t):
        raise ExportError(f'{path}: no frame where every camera has a decodable image '
                          f'({len(bad)} message(s) skipped, e.g. {bad[0] if bad else "-"})')
    if skip:
        LOG.warning('%s: the first %d frame(s) have no decodable image on some camera; the '
                    'episode starts %.3f s later', path, skip, skip / rate)
        t = t[skip:]
    images = {}
    for topic, key in cams.items():
        kept = frames[topic][skip:]
        shapes = {f.shape for f in kept}
        if len(shapes) > 1:
            raise ExportError(f'{path}: {topic} changes image size within the episode {shapes}')
        images[key] = np.stack(kept)
    return images, t, bad


def _actions(chunk_msgs: List[Tuple[int, Any]], cmd_times: np.ndarray, t: np.ndarray,
             rate: int, chunks: bool) -> np.ndarray:
    """Return the command in force at each timestep: a chunk's point, or a stream command."""
    actions = []
    for k, i in zip(t, _latest(cmd_times, t)):
        stamp, msg = chunk_msgs[i]
        if chunks:
            step = min(int(k - stamp) * rate // 10 ** 9, len(msg.points) - 1)
            actions.append(np.asarray(msg.points[step].positions, np.float64))
        else:
            actions.append(np.asarray(msg.data, np.float64))
    return np.stack(actions)


def read_episode(path: str, fps: Optional[int] = None,
                 cameras: Optional[Dict[str, str]] = None) -> Episode:
    """Read one bag folder and resample it (see the module docstring).

    :param path: the bag folder.
    :param fps: frames per second; None = the control rate found in the chunks.
    :param cameras: ``{topic: feature name}`` overrides of :func:`camera_key`.
    :return: the :class:`Episode`.
    :raises ExportError: when the bag lacks a camera, the joint state or commands, or its
        streams never overlap or no frame has a decodable image on every camera.
    """
    if B.repair_bag(path) is not None:
        LOG.warning('%s was cut short by a crash; repaired it (messages up to the last flushed '
                    'chunk kept)', path)
    info = B.read_metadata(path)
    status = (info.get('custom_data') or {}).get(B.STATUS_KEY, B.STATUS_COMPLETE)
    streams = _read_streams(path)
    cams = {t: (cameras or {}).get(t, camera_key(t)) for t, (ty, _) in streams.items()
            if ty in IMAGE_TYPES}
    joints = [t for t, (ty, _) in streams.items() if ty == 'sensor_msgs/msg/JointState']
    trajectories = [t for t, (ty, _) in streams.items()
                    if ty == 'trajectory_msgs/msg/JointTrajectory']
    commands = [t for t, (ty, _) in streams.items() if ty == 'std_msgs/msg/Float64MultiArray']
    missing = [what for what, found in (('a camera topic', cams), ('a JointState topic', joints),
                                        ('commands (JointTrajectory or Float64MultiArray)',
                                         trajectories or commands)) if not found]
    if missing:
        raise ExportError(f'{path}: missing {", ".join(missing)} in the bag '
                          f'(topics: {sorted(streams)})')
    line = B.episode_of(path)
    start = json.loads((info.get('custom_data') or {}).get('retain_ros.start') or '{}')
    instruction = [m.data for t, (ty, msgs) in streams.items() if t.endswith('instruction')
                   for _, m in msgs]
    task = (line or {}).get('instruction') or start.get('instruction') or \
        (instruction[-1] if instruction else '')
    joint_topic = sorted(joints, key=lambda t: not t.endswith('joint_states'))[0]
    joint_msgs = streams[joint_topic][1]
    chunk_msgs, names, period = _command_stream(
        streams, trajectories[0] if trajectories else None, commands[0] if commands else None,
        joint_msgs)
    if not chunk_msgs:
        raise ExportError(f'{path}: no command was recorded')
    rate = int(fps) if fps else (int(round(1.0 / period)) if period > 0 else 0)
    if rate <= 0:
        raise ExportError(f'{path}: cannot tell the control rate; pass --fps')
    names = names or list(joint_msgs[0][1].name)

    def state_of(msg) -> np.ndarray:
        lookup = dict(zip(msg.name, msg.position))
        return np.array([lookup.get(n, math.nan) for n in names], np.float64)

    cam_times = {t: np.array([s for s, _ in streams[t][1]], np.int64) for t in cams}
    joint_times = np.array([s for s, _ in joint_msgs], np.int64)
    cmd_times = np.array([s for s, _ in chunk_msgs], np.int64)
    first = max([int(v[0]) for v in cam_times.values()]
                + [int(joint_times[0]), int(cmd_times[0])])
    horizon = (max(len(m.points) for _, m in chunk_msgs) if trajectories else 1) / rate
    last = min([int(v[-1]) for v in cam_times.values()]
               + [int(joint_times[-1]), int(cmd_times[-1] + horizon * 1e9)])
    if last < first:
        raise ExportError(f'{path}: the cameras, joint state and commands never overlap')
    t = first + (np.arange(int((last - first) * 1e-9 * rate) + 1) * (1e9 / rate)).astype(
        np.int64)
    images, t, bad = _camera_images(path, streams, cams, cam_times, t, rate)
    state = np.stack([state_of(joint_msgs[i][1]) for i in _latest(joint_times, t)])
    action = _actions(chunk_msgs, cmd_times, t, rate, bool(trajectories))
    if action.shape[1] != state.shape[1] or not np.isfinite(state).all():
        raise ExportError(f'{path}: joint states do not cover the command joints {names}')
    return Episode(bag=os.path.abspath(path), line=line, task=str(task), fps=rate,
                   joint_names=names, images=images, state=state.astype(np.float32),
                   action=action.astype(np.float32), status=status,
                   meta={'start': start, 'bad_frames': bad})
