"""The evaluation episode log: one JSON line per finished rollout (:class:`EpisodeLog`).

A line holds everything needed to compute success per alpha later without the robot: the episode
id, the instruction, the scene tag (``'split=new_ood;task=red_block;variation=lighting'``) and its
parsed fields, the effective alpha of every parameter group (alpha = weight on the FINETUNED
model), the merge recipe and merged-weights fingerprint, start / end time, the outcome, the
number of action chunks and their inference latency. An aborted episode (:meth:`EpisodeLog.abort`)
gets a line too, with ``"aborted": true`` and ``"success": null`` (not counted); with a sequential
schedule every line carries the test's state after that episode under ``"sequential"``.

Lines are appended and flushed to disk (``fsync``) at the end of every episode, so a crash or a
power cut on the robot loses at most the episode that was running. The report reads the lines
back with :func:`retain_ros.evaluation.loading.load_episodes`. (Bags of the same episodes are
written by the *recorder*, :mod:`retain_ros.recording.recorder`.)
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import threading
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
import uuid

from retain_ros.evaluation.stats import latency_summary
from retain_ros.evaluation.tags import parse_tag

LOG = logging.getLogger(__name__)

#: log format version written into every line
FORMAT_VERSION = 1


class EpisodeError(RuntimeError):
    """An episode call out of order (end without start, start while one is running)."""


def _iso(unix: float) -> str:
    stamp = datetime.datetime.fromtimestamp(unix, tz=datetime.timezone.utc)
    return stamp.isoformat(timespec='milliseconds')


def _clean_alphas(alphas: Any) -> Dict[str, float]:
    if alphas is None:
        return {}
    if isinstance(alphas, (int, float)):
        return {'alpha': float(alphas)}
    if not isinstance(alphas, Mapping):
        raise TypeError(f'alphas must be a dict group -> float, got {type(alphas).__name__}')
    out = {}
    for key, value in alphas.items():
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f'alpha for {key!r} is not finite: {value}')
        out[str(key)] = value
    return out


class EpisodeLog:
    """Append finished evaluation episodes to a JSON-lines file.

    Thread safe: ``record_chunk`` may come from an inference thread while ``start`` / ``end``
    come from service callbacks.

    :param path: the ``.jsonl`` file; its parent directory is created on the first write.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._current: Optional[Dict[str, Any]] = None
        self._latencies: List[float] = []
        self._count = 0

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`end` (or :meth:`discard`)."""
        with self._lock:
            return self._current is not None

    @property
    def episode_id(self) -> Optional[str]:
        """Id of the running episode, ``None`` when none runs."""
        with self._lock:
            return None if self._current is None else self._current['episode_id']

    @property
    def chunks(self) -> int:
        """Action chunks recorded in the running episode so far."""
        with self._lock:
            return len(self._latencies)

    def start(self, instruction: str, tag: str = '', alphas: Optional[Mapping] = None,
              recipe: str = '', fingerprint: str = '', alpha_hidden: bool = False,
              extra: Optional[Mapping[str, Any]] = None,
              checkpoints: Optional[Mapping[str, Any]] = None) -> str:
        """Begin an episode.

        :param instruction: the language instruction the policy gets.
        :param tag: scene tag ``'split=...;task=...;variation=...'``.
        :param alphas: effective alpha per group (weight on the finetuned model),
            e.g. ``MergeState.alphas``.
        :param recipe: merge recipe name.
        :param fingerprint: merged-weights fingerprint.
        :param alpha_hidden: the operator was not shown alpha (blind schedule).
        :param extra: more JSON-able fields stored under ``extra``.
        :param checkpoints: the live checkpoints (``{'pretrained': path, 'finetuned': [paths],
            'digests': ...}``, ``MergedPolicy.checkpoints()``), stored as ``checkpoints``.
        :return: the new episode id.
        :raises EpisodeError: when an episode is already running.
        """
        alphas = _clean_alphas(alphas)
        with self._lock:
            if self._current is not None:
                raise EpisodeError(
                    f'episode {self._current["episode_id"]} is still running; end it (success or '
                    'failure) before starting another')
            now = time.time()
            self._count += 1
            episode_id = '{}-{:04d}-{}'.format(
                time.strftime('%Y%m%dT%H%M%S', time.gmtime(now)), self._count,
                uuid.uuid4().hex[:6])
            fields = parse_tag(tag)
            self._current = {
                'episode_id': episode_id,
                'instruction': str(instruction),
                'tag': str(tag or ''),
                'split': fields.get('split'),
                'task': fields.get('task'),
                'variation': fields.get('variation'),
                'tag_fields': fields,
                'alpha': alphas,
                'recipe': str(recipe or ''),
                'fingerprint': str(fingerprint or ''),
                'checkpoints': dict(checkpoints or {}),
                'alpha_hidden': bool(alpha_hidden),
                'start_unix': now,
                '_t0': time.monotonic(),
            }
            if extra:
                self._current['extra'] = dict(extra)
            self._latencies = []
        LOG.debug('episode %s started (%s)', episode_id, tag)
        return episode_id

    def record_chunk(self, latency_ms: float) -> None:
        """Count one action chunk and its inference latency; ignored when no episode runs."""
        with self._lock:
            if self._current is None:
                return
            value = float(latency_ms)
            if math.isfinite(value):
                self._latencies.append(value)

    def end(self, success: bool, extra: Optional[Mapping[str, Any]] = None,
            recording: Optional[Mapping[str, Any]] = None,
            instruction: str = '', sequential: Optional[Mapping[str, Any]] = None,
            setting: str = '') -> Dict[str, Any]:
        """Finish the running episode and append its line to the log.

        :param success: the outcome.
        :param extra: more JSON-able fields merged into ``extra``.
        :param recording: the episode bag's counts (``bag``, ``messages``, ``dropped``, ...),
            stored as ``recording``.
        :param instruction: the instruction in force at the end, logged when none was known at
            the start (an instruction that arrived just after ``start``).
        :param sequential: the sequential test's state after this episode (JSON-able), stored
            as ``sequential``.
        :param setting: the schedule's label of this episode's setting (``'setting C'`` when
            blind: with ``alpha`` it unblinds the test's decisions later), stored as ``setting``.
        :return: the dict that was written.
        :raises EpisodeError: when no episode is running.
        :raises OSError: when the line could not be written (the episode is then dropped).
        """
        return self._finish(bool(success), extra, recording, instruction, sequential, setting)

    def abort(self, extra: Optional[Mapping[str, Any]] = None,
              recording: Optional[Mapping[str, Any]] = None,
              instruction: str = '', sequential: Optional[Mapping[str, Any]] = None,
              setting: str = '') -> Dict[str, Any]:
        """Finish the running episode WITHOUT an outcome: its line has ``"aborted": true``.

        The line keeps everything else (α, tag, duration, chunks, ``recording``) with
        ``"success": null``, so it is never counted as a success or a failure; the report skips
        it. Same parameters, return value and errors as :meth:`end`.
        """
        return self._finish(None, extra, recording, instruction, sequential, setting)

    def _finish(self, success: Optional[bool], extra: Optional[Mapping[str, Any]],
                recording: Optional[Mapping[str, Any]], instruction: str,
                sequential: Optional[Mapping[str, Any]], setting: str) -> Dict[str, Any]:
        """Write the running episode's line; ``success`` None = aborted (see :meth:`abort`)."""
        with self._lock:
            if self._current is None:
                raise EpisodeError('no episode is running; start one before ending it')
            record = self._current
            latencies = self._latencies
            self._current = None
            self._latencies = []
        end_unix = time.time()
        duration = time.monotonic() - record.pop('_t0')
        line = {
            'version': FORMAT_VERSION,
            'episode_id': record['episode_id'],
            'instruction': record['instruction'] or instruction,
            'tag': record['tag'],
            'split': record['split'],
            'task': record['task'],
            'variation': record['variation'],
            'tag_fields': record['tag_fields'],
            'alpha': record['alpha'],
            'recipe': record['recipe'],
            'fingerprint': record['fingerprint'],
            'checkpoints': record['checkpoints'],
            'alpha_hidden': record['alpha_hidden'],
            'start_time': _iso(record['start_unix']),
            'end_time': _iso(end_unix),
            'start_unix': round(record['start_unix'], 6),
            'end_unix': round(end_unix, 6),
            'duration_s': round(duration, 6),
            'success': success,
            'chunks': len(latencies),
            'latency_ms': latency_summary(latencies),
        }
        merged_extra = dict(record.get('extra') or {})
        merged_extra.update(extra or {})
        if merged_extra:
            line['extra'] = merged_extra
        if recording:
            line['recording'] = dict(recording)
        if success is None:
            line['aborted'] = True
        if setting:
            line['setting'] = str(setting)
        if sequential is not None:
            line['sequential'] = dict(sequential)
        self._append(line)
        outcome = 'ABORTED (not counted)' if success is None else (
            'SUCCESS' if success else 'failure')
        LOG.info('episode %s: %s after %.1f s, %d chunks', line['episode_id'], outcome,
                 duration, line['chunks'])
        return line

    def discard(self) -> Optional[str]:
        """Drop the running episode without logging it (aborted run); returns its id or None."""
        with self._lock:
            record, self._current, self._latencies = self._current, None, []
        return None if record is None else record['episode_id']

    def _append(self, line: Dict[str, Any]) -> None:
        text = json.dumps(line, sort_keys=False, allow_nan=False) + '\n'
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        with self._lock:
            with open(self.path, 'a+b') as handle:
                # a torn last line (power cut mid-write) must not swallow this one: start on a
                # fresh line when the file does not end with a newline
                if handle.seek(0, os.SEEK_END) > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b'\n':
                        text = '\n' + text
                handle.write(text.encode('utf-8'))
                handle.flush()
                os.fsync(handle.fileno())
