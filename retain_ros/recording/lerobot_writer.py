"""Writing episodes as a LeRobot ``LeRobotDataset`` **v3.0** folder (:class:`LeRobotWriter`).

The layout:

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
  episode log line ``success``, ``alpha`` (JSON), ``fingerprint``, ``episode_id``, ``bag``, plus
  ``recording_status`` and ``skipped_images``, the camera messages that did not decode).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

import cv2
import numpy as np

from retain_ros.recording.episode_reader import Episode
from retain_ros.recording.episode_reader import ExportError

CODEBASE_VERSION = 'v3.0'
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


def _vector_stats(values: np.ndarray) -> Dict[str, np.ndarray]:
    """Return min, max, mean, std, count and :data:`QUANTILES` per column of ``(N, ...)``."""
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    out = {'min': values.min(0), 'max': values.max(0), 'mean': values.mean(0),
           'std': values.std(0), 'count': np.array([values.shape[0]])}
    for q in QUANTILES:
        out[f'q{int(round(q * 100)):02d}'] = np.quantile(values, q, axis=0)
    return out


def _image_stats(frames: np.ndarray) -> Dict[str, np.ndarray]:
    """Return image stats per channel on [0, 1], shaped (3, 1, 1) as LeRobot stores them.

    Pixels are subsampled to about 4096 per frame; ``count`` is the number of frames.
    """
    step = max(1, int(math.sqrt(frames.shape[1] * frames.shape[2] / 4096)))
    pixels = frames[:, ::step, ::step, :].reshape(-1, 3).astype(np.float64) / 255.0
    out = _vector_stats(pixels)
    out = {k: (v if k == 'count' else v.reshape(3, 1, 1)) for k, v in out.items()}
    out['count'] = np.array([frames.shape[0]])
    return out


def _stats_json(stats: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}


class LeRobotWriter:
    """Accumulate episodes and write a LeRobot v3 dataset folder.

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
        """Append one episode: its rows to the data file, its entry to the episode metadata.

        :param episode: from :func:`~retain_ros.recording.episode_reader.read_episode`.
        :return: its ``episode_index``.
        :raises ExportError: when its features or fps differ from the first episode's.
        """
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
        values = {
            'observation.state': episode.state, 'action': episode.action,
            'next.done': np.arange(n) == n - 1,
            'timestamp': (np.arange(n) / episode.fps).astype(np.float32),
            'frame_index': np.arange(n, dtype=np.int64),
            'episode_index': np.full(n, index, np.int64),
            'index': np.arange(self._frames, self._frames + n, dtype=np.int64),
            'task_index': np.full(n, task_index, np.int64),
        }
        self._write_rows(episode, values)
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
        self.episodes.append(self._episode_entry(episode, index, stats))
        self._frames += n
        return index

    def _write_rows(self, episode: Episode, values: Dict[str, np.ndarray]) -> None:
        """Write one episode's rows (PNG-encoded images) as one row group of the data file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: Dict[str, Any] = {}
        for key, frames in episode.images.items():
            columns[f'observation.images.{key}'] = [
                {'bytes': cv2.imencode('.png', cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes(),
                 'path': None} for f in frames]
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

    def _episode_entry(self, episode: Episode, index: int,
                       stats: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Any]:
        """Return the episode's row of ``meta/episodes/``: location, log line fields, stats."""
        n = episode.length
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
        return entry

    def _data_file(self) -> str:
        chunk, file = self._file
        return os.path.join(self.root, DATA_PATH.format(chunk_index=chunk, file_index=file))

    def finish(self) -> Dict[str, Any]:
        """Close the data file and write the ``meta/`` files.

        :return: ``meta/info.json``'s content.
        :raises ExportError: when no episode was added.
        """
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
