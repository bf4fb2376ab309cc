"""``retain-ros export BAGS... --out DIR``: recorded episodes as a LeRobot v3 dataset.

Reads the episode bags written by the node (``record: true``; any rosbag2 MCAP bag with a camera,
a ``sensor_msgs/JointState`` topic and the policy's commands works) with the ``mcap`` reader and
the ``mcap_ros2`` CDR decoder (no ROS install needed), resamples each episode to ``fps`` frames
per second and writes the layout of LeRobot's ``LeRobotDataset`` format **v3.0**:

- ``data/chunk-000/file-000.parquet`` (a new file past ``data_files_size_in_mb``), one row per
  frame: ``observation.images.<camera>`` (``image`` features: PNG bytes embedded as the Hugging
  Face ``Image`` struct ``{bytes, path}``), ``observation.state`` and ``action`` (float32, fixed
  length, ``names`` = joint names), ``next.done``, ``timestamp``, ``frame_index``,
  ``episode_index``, ``index``, ``task_index``; one row group per episode;
- ``meta/info.json`` (``codebase_version: v3.0``, fps, features, totals, path templates,
  ``video_path: null``: images, no videos), ``meta/stats.json`` (min, max, mean, std, count and
  the q01 / q10 / q50 / q90 / q99 quantiles per feature; images per channel on [0, 1]),
  ``meta/tasks.parquet`` (the instructions, indexed by task) and
  ``meta/episodes/chunk-000/file-000.parquet`` (per episode: ``tasks``, ``length``, the data file
  and ``dataset_from_index`` / ``dataset_to_index``, ``stats/<feature>/<stat>``, and from the
  episode log line ``success``, ``alpha`` (JSON), ``fingerprint``, ``episode_id``, ``bag``).

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
reason (also returned as ``bad_frames`` and counted in the episode's ``skipped_images``), and the
rest of the episode is exported. The dataset stays consistent, one row per timestep with every
feature: a frame whose latest message is bad takes the latest good message before it (the image
the node would have kept, as it drops such a message), and timesteps before a camera's first good
message are dropped for every feature (the episode then starts at the first timestep where every
camera has a good image). An episode with no such timestep is an :class:`ExportError`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from dataclasses import field
import json
import logging
import math
import os
import sys
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import cv2
import numpy as np

from retain_ros.recording import bag as B
from retain_ros.recording.images import ImageDecodeError
from retain_ros.recording.images import message_to_rgb

LOG = logging.getLogger(__name__)

CODEBASE_VERSION = 'v3.0'
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
_CAMERA_SUFFIXES = ('compressed', 'image_raw', 'image_color', 'image_rect_color', 'image_rect',
                    'image')


class ExportError(RuntimeError):
    """A bag that cannot be exported (the message names it and says why)."""


def camera_key(topic: str) -> str:
    """Feature name of a camera topic: ``/wrist/image_raw/compressed`` -> ``wrist``."""
    parts = [p for p in topic.strip('/').split('/') if p]
    while len(parts) > 1 and parts[-1] in _CAMERA_SUFFIXES:
        parts.pop()
    return '_'.join(parts) or 'camera'


def decode_image(msg, msgtype: str) -> np.ndarray:
    """A decoded ``Image`` / ``CompressedImage`` (mcap_ros2 object) as an RGB ``uint8`` array.

    Decoded by :mod:`retain_ros.recording.images`, with the node's limits.

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
        """The image of message ``i``, or of the latest decodable one before it (None: none)."""
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
        return int(self.state.shape[0])


