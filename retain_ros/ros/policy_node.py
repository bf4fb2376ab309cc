"""The ``retain_policy`` node: merged VLA policy in, action chunks out, alpha changeable live.

At startup the node reads its parameters, loads the pretrained and finetuned checkpoints, merges
them on the target device (``theta = (1 - alpha)*theta_pre + alpha*theta_ft``, alpha = weight on
the FINETUNED model), warms the policy up and starts acting:

- inputs: camera topics (``sensor_msgs/Image`` or ``CompressedImage``), the instruction
  (``std_msgs/String``, transient local) and ``sensor_msgs/JointState``; each subscription keeps
  only the latest message (a one-slot buffer); malformed messages are dropped and counted;
- inference (and, in stream mode, the fixed-rate command output) runs on the node's own threads
  (:class:`~retain_ros.control.control_loop.ControlLoop`), so a slow model step never blocks
  subscriptions, services or parameter changes; the executor only runs short callbacks;
- outputs: one ``trajectory_msgs/JointTrajectory`` chunk every ``replan_steps`` control periods,
  or (``output_mode: stream``) ``std_msgs/Float64MultiArray`` commands at ``1/control_period``
  from an action queue refilled before it runs dry; ``~/preview`` only when ``dry_run``;
- live alpha: setting ``alpha`` / ``alpha_vision`` / ``alpha_language`` / ``alpha_action`` /
  ``recipe`` re-merges the weights in place between two inference steps; the set succeeds only if
  the merge did. ``~/reload_weights`` re-reads the files with the same all-or-nothing rule;
- evaluation: ``~/start_episode`` / ``~/end_episode`` append one JSON line per episode, optionally
  walking an alpha schedule (seeded, block-shuffled, optionally blind);
- ``~/merge_state`` (JSON, transient local) and ``/diagnostics`` report what runs.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import functools
import json
import logging
import math
import os
import sys
import threading
import time
from typing import Any
from typing import Deque
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

from diagnostic_msgs.msg import DiagnosticArray
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_msgs.msg import KeyValue
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from rclpy.qos import HistoryPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import JointTrajectoryPoint

from retain_ros.policies.base import Observation
from retain_ros.ros import params as P
from retain_ros.control.control_loop import ControlLoop
from retain_ros.ros.conversions import ConversionError
from retain_ros.ros.conversions import is_compressed_topic
from retain_ros.ros.conversions import joint_state_to_vector
from retain_ros.ros.conversions import sec_to_duration
from retain_ros.ros.conversions import stamp_to_sec
from retain_ros.ros.conversions import to_rgb
from retain_ros.ros.node_main import run_node
from retain_ros.control.safety import limit_steps
from retain_ros.control.safety import make_safe
from retain_ros.control.safety import SafetyLimits
from retain_ros.control.safety import UnsafeChunkError

LOG = logging.getLogger(__name__)

NODE_NAME = 'retain_policy'
CONVENTION = ('theta = (1 - alpha)*theta_pre + alpha*theta_ft '
              '(alpha = weight on the FINETUNED model: 0 = pretrained, 1 = finetuned)')
#: latency samples kept for p50 / p99
LATENCY_WINDOW = 500
#: warm-up image side when the policy does not say
WARMUP_SIDE = 224

SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


class StartupError(RuntimeError):
    """The node cannot start (missing checkpoints, bad parameters); the message says why."""


@dataclass
class _Slot:
    """Latest message of one input, already converted."""

    value: Any
    recv: float          # time.monotonic() at arrival
    stamp: float         # header stamp (s), 0 when none
    convert_ms: float = 0.0


@dataclass
class StepTiming:
    """Timings of one inference step (kept for the benchmark and diagnostics).

    :param image_stamps: header stamps (s) of the camera images used.
    :param obs_ready: monotonic time the newest input of the observation arrived.
    :param start: monotonic time inference started.
    :param model_ms: ``policy.predict`` wall time.
    :param convert_ms: conversion time of the images used (spent in the subscription callbacks).
    :param post_ms: safety filter + message build (before publishing).
    :param published: monotonic time the chunk was handed to rclpy (stream mode: to the queue).
    """

    image_stamps: Tuple[float, ...]
    obs_ready: float
    start: float
    model_ms: float
    convert_ms: float
    post_ms: float
    published: float


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else math.nan


class PolicyNode(Node):
    """The ``retain_policy`` node (see the module docstring).

    :param policy: an already built policy (tests, benchmarks); None loads it from the parameters.
    :param merger: the live merger owning ``policy``'s weights (with ``policy``).
    :param kwargs: passed to :class:`rclpy.node.Node` (``context``, ``parameter_overrides``,
        ``namespace``, ``cli_args``...).
    :raises StartupError: when the checkpoints cannot be found or loaded or a parameter is invalid.
    """

    def __init__(self, policy=None, merger=None, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        P.declare_all(self)
        self._cfg: Dict[str, Any] = P.read_all(self)
        self._policy_lock = threading.RLock()
        self._io_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._images: Dict[str, _Slot] = {}
        self._joints: Optional[_Slot] = None
        self._instruction: Optional[str] = None
        self._joint_names: List[str] = list(self._cfg['joint_names'])
        self._dropped: Dict[str, int] = {}
        self._model_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._step_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.step_timings: Deque[StepTiming] = deque(maxlen=1000)
        self._hold_reason: Optional[str] = 'starting'
        self._chunks_published = 0
        self._stream_underruns = 0
        self._queue: Deque[np.ndarray] = deque()
        self._last_command: Optional[np.ndarray] = None
        self._last_error = ''

        self._log_convention()
        if policy is None:
            policy, merger = self._load()
        self._policy = policy
        self._merger = merger
        self._check_config()
        self._warm_up()
        self._setup_evaluation()
        self._setup_io()
        self._bag = None        # episode bags (retain_ros/ros/recording.py), when record is true
        if self._cfg['record']:
            from retain_ros.ros.recording import NodeRecorder
            self._bag = NodeRecorder(self, self._cfg)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._post_set_parameters)
        self._publish_merge_state()
        self._hold_reason = 'waiting for observations'
        for loop in self._loops:
            loop.start()
        self.get_logger().info(
            f'acting: {self._output_mode} mode, chunk H={self._horizon}, dt={self._dt:g} s, '
            f'replan every {self._replan_steps} step(s) -> '
            f'{"~/preview (dry_run)" if self._cfg["dry_run"] else self._cfg["output_topic"]}')

    # ------------------------------------------------------------------ startup
    def _log_convention(self) -> None:
        self.get_logger().info(f'alpha convention: {CONVENTION}')

    def _spec_from(self, values: Dict[str, Any]):
        from retain_ros.merging.spec import MergeSpec

        return MergeSpec(recipe=str(values['recipe']), alpha=float(values['alpha']),
                         group_alpha=P.group_overrides(values))

    def _resolve_checkpoints(self) -> Tuple[str, List[str]]:
        pretrained = str(self._cfg['pretrained_path']).strip()
        finetuned = [str(p) for p in self._cfg['finetuned_paths'] if str(p).strip()]
        if pretrained:
            if not finetuned:
                raise StartupError(
                    'finetuned_paths is empty: give at least one finetuned checkpoint to merge '
                    'with pretrained_path (e.g. -p finetuned_paths:=[/path/to/finetuned])')
            return pretrained, finetuned
        if finetuned:
            raise StartupError('finetuned_paths is set but pretrained_path is empty: give both')
        try:
            from retain_ros.demo.paths import demo_checkpoints
        except ImportError as exc:
            raise StartupError(
                f'pretrained_path is empty and the demo checkpoints are unavailable ({exc}); '
                "set pretrained_path / finetuned_paths or run 'retain-ros demo-train'") from exc
        try:
            found = demo_checkpoints()
        except Exception as exc:  # the demo module explains what is missing
            raise StartupError(
                f'pretrained_path is empty and the demo checkpoints are missing: {exc}. '
                "Make them with 'retain-ros demo-train', or set pretrained_path and "
                'finetuned_paths') from exc
        pretrained, finetuned = _split_demo(found)
        missing = [p for p in [pretrained] + finetuned if not os.path.exists(p)]
        if missing:
            raise StartupError(
                f'demo checkpoints missing: {missing}. Make them with \'retain-ros demo-train\', '
                'or set pretrained_path and finetuned_paths')
        self.get_logger().info(f'using the demo checkpoints: {pretrained} + {finetuned}')
        return pretrained, finetuned

    def _load(self):
        pretrained, finetuned = self._resolve_checkpoints()
        try:
            spec = self._spec_from(self._cfg)
        except Exception as exc:
            raise StartupError(f'invalid merge parameters: {exc}') from exc
        from retain_ros.policies.loader import load_merged_policy

        self.get_logger().info(
            f'loading pretrained={pretrained} finetuned={finetuned} on device='
            f'{self._cfg["device"]} dtype={self._cfg["dtype"]} '
            f'keep_sources={self._cfg["keep_sources"]}')
        t0 = time.perf_counter()
        try:
            policy, merger = load_merged_policy(
                pretrained, finetuned, spec, family=self._cfg['family'],
                device=self._cfg['device'], dtype=self._cfg['dtype'],
                keep_sources=self._cfg['keep_sources'],
                tokenizer_path=self._cfg['tokenizer_path'], warmup=False)
        except Exception as exc:
            raise StartupError(f'cannot load and merge the checkpoints: {exc}') from exc
        state = merger.state
        self.get_logger().info(
            f'loaded {getattr(policy, "name", "policy")} and merged in '
            f'{(time.perf_counter() - t0):.2f} s (merge {state.merge_ms:.1f} ms): '
            f'{self._describe_state(state)}')
        return policy, merger

    def _check_config(self) -> None:
        cfg = self._cfg
        self._output_mode = str(cfg['output_mode'])
        if self._output_mode not in P.OUTPUT_MODES:
            raise StartupError(
                f'output_mode {self._output_mode!r}: use one of {", ".join(P.OUTPUT_MODES)}')
        self._horizon = int(self._policy.chunk_size)
        period = float(cfg['control_period'])
        self._dt = period if period > 0 else float(self._policy.control_period)
        if not self._dt > 0:
            raise StartupError('control_period is 0 and the policy declares no period')
        self._replan_steps = int(cfg['replan_steps'])
        if self._replan_steps > self._horizon:
            self.get_logger().warning(
                f'replan_steps={self._replan_steps} exceeds the chunk length {self._horizon}; '
                f'replanning every {self._horizon} steps')
            self._replan_steps = self._horizon
        slots = list(self._policy.camera_names)
        topics = list(cfg['camera_topics'])
        if not topics:
            raise StartupError('camera_topics is empty; the policy needs at least one camera')
        if len(topics) != len(slots):
            raise StartupError(
                f'{len(topics)} camera_topics {topics} but the policy has {len(slots)} camera '
                f'slot(s) {slots}: give one topic per slot, in that order')
        self._camera_slots = dict(zip(topics, slots))
        try:
            self._limits_from(cfg).validate(len(self._joint_names) or None)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self.get_logger().info(
            'cameras: ' + ', '.join(f'{t} -> {s}' for t, s in self._camera_slots.items()))

    def _warm_up(self) -> None:
        images = {slot: np.zeros((WARMUP_SIDE, WARMUP_SIDE, 3), np.uint8)
                  for slot in self._camera_slots.values()}
        obs = Observation(images=images, instruction=self._cfg['default_instruction'] or 'warm up',
                          state=np.zeros(int(self._policy.state_dim), np.float64))
        t0 = time.perf_counter()
        with self._policy_lock:
            self._policy.predict(obs)
            self._policy.reset()
        self.get_logger().info(f'warm-up inference {(time.perf_counter() - t0) * 1e3:.1f} ms')

    def _setup_evaluation(self) -> None:
        from retain_ros.evaluation.episodes import EpisodeRecorder
        from retain_ros.evaluation.schedule import AlphaSchedule

        path = self._cfg['episode_log'] or P.default_episode_log()
        self._recorder = EpisodeRecorder(path)
        self._blind = bool(self._cfg['blind'])
        self._schedule = None
        settings = [s for s in self._cfg['alpha_schedule'] if str(s).strip()]
        if settings:
            try:
                self._schedule = AlphaSchedule(
                    settings, repeats=int(self._cfg['schedule_repeats']),
                    seed=int(self._cfg['schedule_seed']), blind=self._blind)
            except ValueError as exc:
                raise StartupError(f'alpha_schedule: {exc}') from exc
            self.get_logger().info(
                f'alpha schedule: {len(settings)} setting(s) x {self._schedule.repeats} = '
                f'{self._schedule.total} episodes'
                + (' (blind)' if self._blind else f': {settings}'))
        self.get_logger().info(f'episode log: {path}')

    def _setup_io(self) -> None:
        cfg = self._cfg
        for topic, slot in self._camera_slots.items():
            msg_type = CompressedImage if is_compressed_topic(topic) else Image
            self.create_subscription(
                msg_type, topic, functools.partial(self._camera_callback, topic, slot),
                SENSOR_QOS)
        self.create_subscription(JointState, cfg['joint_states_topic'],
                                 self._joint_state_callback, SENSOR_QOS)
        self.create_subscription(String, cfg['instruction_topic'], self._instruction_callback,
                                 LATCHED_QOS)
        out_type = JointTrajectory if self._output_mode == 'trajectory' else Float64MultiArray
        self._output_pub = self.create_publisher(out_type, cfg['output_topic'], 10)
        self._preview_pub = self.create_publisher(out_type, '~/preview', 10)
        self._merge_state_pub = self.create_publisher(String, '~/merge_state', LATCHED_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/reload_weights', self._reload_callback)
        self.create_service(Trigger, '~/start_episode', self._start_episode_callback)
        self.create_service(SetBool, '~/end_episode', self._end_episode_callback)
        self.create_timer(1.0, self._diagnostics_callback)
        # inference and command output on their own threads, started once everything is set up
        if self._output_mode == 'trajectory':
            self._loops = [ControlLoop('retain_policy.inference', self._replan_steps * self._dt,
                                       self._trajectory_step, self._loop_error)]
        else:
            self._loops = [
                ControlLoop('retain_policy.inference', self._dt, self._refill_step,
                            self._loop_error),
                ControlLoop('retain_policy.stream', self._dt, self._stream_step,
                            self._loop_error)]

    def _loop_error(self, exc: BaseException) -> bool:
        if not self.context.ok():
            return False        # shutting down: the publishers are gone, stop quietly
        self.get_logger().error(f'control loop step failed: {type(exc).__name__}: {exc}',
                                throttle_duration_sec=5.0)
        return True

    def destroy_node(self) -> None:
        """Stop the inference / streaming threads, then destroy the node."""
        for loop in getattr(self, '_loops', []):
            loop.stop()
        if getattr(self, '_bag', None) is not None:
            self._bag.shutdown()
        super().destroy_node()

    # ------------------------------------------------------------------ inputs
    def _drop(self, key: str, reason: str) -> None:
        with self._io_lock:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            count = self._dropped[key]
            self._last_error = f'{key}: {reason}'
        if count == 1 or count % 100 == 0:
            self.get_logger().warning(f'dropped {key} ({count} so far): {reason}')

    def _camera_callback(self, topic: str, slot: str, msg) -> None:
        t0 = time.perf_counter()
        try:
            rgb = to_rgb(msg)
        except ConversionError as exc:
            self._drop(f'image {topic}', str(exc))
            return
        recv = time.monotonic()
        entry = _Slot(rgb, recv, stamp_to_sec(msg.header.stamp),
                      (time.perf_counter() - t0) * 1e3)
        with self._io_lock:
            self._images[slot] = entry

    def _joint_state_callback(self, msg: JointState) -> None:
        with self._io_lock:
            names = list(self._joint_names)
        if not names:
            names = list(msg.name)
            if not names:
                self._drop('joint_states', 'joint_names is empty and the JointState has no names')
                return
            with self._io_lock:
                self._joint_names = names
            self.get_logger().info(f'joint order from the first JointState: {names}')
        try:
            positions = joint_state_to_vector(msg, names)
        except ConversionError as exc:
            self._drop('joint_states', str(exc))
            return
        with self._io_lock:
            self._joints = _Slot(positions, time.monotonic(), stamp_to_sec(msg.header.stamp))

    def _instruction_callback(self, msg: String) -> None:
        text = str(msg.data)
        with self._io_lock:
            changed = text != self._instruction
            self._instruction = text
        if changed:
            self.get_logger().info(f'instruction: {text!r}')

    def _observation(self) -> Tuple[Optional[Observation], Optional[str], Optional[StepTiming]]:
        """Assemble the latest observation, or say why the node must hold."""
        now = time.monotonic()
        max_age = float(self._cfg['max_observation_age'])
        with self._io_lock:
            images = dict(self._images)
            joints = self._joints
            instruction = self._instruction
            names = list(self._joint_names)
        missing = [t for t, s in self._camera_slots.items() if s not in images]
        if missing:
            return None, f'no image yet on {", ".join(missing)}', None
        if joints is None:
            return None, 'no joint_states yet', None
        for topic, slot in self._camera_slots.items():
            age = now - images[slot].recv
            if age > max_age:
                return None, f'stale image on {topic} ({age:.2f} s > {max_age:g} s)', None
        age = now - joints.recv
        if age > max_age:
            return None, f'stale joint_states ({age:.2f} s > {max_age:g} s)', None
        if not instruction:
            instruction = self._cfg['default_instruction']
        if not instruction:
            return None, ('no instruction: publish one on '
                          f'{self._cfg["instruction_topic"]} or set default_instruction'), None
        if joints.value.shape[0] != len(names):
            return None, 'joint state does not match joint_names', None
        used = [images[s] for s in self._camera_slots.values()]
        timing = StepTiming(
            image_stamps=tuple(s.stamp for s in used),
            obs_ready=max([s.recv for s in used] + [joints.recv]), start=now, model_ms=0.0,
            convert_ms=sum(s.convert_ms for s in used), post_ms=0.0, published=0.0)
        obs = Observation(images={s: images[s].value for s in self._camera_slots.values()},
                          instruction=instruction, state=joints.value.copy())
        return obs, None, timing

    def _set_hold(self, reason: Optional[str]) -> None:
        previous, self._hold_reason = self._hold_reason, reason
        if reason and (previous is None or previous.split(' (')[0] != reason.split(' (')[0]):
            # throttled: flapping inputs must not flood the log
            self.get_logger().warning(f'holding (no new commands): {reason}',
                                      throttle_duration_sec=5.0)
        elif reason is None and previous is not None:
            self.get_logger().info('observations fresh: acting', throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ inference
    def _infer(self) -> Optional[Tuple[np.ndarray, np.ndarray, StepTiming]]:
        """One inference step: observation -> safe chunk; None when holding or dropped."""
        obs, reason, timing = self._observation()
        if obs is None:
            self._set_hold(reason)
            return None
        self._set_hold(None)
        timing.start = time.monotonic()
        t0 = time.perf_counter()
        try:
            with self._policy_lock:
                chunk = self._policy.predict(obs)
        except Exception as exc:  # a bad input must not kill the inference thread
            self._drop('inference_error', f'{type(exc).__name__}: {exc}')
            return None
        timing.model_ms = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        try:
            safe = make_safe(chunk.actions, obs.state, self._limits_from(self._cfg),
                             dim=len(obs.state))
        except UnsafeChunkError as exc:
            self._drop('unsafe_chunk', str(exc))
            return None
        timing.post_ms = (time.perf_counter() - t1) * 1e3
        with self._io_lock:
            self._model_ms.append(timing.model_ms)
        return safe, obs.state, timing

    def _trajectory_step(self) -> None:
        result = self._infer()
        if result is None:
            return
        safe, _, timing = result
        t1 = time.perf_counter()
        with self._io_lock:
            names = list(self._joint_names)
        dt = self._dt
        msg = JointTrajectory(joint_names=names, points=[
            JointTrajectoryPoint(positions=row, time_from_start=sec_to_duration((i + 1) * dt))
            for i, row in enumerate(safe.tolist())])
        msg.header.stamp = self.get_clock().now().to_msg()
        timing.post_ms += (time.perf_counter() - t1) * 1e3
        timing.published = time.monotonic()
        self._publish(msg)
        self._finish_step(timing)

    def _finish_step(self, timing: StepTiming) -> None:
        with self._io_lock:
            self._chunks_published += 1
            self._step_ms.append((timing.published - timing.start) * 1e3)
            self.step_timings.append(timing)
        self._recorder.record_chunk(timing.model_ms)

    def _publish(self, msg) -> None:
        if self._cfg['dry_run']:
            self._preview_pub.publish(msg)
        else:
            self._output_pub.publish(msg)

    def _refill_step(self) -> None:
        with self._queue_lock:
            remaining = len(self._queue)
        if remaining > self._horizon - self._replan_steps:
            return
        result = self._infer()
        if result is None:
            if self._hold_reason:
                self._flush_queue()
            return
        safe, _, timing = result
        t1 = time.perf_counter()
        elapsed = time.monotonic() - timing.start
        skip = min(int(elapsed / self._dt), safe.shape[0] - 1)
        with self._queue_lock:
            self._queue = deque(np.array(row) for row in safe[skip:])
        timing.post_ms += (time.perf_counter() - t1) * 1e3
        timing.published = time.monotonic()
        self._finish_step(timing)

    def _stream_step(self) -> None:
        if self._hold_reason:
            self._flush_queue()
            return
        with self._queue_lock:
            action = self._queue.popleft() if self._queue else None
            last = self._last_command
        if action is None:
            with self._io_lock:
                self._stream_underruns += 1
            return
        limits = self._limits_from(self._cfg)
        if last is not None and last.shape == action.shape:
            action = limit_steps(action[None, :], last, limits.max_step)[0]
            action = make_safe(action, None, limits)[0]
        with self._queue_lock:
            self._last_command = action
        msg = Float64MultiArray()
        msg.data = [float(v) for v in action]
        self._publish(msg)

    def _flush_queue(self) -> None:
        with self._queue_lock:
            self._queue.clear()
            self._last_command = None

    @staticmethod
    def _limits_from(values: Dict[str, Any]) -> SafetyLimits:
        return SafetyLimits(lower=tuple(values['joint_lower_limits']),
                            upper=tuple(values['joint_upper_limits']),
                            max_step=float(values['max_joint_step']))

    # ------------------------------------------------------------------ merging
    def _describe_state(self, state) -> str:
        if self._cfg['blind']:
            return (f'recipe={state.recipe} alpha hidden (blind evaluation) '
                    f'fingerprint={state.fingerprint}')
        per = ', '.join(f'{g}={a:g}' for g, a in state.alphas.items())
        return (f'recipe={state.recipe} alpha (weight on finetuned) per group: {per}; '
                f'fingerprint={state.fingerprint}')

    def merge_state_dict(self) -> Dict[str, Any]:
        """``~/merge_state`` content: alpha per group (hidden when blind), recipe, fingerprint."""
        data = dict(self._merger.state.to_dict())
        data.setdefault('convention', CONVENTION)
        if self._cfg['blind']:
            data['alpha'] = 'hidden'
            data['blind'] = True
        return data

    def _publish_merge_state(self) -> None:
        self._merge_state_pub.publish(String(data=json.dumps(self.merge_state_dict())))

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        for name in P.GROUP_OF_PARAM:
            if name in changes:
                reason = P.check_group_alpha(name, float(changes[name]))
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        values = dict(self._cfg)
        values.update({k: _plain(v) for k, v in changes.items()})
        if {'joint_lower_limits', 'joint_upper_limits', 'max_joint_step'} & set(changes):
            try:
                self._limits_from(values).validate(len(self._joint_names) or None)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if not set(P.MERGE_PARAMS) & set(changes):
            return SetParametersResult(successful=True)
        try:
            spec = self._spec_from(values)
        except Exception as exc:
            return SetParametersResult(successful=False, reason=f'invalid merge: {exc}')
        if spec == self._merger.state.spec:
            return SetParametersResult(successful=True)     # these weights are already live
        if self._recorder.active:
            return SetParametersResult(
                successful=False,
                reason=(f'episode {self._recorder.episode_id} is running; end it before '
                        'changing the merge (its log line must describe one set of weights)'))
        try:
            with self._policy_lock:
                state = self._merger.apply(spec)
                self._policy.reset()
        except Exception as exc:
            reason = f'merge failed, previous weights still live: {exc}'
            self.get_logger().error(reason)
            return SetParametersResult(successful=False, reason=reason)
        self._flush_queue()
        self._cfg.update(values)
        self._publish_merge_state()
        self.get_logger().info(
            f're-merged in {state.merge_ms:.1f} ms: {self._describe_state(state)}')
        return SetParametersResult(successful=True)

    def _post_set_parameters(self, parameters: List[Parameter]) -> None:
        for p in parameters:
            self._cfg[p.name] = _plain(p.value)

    def _reload_callback(self, request, response):
        try:
            with self._policy_lock:
                state = self._merger.reload()
                self._policy.reset()
        except Exception as exc:
            response.success = False
            response.message = f'reload failed, previous weights still live: {exc}'
            self.get_logger().error(response.message)
            return response
        self._flush_queue()
        self._publish_merge_state()
        response.success = True
        response.message = json.dumps(self.merge_state_dict())
        self.get_logger().info(
            f'reloaded checkpoints, merged in {state.merge_ms:.1f} ms: '
            f'{self._describe_state(state)}')
        return response

    # ------------------------------------------------------------------ evaluation
    def _start_episode_callback(self, request, response):
        if self._recorder.active:
            response.success = False
            response.message = (f'episode {self._recorder.episode_id} is still running; call '
                                '~/end_episode first')
            return response
        label = ''
        if self._schedule is not None:
            try:
                setting = self._schedule.next()
            except StopIteration:
                response.success = False
                response.message = (f'alpha schedule exhausted ({self._schedule.total} '
                                    'episodes done)')
                return response
            label = self._schedule.label(setting)
            result = self.set_parameters_atomically(
                [Parameter(k, Parameter.Type.DOUBLE, float(v)) for k, v in setting.items()])
            if not result.successful:
                response.success = False
                response.message = f'cannot apply schedule setting {label}: {result.reason}'
                return response
        with self._policy_lock:
            self._policy.reset()
        self._flush_queue()
        state = self._merger.state
        with self._io_lock:
            instruction = self._instruction or self._cfg['default_instruction']
        episode_id = self._recorder.start(
            instruction, tag=self._cfg['episode_tag'], alphas=state.alphas,
            recipe=state.recipe, fingerprint=state.fingerprint, alpha_hidden=self._blind)
        if self._bag is not None:
            self._bag.start(episode_id, {'instruction': instruction, 'alpha': state.alphas,
                                         'recipe': state.recipe, 'tag': self._cfg['episode_tag'],
                                         'fingerprint': state.fingerprint})
        reply: Dict[str, Any] = {'episode_id': episode_id, 'tag': self._cfg['episode_tag'],
                                 'instruction': instruction}
        if label:
            reply['setting'] = label
            reply['remaining'] = self._schedule.remaining
        if not self._blind:
            reply['alpha'] = state.alphas
        reply['fingerprint'] = state.fingerprint
        response.success = True
        response.message = json.dumps(reply)
        self.get_logger().info(f'episode started: {response.message}')
        return response

    def _end_episode_callback(self, request, response):
        if not self._recorder.active:
            response.success = False
            response.message = 'no episode is running; call ~/start_episode first'
            return response
        recording, line = (self._bag.stop() if self._bag is not None else None), None
        try:
            line = self._recorder.end(bool(request.data), recording=recording)
        except OSError as exc:
            response.success = False
            response.message = f'cannot write the episode log: {exc}'
            return response
        finally:
            if self._bag is not None:
                self._bag.close(line)
        reply = {k: line.get(k) for k in ('episode_id', 'success', 'duration_s', 'chunks',
                                          'latency_ms', 'tag', 'recording')}
        if not self._blind:
            reply['alpha'] = line.get('alpha')
        response.success = True
        response.message = json.dumps(reply)
        self.get_logger().info(f'episode ended: {response.message}')
        return response

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_status(self) -> DiagnosticStatus:
        """One ``DiagnosticStatus`` with merge state, latency, ages and drop counts."""
        now = time.monotonic()
        with self._io_lock:
            model = list(self._model_ms)
            step = list(self._step_ms)
            images = dict(self._images)
            joints = self._joints
            dropped = dict(self._dropped)
            chunks = self._chunks_published
            underruns = self._stream_underruns
        hold = self._hold_reason
        status = DiagnosticStatus()
        status.name = f'{self.get_name()}: policy'
        status.hardware_id = self.get_fully_qualified_name()
        if hold:
            status.level = DiagnosticStatus.WARN
            status.message = f'holding: {hold}'
        else:
            status.level = DiagnosticStatus.OK
            status.message = 'acting' + (' (dry_run: ~/preview only)'
                                         if self._cfg['dry_run'] else '')
        values = {}
        merge = self.merge_state_dict()
        alpha = merge.get('alpha')
        if isinstance(alpha, dict):
            for group, value in alpha.items():
                values[f'alpha.{group}'] = f'{value:g}'
        else:
            values['alpha'] = str(alpha)
        values['recipe'] = str(merge.get('recipe'))
        values['fingerprint'] = str(merge.get('fingerprint'))
        values['merge_ms'] = f'{float(merge.get("merge_ms", math.nan)):.1f}'
        values['inference_ms.p50'] = f'{_percentile(model, 50):.1f}'
        values['inference_ms.p99'] = f'{_percentile(model, 99):.1f}'
        values['step_ms.p50'] = f'{_percentile(step, 50):.1f}'
        values['step_ms.p99'] = f'{_percentile(step, 99):.1f}'
        for topic, slot in self._camera_slots.items():
            entry = images.get(slot)
            values[f'age_s.{topic}'] = 'never' if entry is None else f'{now - entry.recv:.3f}'
        values[f'age_s.{self._cfg["joint_states_topic"]}'] = (
            'never' if joints is None else f'{now - joints.recv:.3f}')
        values['max_observation_age'] = f'{float(self._cfg["max_observation_age"]):g}'
        values['chunks_published'] = str(chunks)
        if self._output_mode == 'stream':
            values['stream_underruns'] = str(underruns)
        values['dropped_total'] = str(sum(dropped.values()))
        for key, count in sorted(dropped.items()):
            values[f'dropped.{key}'] = str(count)
        values['dry_run'] = str(bool(self._cfg['dry_run'])).lower()
        values['episode'] = self._recorder.episode_id or ''
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def _diagnostics_callback(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status()]
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ accessors
    @property
    def hold_reason(self) -> Optional[str]:
        """Why the node is holding, or None while it acts."""
        return self._hold_reason

    @property
    def dropped(self) -> Dict[str, int]:
        """Dropped-message counts by input / reason."""
        with self._io_lock:
            return dict(self._dropped)

    @property
    def policy(self):
        """The running policy."""
        return self._policy

    @property
    def merger(self):
        """The live merger."""
        return self._merger


def _plain(value: Any) -> Any:
    """Parameter value as plain Python (arrays become lists)."""
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    return list(value)


def _split_demo(found) -> Tuple[str, List[str]]:
    """Accept what ``demo_checkpoints()`` returns: a pair, or a mapping with the two paths."""
    if isinstance(found, dict):
        pretrained = found.get('pretrained') or found.get('generalist')
        finetuned = found.get('finetuned') or found.get('finetune')
    elif hasattr(found, 'pretrained'):
        pretrained, finetuned = found.pretrained, found.finetuned
    else:
        pretrained, finetuned = found
    if isinstance(finetuned, (str, os.PathLike)):
        finetuned = [finetuned]
    return os.fspath(pretrained), [os.fspath(f) for f in finetuned]


def _usage() -> str:
    lines = ['usage: retain-ros node [--ros-args -p NAME:=VALUE ... --params-file FILE]',
             '       ros2 run retain_ros policy_node [--ros-args ...]', '',
             f'Runs the {NODE_NAME} node. Alpha convention: {CONVENTION}.', '', 'parameters:']
    for spec in P.PARAMS:
        flag = ' (read-only)' if spec.read_only else ''
        lines.append(f'  {spec.name} [{spec.type.name.lower()}] default={spec.default!r}{flag}')
        lines.append(f'      {spec.description}')
    return '\n'.join(lines)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until shutdown.

    :param args: command-line arguments after the program name (``retain-ros node`` passes its
        remaining arguments); None uses ``sys.argv`` (``ros2 run retain_ros policy_node``).
    :return: process exit status.
    """
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    return run_node(NODE_NAME, PolicyNode, args, _usage, startup_errors=(StartupError,))


if __name__ == '__main__':
    sys.exit(main())
