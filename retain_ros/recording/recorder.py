"""A bag written on its own thread from a bounded queue: recording never blocks the caller.

:meth:`ThreadedBagRecorder.put` is what the node's callbacks and inference thread call: it
appends a (not yet serialized) message to a queue and returns at once. When the queued bytes would
exceed ``max_queue_bytes`` (the disk, or the CPU serializing / compressing, cannot keep up) the
message is **dropped and counted** per topic instead, so recording can never slow inference or
grow memory without bound. The writer thread serializes each message (the caller's ``encode``,
e.g. rclpy's CDR serializer), writes it, and flushes the MCAP chunk after every message of a
``flush_topics`` topic (the action chunks) and at least every ``flush_period`` seconds, with an
``fsync`` at most every ``fsync_period`` seconds, so a crash loses at most the last unflushed
moments (see :mod:`~retain_ros.recording.bag`).
"""
from __future__ import annotations

from collections import deque
import logging
import threading
import time
from typing import Any
from typing import Callable
from typing import Deque
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

from retain_ros.recording.bag import BagWriter

LOG = logging.getLogger(__name__)

#: default bound of the queue (bytes of message payload waiting to be written)
DEFAULT_MAX_QUEUE_BYTES = 64 << 20

Encoder = Callable[[Any], Tuple[bytes, Optional[int]]]


class ThreadedBagRecorder:
    """Record one bag on a background thread.

    :param path: the bag folder (must not exist).
    :param topics: ``{topic: (msgtype, qos profiles, encode)}``; ``encode(payload)`` returns
        ``(cdr_bytes, publish_time_ns or None)`` and runs on the writer thread.
    :param custom_data: initial ``custom_data`` of ``metadata.yaml`` (strings).
    :param max_queue_bytes: queue bound; beyond it messages are dropped and counted.
    :param flush_topics: topics after whose messages the MCAP chunk is flushed.
    :param flush_period: longest time (s) between two flushes while messages arrive.
    :param fsync_period: shortest time (s) between two ``fsync`` calls, made at flushes (0 =
        fsync every flush).
    """

    def __init__(self, path: str, topics: Mapping[str, Tuple[str, Sequence[Mapping], Encoder]],
                 custom_data: Optional[Mapping[str, str]] = None,
                 max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
                 flush_topics: Sequence[str] = (), flush_period: float = 0.5,
                 fsync_period: float = 2.0):
        self._bag = BagWriter(path, custom_data=custom_data)
        self.path = self._bag.path
        self._encoders: Dict[str, Encoder] = {}
        for name, (msgtype, qos, encode) in topics.items():
            self._bag.add_topic(name, msgtype, qos)
            self._encoders[name] = encode
        self._bag.flush()
        self._max_bytes = int(max_queue_bytes)
        self._flush_topics = frozenset(flush_topics)
        self._flush_period = float(flush_period)
        self._fsync_period = float(fsync_period)
        self._cond = threading.Condition()
        self._queue: Deque[Tuple[str, int, Any, int]] = deque()
        self._queued_bytes = 0
        self._accepting = True
        self._stop = False
        self.dropped: Dict[str, int] = {}
        self.errors: Dict[str, int] = {}
        self.put_count = 0
        self.max_queued_bytes = 0
        self._thread = threading.Thread(target=self._run, name='retain_ros.recorder',
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- caller side
    def put(self, topic: str, log_time_ns: int, payload: Any, nbytes: int = 0) -> bool:
        """Queue one message; never blocks. Returns False when it was dropped.

        :param topic: a topic given at construction (others are ignored, returning False).
        :param log_time_ns: receive / publish time (ns since the epoch).
        :param payload: what ``encode`` takes (the message object).
        :param nbytes: payload size estimate, for the queue bound.
        """
        if topic not in self._encoders:
            return False
        with self._cond:
            if not self._accepting:
                return False
            self.put_count += 1
            if self._queue and self._queued_bytes + nbytes > self._max_bytes:
                self.dropped[topic] = self.dropped.get(topic, 0) + 1
                return False
            self._queue.append((topic, int(log_time_ns), payload, int(nbytes)))
            self._queued_bytes += int(nbytes)
            self.max_queued_bytes = max(self.max_queued_bytes, self._queued_bytes)
            self._cond.notify()
        return True

    def stop(self, timeout: float = 30.0) -> Dict[str, Any]:
        """Stop accepting messages, write what is queued, and return the counts.

        :return: ``{'bag', 'messages', 'topics', 'dropped', 'dropped_by_topic', 'errors',
            'max_queue_mb'}`` (the final numbers; :meth:`close` then finishes the file).
        """
        with self._cond:
            self._accepting = False
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            LOG.error('recorder thread did not finish writing %s within %g s', self.path, timeout)
        with self._cond:
            left = len(self._queue)
            if left:        # the thread did not drain in time: what is left counts as dropped
                for topic, _, _, _ in self._queue:
                    self.dropped[topic] = self.dropped.get(topic, 0) + 1
                self._queue.clear()
        return self.stats()

    def stats(self) -> Dict[str, Any]:
        """Return the counts so far (see :meth:`stop`)."""
        with self._cond:
            dropped = dict(self.dropped)
            errors = dict(self.errors)
        return {'bag': self.path, 'messages': self._bag.message_count,
                'topics': self._bag.topics, 'dropped': sum(dropped.values()),
                'dropped_by_topic': dropped, 'errors': sum(errors.values()),
                'max_queue_mb': round(self.max_queued_bytes / 2 ** 20, 3)}

    def close(self, episode: Optional[Mapping[str, Any]] = None,
              custom_data: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """Finish the bag after :meth:`stop`: summary, footer, ``metadata.yaml`` with the episode.

        :return: the rosbag2 bag information written.
        """
        if self._thread.is_alive():
            self.stop()
        return self._bag.close(custom_data=custom_data, episode=episode)

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        last_flush = last_sync = time.monotonic()
        dirty = False
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    timeout = self._flush_period if dirty else None
                    if not self._cond.wait(timeout) and dirty:
                        break
                if not self._queue and self._stop:
                    break
                item = self._queue.popleft() if self._queue else None
                if item is not None:
                    self._queued_bytes -= item[3]
            if item is not None:
                topic, log_ns, payload, _ = item
                try:
                    data, publish_ns = self._encoders[topic](payload)
                    self._bag.write(topic, data, log_ns, publish_ns)
                    dirty = True
                except Exception as exc:  # a bad message must not stop the recording
                    with self._cond:
                        self.errors[topic] = self.errors.get(topic, 0) + 1
                    LOG.warning('cannot record a message on %s: %s: %s', topic,
                                type(exc).__name__, exc)
            now = time.monotonic()
            due = item is None or item[0] in self._flush_topics or \
                now - last_flush >= self._flush_period
            if dirty and due:
                sync = now - last_sync >= self._fsync_period
                try:
                    self._bag.flush(fsync=sync)
                except OSError as exc:
                    LOG.error('cannot flush %s: %s', self.path, exc)
                last_flush = now
                if sync:
                    last_sync = now
                dirty = False
        if dirty:
            try:
                self._bag.flush(fsync=True)
            except OSError as exc:
                LOG.error('cannot flush %s: %s', self.path, exc)
