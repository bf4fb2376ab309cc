"""Acting without ROS: observation -> merged policy -> embodiment -> safety -> ``publish``.

One :class:`Actor` per active node. Its steps run on the node's own threads
(:class:`~retain_ros.control.control_loop.ControlLoop`) and hand finished commands to a
``publish(output, values, stamp)`` function given by the ROS layer:

- **chunk step** (:meth:`Actor.chunk_step`, every ``replan_steps`` periods when no output
  streams): one inference; every ``joint_trajectory`` output gets the whole chunk, stamped at
  the observation time (``values`` ``(H, n)``; the ROS layer sets ``time_from_start = (i+1)·dt``);
- **refill step** (:meth:`Actor.refill_step`, every period when an output streams): a new chunk
  when the stream queue runs low; trajectory outputs are published at once, the stream outputs'
  rows replace the queue (actions whose time already passed are dropped);
- **stream step** (:meth:`Actor.stream_step`, every period): one row per stream output
  (``values`` ``(n,)``, ``stamp`` None).

A chunk travels policy actions (the policy's units) -> the embodiment's maths (units, relative /
velocity / gripper semantics, anchored at the state *at the observation*) -> safety per output in
that output's own space (:func:`retain_ros.control.output_safety.safe_command`) -> ``publish``.
Every output of one chunk carries the same observation stamp and merge generation; nothing of a
generation replaced since (a live alpha change, a reload) is published on any output.

Holding (stale or missing input, weights changing or invalid, limits unusable): position outputs
are sent the measured position once (a one-point trajectory stamped 0 = "start now"; one stream
row), velocity and twist outputs get zeros on every stream period, never the last command.
"""
from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
import math
import threading
import time
from typing import Callable
from typing import Deque
from typing import Dict
from typing import Optional
from typing import Tuple

import numpy as np

from retain_ros.control.output_safety import safe_command
from retain_ros.control.safety import UnsafeChunkError
from retain_ros.embodiment import OutputCommand
from retain_ros.embodiment.spec import POSITION_OUTPUTS
from retain_ros.embodiment.spec import VELOCITY_OUTPUTS
from retain_ros.runtime.merged_policy import RuntimeInvalidError

#: ``publish(output_name, values, stamp)``: stamp = observation time (s) for a chunk, 0.0 for a
#: hold trajectory ("start now"), None for a stream row
Publish = Callable[[str, np.ndarray, Optional[float]], None]


def elapsed_steps(obs_time: float, now: float, dt: float) -> int:
    """Actions of a chunk stamped ``obs_time`` whose time has passed at ``now``.

    Action ``i`` is for ``obs_time + (i + 1) * dt``; it has passed when that is ``<= now``.
    """
    if not dt > 0:
        raise ValueError(f'dt must be > 0, got {dt}')
    return max(0, int(math.floor((now - obs_time) / dt + 1e-9)))


@dataclass
class StepTiming:
    """Timings of one inference step (kept for the benchmark and diagnostics).

    :param image_stamps: header stamps (s) of the camera images used.
    :param obs_ready: monotonic time the newest input of the observation arrived.
    :param start: monotonic time the step had its observation (after ``observe_ms``).
    :param model_ms: ``policy.predict`` wall time.
    :param convert_ms: conversion time of the images used (on the decode thread).
    :param post_ms: embodiment maths + safety filter + message build (before publishing).
    :param published: monotonic time the chunk's publish calls returned (stream mode: it was
        queued).
    :param obs_time: observation time on the node's clock (the chunk's stamp).
    :param observe_ms: reading the inputs into an observation (checks, state vector): the
        step's first part, just before ``start``.
    """

    image_stamps: Tuple[float, ...]
    obs_ready: float
    start: float
    model_ms: float
    convert_ms: float
    post_ms: float
    published: float
    obs_time: float = 0.0
    observe_ms: float = 0.0


