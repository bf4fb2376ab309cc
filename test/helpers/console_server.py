"""Run the console's web app in a thread (uvicorn) or as a process, and talk to it over HTTP."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port(host='127.0.0.1'):
    """Return a TCP port that is free on ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http(url, data=None, headers=None, timeout=10.0):
    """Return ``(status, headers, body bytes)`` of a GET (or POST of JSON ``data``)."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    if body is not None:
        request.add_header('Content-Type', 'application/json')
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_http(url, timeout=30.0, headers=None):
    """Wait until ``url`` answers at all (any status); return that status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http(url, headers=headers, timeout=2.0)[0]
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f'{url} did not answer in {timeout} s') from None
            time.sleep(0.2)


@contextlib.contextmanager
def serve_in_thread(app, host='127.0.0.1', port=None):
    """Serve the ASGI ``app`` with uvicorn on a thread; yield its base URL."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level='warning',
                                           access_log=False, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f'http://{host}:{port}'
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, 'uvicorn did not start'
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class ConsoleProcess:
    """``python -m retain_ros.cli console ...`` as a process; its printed URL and output."""

    def __init__(self, *args, env=None):
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'retain_ros.cli', 'console', *args], cwd=ROOT,
            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip('\n'))

    def url(self, timeout=30.0):
        """Return the URL the console printed at start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if 'retain-ros console for' in line:
                    return line.split(': ', 1)[1].strip()
            if self.proc.poll() is not None:
                raise AssertionError('console exited: ' + '\n'.join(self.lines))
            time.sleep(0.1)
        raise AssertionError('console printed no URL: ' + '\n'.join(self.lines))

    def output(self):
        return '\n'.join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
