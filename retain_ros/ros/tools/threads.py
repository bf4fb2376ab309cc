"""Where a process spends its CPU: CPU seconds per thread, and sampled stacks per thread.

Linux only (``/proc/self/task``); used by the load measurement of
:mod:`retain_ros.ros.tools.input_load` and its benchmark's ``--profile``.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Dict


def thread_cpu() -> Dict[str, float]:
    """CPU seconds per thread of this process (Linux), by Python thread name or OS name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf('SC_CLK_TCK')
    out: Dict[str, float] = {}
    try:
        tids = os.listdir('/proc/self/task')
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f'/proc/self/task/{tid}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index('(') + 1:stat.rindex(')')]
        fields = stat[stat.rindex(')') + 2:].split()
        label = names.get(int(tid), comm)
        out[label] = out.get(label, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


class StackSampler:
    """Where each thread is, sampled every ``period`` s (``--profile``): top frames by thread."""

    def __init__(self, period: float = 0.01):
        self.counts: Dict[str, Dict[str, int]] = {}
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='stack-sampler', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self._period):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                where = []
                while frame is not None and len(where) < 3:
                    code = frame.f_code
                    where.append(f'{os.path.basename(code.co_filename)}:{code.co_name}:'
                                 f'{frame.f_lineno}')
                    frame = frame.f_back
                per = self.counts.setdefault(names.get(ident, str(ident)), {})
                key = ' < '.join(where)
                per[key] = per.get(key, 0) + 1

    def report(self, top: int = 6) -> str:
        self._stop.set()
        self._thread.join(1.0)
        lines = []
        for name, per in self.counts.items():
            total = sum(per.values())
            lines.append(f'  thread {name} ({total} samples):')
            for key, n in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
                lines.append(f'    {n * 100 / total:5.1f}% {key}')
        return '\n'.join(lines)
