"""The demo's node processes: parameter files, start-up as ``ros2 run`` would, clean shutdown."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Dict

import yaml


def write_params(path: str, node: str, params: Dict[str, object]) -> str:
    """Write a ROS 2 parameter file (``--params-file``) for ``node``; return ``path``.

    :param path: file to write.
    :param node: the node's name (the file's top-level key).
    :param params: parameter name -> value.
    """
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump({node: {'ros__parameters': params}}, f, sort_keys=True)
    return path


class NodeProcesses:
    """Nodes run as their own processes (``retain-ros <command>``), each with a log file.

    :param out_dir: the logs go to ``out_dir/logs/<name>.log``.
    :param env: the processes' environment.
    """

    def __init__(self, out_dir: str, env: Dict[str, str]):
        self.out_dir, self.env = out_dir, env
        #: name -> running process
        self.procs: Dict[str, subprocess.Popen] = {}
        self._logs = []

    def start(self, name: str, command: str, params_file: str) -> None:
        """Start ``retain-ros <command>`` with a parameter file, logged under ``name``."""
        log_path = os.path.join(self.out_dir, 'logs', f'{name}.log')
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log = open(log_path, 'w', encoding='utf-8')
        self._logs.append(log)
        argv = [sys.executable, '-m', 'retain_ros.cli', command,
                '--ros-args', '--params-file', params_file]
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env)

    def stop(self) -> None:
        """Stop every process (SIGINT, SIGKILL after 10 s) and close the logs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