class ActionQueue:
    """The stream outputs' queue: one row per control period, tagged with its merge generation."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queue: Deque[Tuple[Dict[str, np.ndarray], int]] = deque()
        self._last: Dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def replace(self, rows: Dict[str, np.ndarray], generation: int) -> None:
        """Replace the queue by ``rows`` (output -> ``(H, n)``), all of one generation."""
        steps = min((len(v) for v in rows.values()), default=0)
        with self._lock:
            self._queue = deque(({k: np.array(v[i]) for k, v in rows.items()}, generation)
                                for i in range(steps))

    def pop(self) -> Tuple[Optional[Dict[str, np.ndarray]], int, Dict[str, np.ndarray]]:
        """``(row, generation, last_sent)``; row None when empty."""
        with self._lock:
            if not self._queue:
                return None, 0, dict(self._last)
            row, generation = self._queue.popleft()
            return row, generation, dict(self._last)

    def sent(self, row: Dict[str, np.ndarray]) -> None:
        """Remember the last commands sent: position streams chain their step limit from them."""
        with self._lock:
            self._last = dict(row)

    def flush(self) -> None:
        """Drop every queued row and forget the last commands."""
        with self._lock:
            self._queue.clear()
            self._last = {}


class Actor:
    """The acting steps of the policy node (see the module docstring).

    :param runtime: the :class:`~retain_ros.runtime.merged_policy.MergedPolicy`.
    :param plan: the :class:`~retain_ros.runtime.startup.ActingPlan`.
    :param inputs: ``observation() -> (obs, reason, info)`` and ``robot_state()`` (the latest
        measured :class:`~retain_ros.embodiment.RobotState`, or None).
    :param publish: the ROS layer's :data:`Publish`.
    :param stats: the node's statistics (``drop``, ``lock``, ``model_ms``, ``step_ms``...).
    :param log: a logger with ``info`` / ``warning`` / ``error`` (rclpy's or ``logging``'s).
    :param now: the node clock in seconds.
    :param busy: returns what the merge worker is doing (None when idle).
    """

    def __init__(self, runtime, plan, inputs, publish: Publish, stats, log,
                 now: Callable[[], float], busy: Callable[[], Optional[str]], rtc=None):
        self.runtime = runtime
        self.plan = plan
        self.embodiment = plan.embodiment
        self._inputs = inputs
        self._publish = publish
        self.stats = stats
        self._log = log
        self._now = now
        self._busy = busy
        self.rtc = rtc
        self.queue = ActionQueue()
        self.hold_reason: Optional[str] = 'waiting for observations'
        self.limits_fault: Optional[str] = None
        self.last_chunk: Optional[Tuple[np.ndarray, float]] = None
        self.active = True
        self.timings: Deque[StepTiming] = deque(maxlen=1000)
        #: fault-injection hook, called between predict and publish (tests)
        self.after_predict: Optional[Callable[[], None]] = None
        #: called after every published chunk with its model time (episode statistics)
        self.on_chunk: Optional[Callable[[float], None]] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ outputs by kind
    @property
    def chunk_outputs(self) -> list:
        """Outputs that take the whole chunk (``joint_trajectory``)."""
        return [o for o in self.embodiment.outputs if o.type == 'joint_trajectory']

    @property
    def stream_outputs(self) -> list:
        """Outputs that take one row per control period."""
        return [o for o in self.embodiment.outputs if o.type != 'joint_trajectory']

    # ------------------------------------------------------------------ holding
    def set_hold(self, reason: Optional[str]) -> None:
        """Hold (reason) or act (None); entering a hold sends every output its hold command."""
        with self._lock:
            previous, self.hold_reason = self.hold_reason, reason
        if reason and (previous is None or previous.split(' (')[0] != reason.split(' (')[0]):
            # throttled: flapping inputs must not flood the log
            self._log.warning(f'holding (no new commands): {reason}', throttle_duration_sec=5.0)
        elif reason is None and previous is not None:
            self._log.info('observations fresh: acting', throttle_duration_sec=5.0)
        if reason and previous is None:
            self.flush()
            self.send_hold()

    def send_hold(self, zeros_only: bool = False) -> None:
        """Hold commands: the measured position to position outputs, zeros to velocity ones.

        :param zeros_only: only the velocity / twist outputs (sent every period while holding).
        """
        state = self._inputs.robot_state()
        for out in self.embodiment.outputs:
            if (zeros_only and out.type not in VELOCITY_OUTPUTS) or not out.names:
                continue
            if state is None and out.type not in VELOCITY_OUTPUTS:
                continue
            try:
                values = self.embodiment.hold(out.name, state)
            except Exception as exc:  # noqa: B902 - one output's failure must not stop the others
                # broad on purpose: this also runs on deactivate, where every other output must
                # still get its hold; the failure is counted and logged as a dropped 'hold'
                self.stats.drop('hold', f'{out.name}: {type(exc).__name__}: {exc}')
                continue
            if values is None:
                continue
            values = np.asarray(values, dtype=np.float64)
            if out.type == 'joint_trajectory':
                self._publish(out.name, values.reshape(1, -1), 0.0)
            else:
                self._publish(out.name, values.reshape(-1), None)

    def flush(self) -> None:
        """Drop queued actions and the chunk RTC would blend with (new weights, new episode)."""
        self.queue.flush()
        self.last_chunk = None
        reset = getattr(self.embodiment, 'reset', None)
        if reset is not None:
            reset()

    # ------------------------------------------------------------------ inference
    def _guidance(self, info):
        last = self.last_chunk
        if self.rtc is None or last is None:
            return None
        actions, t_prev = last
        shift = int(round((info.time - t_prev) / self.plan.dt))
        if shift < 0 or shift >= actions.shape[0]:
            return None
        try:
            return self.rtc.guidance_for(actions[shift:],
                                         self.rtc.latency.delay_steps(self.plan.dt))
        except ValueError as exc:
            self.stats.drop('rtc_guidance', str(exc))
            return None

    def infer(self):
        """One inference step: ``(commands, generation, info, timing, raw)``, or None (held)."""
        runtime = self.runtime
        if not self.active:
            return None
        busy = self._busy()
        reason = None
        if busy:
            reason = busy
        elif not runtime.valid:
            reason = f'weights invalid: {runtime.invalid_reason}; call ~/reload_weights'
        elif self.limits_fault:
            reason = self.limits_fault
        if reason:
            self.set_hold(reason)
            return None
        t_obs = time.perf_counter()
        obs, reason, info = self._inputs.observation()
        if obs is None:
            self.set_hold(reason)
            return None
        observe_ms = (time.perf_counter() - t_obs) * 1e3
        self.set_hold(None)
        timing = StepTiming(image_stamps=info.image_stamps, obs_ready=info.obs_ready,
                            start=time.monotonic(), model_ms=0.0, convert_ms=info.convert_ms,
                            post_ms=0.0, published=0.0, obs_time=info.time,
                            observe_ms=observe_ms)
        guidance = self._guidance(info)
        t0 = time.perf_counter()
        try:
            chunk, generation = runtime.predict(obs, guidance=guidance)
        except RuntimeInvalidError as exc:
            self.set_hold(f'weights invalid: {exc}; call ~/reload_weights')
            return None
        except Exception as exc:  # noqa: B902 - a bad input must not kill the inference thread
            # broad on purpose: the policy is model code that may raise anything on one input;
            # counted as 'inference_error' (its type and message in /diagnostics) and skipped
            self.stats.drop('inference_error', f'{type(exc).__name__}: {exc}')
            return None
        timing.model_ms = (time.perf_counter() - t0) * 1e3
        if self.rtc is not None:
            self.rtc.latency.record(time.monotonic() - timing.start)
        hook = self.after_predict
        if hook is not None:
            hook()
        t1 = time.perf_counter()
        commands = self._commands(chunk.actions, info)
        if commands is None:
            return None
        timing.post_ms = (time.perf_counter() - t1) * 1e3
        with self.stats.lock:
            self.stats.model_ms.append(timing.model_ms)
        return commands, generation, info, timing, np.asarray(chunk.actions, dtype=np.float64)

    def _commands(self, actions: np.ndarray, info) -> Optional[Dict[str, np.ndarray]]:
        """Return the safe commands of every output, or None (the chunk is dropped, with why)."""
        emb = self.embodiment
        try:
            raw = emb.commands(np.asarray(actions, dtype=np.float64), info.robot, self.plan.dt)
        except ValueError as exc:   # EmbodimentError and the rotation maths' errors
            self.stats.drop('unsafe_chunk', f'{type(exc).__name__}: {exc}')
            return None
        out: Dict[str, np.ndarray] = {}
        for spec in emb.outputs:
            cmd = raw[spec.name]
            try:
                # the limits fit the output's joints: checked when the embodiment was loaded
                out[spec.name] = safe_command(cmd, spec.limits, _measured(info.robot, cmd),
                                              self.plan.dt)
            except UnsafeChunkError as exc:
                self.stats.drop('unsafe_chunk', f'{spec.name}: {exc}')
                return None
        return out

    def _late(self, info) -> Optional[int]:
        """Elapsed actions of a chunk from ``info``; None (dropped) when all of them passed."""
        skip = elapsed_steps(info.time, self._now(), self.plan.dt)
        if skip >= self.plan.horizon:
            self.stats.drop('late_chunk', f'every action of the chunk is in the past ({skip} '
                            f'periods elapsed since the observation, chunk of '
                            f'{self.plan.horizon})')
            return None
        return skip

    def current(self, generation: int):
        """Context manager: True while ``generation``'s weights are live and nothing is busy."""
        if self._busy():
            return nullcontext(False)
        return self.runtime.current(generation)

    # ------------------------------------------------------------------ steps
    def chunk_step(self) -> None:
        """Trajectory outputs only: one inference, the chunk published on every output."""
        self._new_chunk(stream=False)

    def refill_step(self) -> None:
        """Infer a new chunk when the stream queue runs low (see the module docstring)."""
        if len(self.queue) > self.plan.horizon - self.plan.replan_steps:
            return
        self._new_chunk(stream=True)

    def _new_chunk(self, stream: bool) -> None:
        result = self.infer()
        if result is None:
            if stream and self.hold_reason:
                self.queue.flush()
            return
        commands, generation, info, timing, raw = result
        skip = self._late(info)
        if skip is None:
            return
        with self.current(generation) as ok:
            if ok:
                for out in self.chunk_outputs:
                    self._publish(out.name, commands[out.name], info.time)
                if stream:
                    self.queue.replace({o.name: commands[o.name][skip:]
                                        for o in self.stream_outputs}, generation)
                timing.published = time.monotonic()
                self.last_chunk = (raw, info.time)
        if not ok:
            self.stats.drop('stale_generation', 'chunk computed with weights replaced since')
            return
        self._finish(timing)

    def stream_step(self) -> None:
        """One row per stream output; zeros to velocity outputs while holding."""
        if self.hold_reason or not self.active:
            self.queue.flush()
            if self.active and self.hold_reason:
                self.send_hold(zeros_only=True)
            return
        row, generation, last = self.queue.pop()
        if row is None:
            with self.stats.lock:
                self.stats.stream_underruns += 1
            return
        safe: Dict[str, np.ndarray] = {}
        for out in self.stream_outputs:
            value = row[out.name]
            previous = last.get(out.name)
            if out.type in POSITION_OUTPUTS and previous is not None \
                    and previous.shape == value.shape:
                # the step limit chains from the last command sent, as on the chunk
                row_cmd = OutputCommand(out.name, out.type, out.topic, out.names, value[None, :])
                value = safe_command(row_cmd, out.limits, previous, self.plan.dt)[0]
            safe[out.name] = value
        with self.current(generation) as ok:
            if ok:
                for name, value in safe.items():
                    self._publish(name, value, None)
        if not ok:
            self.queue.flush()
            self.stats.drop('stale_generation', 'queued action of weights replaced since')
            return
        self.queue.sent(safe)

    def _finish(self, timing: StepTiming) -> None:
        with self.stats.lock:
            self.stats.chunks_published += 1
            self.stats.step_ms.append((timing.published - timing.start) * 1e3)
        self.timings.append(timing)
        if self.on_chunk is not None:
            self.on_chunk(timing.model_ms)


def _measured(robot, cmd) -> Optional[np.ndarray]:
    """Return the measured positions of ``cmd``'s joints at the observation (chains' start).

    A joint with no measured position (a gripper whose state is not published) starts its
    chain at its own first command; None when no joint of the output is measured.
    """
    joints = getattr(robot, 'joints', None) or {}
    names = list(cmd.names)
    if not names or not any(n in joints for n in names):
        return None
    first = np.asarray(cmd.values, dtype=np.float64).reshape(-1, len(names))[0]
    return np.array([joints.get(n, first[i]) for i, n in enumerate(names)], dtype=np.float64)