def _latest(times: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.searchsorted(times, t, side='right') - 1


def read_episode(path: str, fps: Optional[int] = None,
                 cameras: Optional[Dict[str, str]] = None) -> Episode:
    """Read one bag folder and resample it (see the module docstring).

    :param path: the bag folder.
    :param fps: frames per second; None = the control rate found in the chunks.
    :param cameras: ``{topic: feature name}`` overrides of :func:`camera_key`.
    :raises ExportError: when the bag lacks a camera, the joint state or commands.
    """
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    if B.repair_bag(path) is not None:
        LOG.warning('%s was cut short by a crash; repaired it (messages up to the last flushed '
                    'chunk kept)', path)
    info = B.read_metadata(path)
    status = (info.get('custom_data') or {}).get(B.STATUS_KEY, B.STATUS_COMPLETE)
    streams: Dict[str, Tuple[str, List[Tuple[int, Any]]]] = {}
    with open(B.mcap_path(path), 'rb') as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            streams.setdefault(channel.topic, (schema.name, []))[1].append(
                (message.log_time, decoded))
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
    if trajectories:
        chunk_msgs = [(t, m) for t, m in streams[trajectories[0]][1] if len(m.points)]
        names = list(chunk_msgs[0][1].joint_names) if chunk_msgs else []
        dts = [_duration(m.points[1].time_from_start) - _duration(m.points[0].time_from_start)
               for _, m in chunk_msgs if len(m.points) > 1]
        period = float(np.median(dts)) if dts else 0.0
    else:
        chunk_msgs = streams[commands[0]][1]
        names = list(joint_msgs[0][1].name)
        gaps = np.diff([t for t, _ in chunk_msgs]) * 1e-9
        period = float(np.median(gaps)) if len(gaps) else 0.0
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
    bad: List[str] = []
    frames: Dict[str, List[Optional[np.ndarray]]] = {}
    for topic in cams:
        camera = _CameraFrames(path, topic, streams[topic][0], streams[topic][1], bad)
        frames[topic] = [camera.latest_good(i) for i in _latest(cam_times[topic], t)]
    # an undecodable message leaves its frames to the latest good one; only frames before a
    # camera's first good message have no image: the episode starts after them, for every feature
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
    state = np.stack([state_of(joint_msgs[i][1]) for i in _latest(joint_times, t)])
    actions = []
    for k, i in zip(t, _latest(cmd_times, t)):
        stamp, msg = chunk_msgs[i]
        if trajectories:
            step = min(int(k - stamp) * rate // 10 ** 9, len(msg.points) - 1)
            actions.append(np.asarray(msg.points[step].positions, np.float64))
        else:
            actions.append(np.asarray(msg.data, np.float64))
    action = np.stack(actions)
    if action.shape[1] != state.shape[1] or not np.isfinite(state).all():
        raise ExportError(f'{path}: joint states do not cover the command joints {names}')
    return Episode(bag=os.path.abspath(path), line=line, task=str(task), fps=rate,
                   joint_names=names, images=images, state=state.astype(np.float32),
                   action=action.astype(np.float32), status=status,
                   meta={'start': start, 'bad_frames': bad})


# ------------------------------------------------------------------------- stats
def _vector_stats(values: np.ndarray) -> Dict[str, np.ndarray]:
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    out = {'min': values.min(0), 'max': values.max(0), 'mean': values.mean(0),
           'std': values.std(0), 'count': np.array([values.shape[0]])}
    for q in QUANTILES:
        out[f'q{int(round(q * 100)):02d}'] = np.quantile(values, q, axis=0)
    return out


def _image_stats(frames: np.ndarray) -> Dict[str, np.ndarray]:
    """Per channel on [0, 1], shaped (3, 1, 1) as LeRobot stores them (pixels subsampled)."""
    step = max(1, int(math.sqrt(frames.shape[1] * frames.shape[2] / 4096)))
    pixels = frames[:, ::step, ::step, :].reshape(-1, 3).astype(np.float64) / 255.0
    out = _vector_stats(pixels)
    out = {k: (v if k == 'count' else v.reshape(3, 1, 1)) for k, v in out.items()}
    out['count'] = np.array([frames.shape[0]])
    return out


def _stats_json(stats: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}


# ------------------------------------------------------------------------- writer
class LeRobotWriter:
    """Accumulates episodes and writes a LeRobot v3 dataset folder.

    :param root: the dataset folder (must not exist, or be empty).
    :param robot_type: ``robot_type`` of ``meta/info.json``.
    """

    def __init__(self, root: str, robot_type: Optional[str] = None):
        import pyarrow  # noqa: F401  (fail early with the import error)

        self.root = os.path.abspath(root)
        if os.path.isdir(self.root) and os.listdir(self.root):
            raise ExportError(f'{self.root} exists and is not empty; give a new --out folder')
        os.makedirs(self.root, exist_ok=True)
        self.robot_type = robot_type
        self.fps: Optional[int] = None
        self.features: Optional[Dict[str, Dict[str, Any]]] = None
        self.tasks: Dict[str, int] = {}
        self.episodes: List[Dict[str, Any]] = []
        self._frames = 0
        self._file = (0, 0)
        self._writer = None
        self._columns: Dict[str, List[np.ndarray]] = {}
        self._image_frames: Dict[str, List[np.ndarray]] = {}

    def _features_for(self, episode: Episode) -> Dict[str, Dict[str, Any]]:
        features: Dict[str, Dict[str, Any]] = {}
        for key, frames in episode.images.items():
            features[f'observation.images.{key}'] = {
                'dtype': 'image', 'shape': list(frames.shape[1:]),
                'names': ['height', 'width', 'channel']}
        dim = episode.state.shape[1]
        for key in ('observation.state', 'action'):
            features[key] = {'dtype': 'float32', 'shape': [dim],
                             'names': list(episode.joint_names)}
        features['next.done'] = {'dtype': 'bool', 'shape': [1], 'names': None}
        for key, dtype in (('timestamp', 'float32'), ('frame_index', 'int64'),
                           ('episode_index', 'int64'), ('index', 'int64'),
                           ('task_index', 'int64')):
            features[key] = {'dtype': dtype, 'shape': [1], 'names': None}
        return features

    def _schema(self):
        import pyarrow as pa

        fields = []
        for key, ft in self.features.items():
            if ft['dtype'] == 'image':
                fields.append(pa.field(key, pa.struct([('bytes', pa.binary()),
                                                       ('path', pa.string())])))
            elif ft['shape'] == [1]:
                fields.append(pa.field(key, {'float32': pa.float32(), 'int64': pa.int64(),
                                             'bool': pa.bool_()}[ft['dtype']]))
            else:
                fields.append(pa.field(key, pa.list_(pa.float32(), ft['shape'][0])))
        return pa.schema(fields)

    def add(self, episode: Episode) -> int:
        """Append one episode; returns its ``episode_index``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        features = self._features_for(episode)
        if self.features is None:
            self.features, self.fps = features, episode.fps
        elif features != self.features or episode.fps != self.fps:
            raise ExportError(
                f'{episode.bag}: its cameras / joints / image sizes / fps ({episode.fps}) differ '
                'from the first episode\'s; export such episodes into separate datasets')
        index = len(self.episodes)
        task_index = self.tasks.setdefault(episode.task, len(self.tasks))
        n = episode.length
        columns: Dict[str, Any] = {}
        for key, frames in episode.images.items():
            columns[f'observation.images.{key}'] = [
                {'bytes': cv2.imencode('.png', cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes(),
                 'path': None} for f in frames]
        values = {
            'observation.state': episode.state, 'action': episode.action,
            'next.done': np.arange(n) == n - 1,
            'timestamp': (np.arange(n) / episode.fps).astype(np.float32),
            'frame_index': np.arange(n, dtype=np.int64),
            'episode_index': np.full(n, index, np.int64),
            'index': np.arange(self._frames, self._frames + n, dtype=np.int64),
            'task_index': np.full(n, task_index, np.int64),
        }
        schema = self._schema()
        for key in ('observation.state', 'action'):
            columns[key] = pa.FixedSizeListArray.from_arrays(
                pa.array(values[key].reshape(-1), pa.float32()), values[key].shape[1])
        for key in ('next.done', 'timestamp', 'frame_index', 'episode_index', 'index',
                    'task_index'):
            columns[key] = values[key]
        table = pa.Table.from_pydict({k: columns[k] for k in schema.names}, schema=schema)
        if self._writer is not None and os.path.getsize(self._data_file()) > \
                DATA_FILES_SIZE_IN_MB * 2 ** 20:
            self._writer.close()
            self._writer = None
            chunk, file = self._file
            self._file = (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)
        if self._writer is None:
            os.makedirs(os.path.dirname(self._data_file()), exist_ok=True)
            self._writer = pq.ParquetWriter(self._data_file(), schema, compression='snappy')
        self._writer.write_table(table)          # one row group per episode
        stats = {'observation.state': _vector_stats(episode.state),
                 'action': _vector_stats(episode.action)}
        for key in ('timestamp', 'frame_index', 'episode_index', 'index', 'task_index'):
            stats[key] = _vector_stats(values[key].reshape(-1, 1))
        for key, frames in episode.images.items():
            stats[f'observation.images.{key}'] = _image_stats(frames)
            self._image_frames.setdefault(key, []).append(
                frames[:: max(1, n // 20)])       # a sample of each episode for global stats
        for key in ('observation.state', 'action', 'timestamp', 'frame_index',
                    'episode_index', 'index', 'task_index'):
            self._columns.setdefault(key, []).append(values[key].reshape(n, -1))
        line = episode.line or {}
        entry = {
            'episode_index': index, 'tasks': [episode.task], 'length': n,
            'data/chunk_index': self._file[0], 'data/file_index': self._file[1],
            'dataset_from_index': self._frames, 'dataset_to_index': self._frames + n,
            'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0,
            'episode_id': str(line.get('episode_id') or os.path.basename(episode.bag)),
            'success': line.get('success') if line else None,
            'alpha': json.dumps(line.get('alpha') or episode.meta['start'].get('alpha') or {}),
            'fingerprint': str(line.get('fingerprint') or
                               episode.meta['start'].get('fingerprint') or ''),
            'recording_status': episode.status, 'bag': episode.bag,
            'skipped_images': len(episode.meta.get('bad_frames') or ()),
        }
        for key, st in stats.items():
            for name, value in st.items():
                entry[f'stats/{key}/{name}'] = np.asarray(value).tolist()
        self.episodes.append(entry)
        self._frames += n
        return index

    def _data_file(self) -> str:
        chunk, file = self._file
        return os.path.join(self.root, DATA_PATH.format(chunk_index=chunk, file_index=file))

    def finish(self) -> Dict[str, Any]:
        """Write the ``meta/`` files; returns ``meta/info.json``'s content."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self.episodes:
            raise ExportError('no episode to export')
        meta = os.path.join(self.root, 'meta')
        os.makedirs(os.path.join(meta, 'episodes', 'chunk-000'), exist_ok=True)
        info = {
            'codebase_version': CODEBASE_VERSION, 'robot_type': self.robot_type,
            'total_episodes': len(self.episodes), 'total_frames': self._frames,
            'total_tasks': len(self.tasks), 'chunks_size': CHUNKS_SIZE,
            'data_files_size_in_mb': DATA_FILES_SIZE_IN_MB,
            'video_files_size_in_mb': VIDEO_FILES_SIZE_IN_MB, 'fps': self.fps,
            'splits': {'train': f'0:{len(self.episodes)}'}, 'data_path': DATA_PATH,
            'video_path': None, 'features': self.features,
        }
        with open(os.path.join(meta, 'info.json'), 'w', encoding='utf-8') as handle:
            json.dump(info, handle, indent=4)
        stats = {k: _vector_stats(np.concatenate(v)) for k, v in self._columns.items()}
        for key, samples in self._image_frames.items():
            stats[f'observation.images.{key}'] = _image_stats(np.concatenate(samples))
            stats[f'observation.images.{key}']['count'] = np.array([self._frames])
        with open(os.path.join(meta, 'stats.json'), 'w', encoding='utf-8') as handle:
            json.dump(_stats_json(stats), handle, indent=4)
        tasks = pd.DataFrame({'task_index': list(self.tasks.values())},
                             index=pd.Index(list(self.tasks), name='task'))
        tasks.to_parquet(os.path.join(meta, 'tasks.parquet'))
        table = pa.Table.from_pylist(self.episodes)
        pq.write_table(table, os.path.join(self.root, EPISODES_PATH.format(chunk_index=0,
                                                                           file_index=0)))
        return info


def export(bags: Sequence[str], out: str, fps: Optional[int] = None,
           only_success: bool = False, include_interrupted: bool = False,
           cameras: Optional[Dict[str, str]] = None,
           robot_type: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Export bag folders (or folders of bags) into the LeRobot v3 dataset ``out``.

    :param only_success: keep only episodes whose line says ``success: true``.
    :param include_interrupted: also keep episodes that never ended (no outcome).
    :return: ``meta/info.json``'s content plus ``skipped`` (``{bag: reason}``) and
        ``bad_frames`` (``{bag: [message, ...]}`` for the exported episodes: camera messages left
        out because they do not decode, see the module docstring).
    :raises ExportError: when no bag is found or none is left to export.
    """
    from tqdm import tqdm

    paths = B.find_bags(bags)
    if not paths:
        raise ExportError(f'no bag folder (with {B.METADATA_FILE}) in {list(bags)}')
    writer = LeRobotWriter(out, robot_type=robot_type)
    skipped: Dict[str, str] = {}
    bad_frames: Dict[str, List[str]] = {}
    for path in tqdm(paths, desc='export', unit='episode', disable=not progress):
        if only_success and _known_failure(path):
            skipped[path] = 'not a success'     # decided from metadata.yaml, nothing decoded
            continue
        episode = read_episode(path, fps=fps or writer.fps, cameras=cameras)
        if episode.line is None and not include_interrupted:
            skipped[path] = f'no episode line (status {episode.status}): the episode never ended'
        elif only_success and not (episode.line or {}).get('success'):
            skipped[path] = 'not a success'
        else:
            writer.add(episode)
            if episode.meta.get('bad_frames'):
                bad_frames[path] = list(episode.meta['bad_frames'])
    if not writer.episodes:
        raise ExportError(f'nothing to export: {skipped}')
    info = writer.finish()
    return dict(info, skipped=skipped, bad_frames=bad_frames)


def _known_failure(path: str) -> bool:
    """Whether the bag's metadata already holds an episode line that is not a success (a bag
    without readable metadata, e.g. interrupted, is decided after reading it)."""
    try:
        line = B.episode_of(path)
    except Exception:  # noqa: B902 - unreadable metadata: read_episode repairs and decides
        return False
    return line is not None and not line.get('success')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``retain-ros export``."""
    parser = argparse.ArgumentParser(
        prog='retain-ros export',
        description='Recorded episode bags (rosbag2 MCAP, from the node\'s record parameter) '
                    'as a LeRobot v3 dataset (parquet with embedded PNG images, meta/info.json, '
                    'meta/stats.json, meta/tasks.parquet, meta/episodes/).')
    parser.add_argument('bags', nargs='+', help='bag folders, or folders of bag folders')
    parser.add_argument('--out', required=True, help='dataset folder to create')
    parser.add_argument('--fps', type=int, default=None,
                        help='frames per second (default: the control rate of the chunks)')
    parser.add_argument('--only-success', action='store_true',
                        help='keep only successful episodes')
    parser.add_argument('--include-interrupted', action='store_true',
                        help='also keep episodes that never ended (crash, no outcome)')
    parser.add_argument('--camera', action='append', default=[], metavar='TOPIC=NAME',
                        help='feature name of a camera topic (observation.images.NAME)')
    parser.add_argument('--robot-type', default=None, help='robot_type of meta/info.json')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] %(name)s: %(message)s')
    cameras = {}
    for item in args.camera:
        topic, sep, name = item.partition('=')
        if not sep or not topic or not name:
            parser.error(f'--camera {item!r}: use TOPIC=NAME')
        cameras[topic] = name
    try:
        info = export(args.bags, args.out, fps=args.fps, only_success=args.only_success,
                      include_interrupted=args.include_interrupted, cameras=cameras,
                      robot_type=args.robot_type)
    except (ExportError, B.BagError) as exc:
        print(f'retain-ros export: {exc}', file=sys.stderr)
        return 1
    for path, reason in info['skipped'].items():
        print(f'skipped {path}: {reason}')
    for path, notes in info['bad_frames'].items():
        for note in notes:
            print(f'skipped image: {note}')
    print(f'wrote {args.out}: {info["total_episodes"]} episode(s), {info["total_frames"]} '
          f'frames at {info["fps"]} fps, {info["total_tasks"]} task(s) (LeRobot '
          f'{info["codebase_version"]})')
    return 0
