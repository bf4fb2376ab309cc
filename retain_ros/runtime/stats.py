"""Counters of the acting node: dropped inputs and chunks, latencies, chunks, underruns."""
from __future__ import annotations

from collections import deque
import threading
from typing import Deque
from typing import Dict

#: latency samples kept for p50 / p99
LATENCY_WINDOW = 500


class NodeStats:
    """Thread-safe counters: drops, latencies, chunks, underruns."""

    def __init__(self, logger):
        self._logger = logger
        self.lock = threading.Lock()
        self.dropped: Dict[str, int] = {}
        self.model_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.step_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.chunks_published = 0
        self.stream_underruns = 0
        self.last_error = ''

    def drop(self, key: str, reason: str) -> None:
        """Count one dropped message / chunk and log it (first time, then every 100th)."""
        with self.lock:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            count = self.dropped[key]
            self.last_error = f'{key}: {reason}'
        if count == 1 or count % 100 == 0:
            self._logger.warning(f'dropped {key} ({count} so far): {reason}')
