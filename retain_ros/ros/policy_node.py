"""The ``retain_policy`` node: merged VLA policy in, action chunks out, alpha changeable live.

A managed lifecycle node (``rclpy.lifecycle``); with ``autostart`` (default) it configures and
activates itself, so ``ros2 launch`` / ``ros2 run`` act without manual transitions:

- **configure**: load the pretrained and finetuned checkpoints, merge them on the target device
  (``theta = (1 - alpha)*theta_pre + alpha*theta_ft``, alpha = weight on the FINETUNED model)
  into a :class:`~retain_ros.runtime.merged_policy.MergedPolicy`, warm it up. FAILURE (with the
  reason logged) leaves the node unconfigured;
- **activate**: subscriptions (:mod:`retain_ros.ros.node_inputs`), command publishers
  (:mod:`retain_ros.ros.node_outputs`) and the inference / streaming threads;
- **deactivate**: stop commanding: the threads stop, the stream queue is flushed and, in
  trajectory mode, a one-point hold ``JointTrajectory`` at the measured position (stamp 0)
  is sent (the arm holds its position instead of finishing the last chunk);
- **cleanup**: free the model (and the CUDA cache); **shutdown**: all of the above.

Live alpha: setting ``alpha`` / ``alpha_vision`` / ``alpha_language`` / ``alpha_action`` /
``recipe`` goes node -> ``MergedPolicy.set_spec`` -> ``LiveMerger.apply``; the set succeeds only
if the merge did, and no chunk computed with the previous weights is published or queued after
it returned (merge generations, checked under the lock the set takes). The merge runs on a
worker thread (:mod:`retain_ros.ros.worker_services`): the ``set_parameters`` call waits for it,
the executor keeps serving the node's other callbacks, and the node holds its commands meanwhile
(``/diagnostics``: "holding: re-merging ..."). A merge whose restore
failed leaves the weights inconsistent: the node holds, ``/diagnostics`` says ERROR, and only a
successful ``~/reload_weights`` makes it act again. ``~/merge_state`` (JSON, transient local),
``/diagnostics`` (:mod:`retain_ros.ros.node_diagnostics`) and the episode services
(:mod:`retain_ros.ros.node_episodes`) report what runs.
"""
from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from contextlib import nullcontext
from dataclasses import dataclass
import json
import logging
import os
import sys
import time
from typing import Any
from typing import Callable
from typing import Deque
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Tuple

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode
from rclpy.lifecycle import LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from retain_ros.control.control_loop import ControlLoop
from retain_ros.control.safety import LimitsError
from retain_ros.control.safety import make_safe
from retain_ros.control.safety import SafetyLimits
from retain_ros.control.safety import UnsafeChunkError
from retain_ros.control.safety import validate_limits
from retain_ros.merging.errors import MergeError
from retain_ros.ros import params as P
from retain_ros.ros.node_diagnostics import diagnostics_status
from retain_ros.ros.node_diagnostics import NodeStats
from retain_ros.ros.node_episodes import EpisodeServices
from retain_ros.ros.node_inputs import InputHub
from retain_ros.ros.node_inputs import LATCHED_QOS
from retain_ros.ros.node_inputs import ObservationInfo
from retain_ros.ros.node_inputs import SENSOR_QOS  # noqa: F401 - re-exported for callers
from retain_ros.ros.node_main import run_node
from retain_ros.ros.node_outputs import ActionQueue
from retain_ros.ros.node_outputs import build_trajectory
from retain_ros.ros.node_outputs import elapsed_steps
from retain_ros.ros.worker_services import run_on
from retain_ros.ros.worker_services import Worker
from retain_ros.ros.worker_services import WorkerParameterService
from retain_ros.runtime.merged_policy import ALPHA_CONVENTION
from retain_ros.runtime.merged_policy import MergedPolicy
from retain_ros.runtime.merged_policy import RuntimeInvalidError

LOG = logging.getLogger(__name__)

NODE_NAME = 'retain_policy'
#: the alpha convention, as logged at startup (one source: the merging engine's string)
CONVENTION = f'{ALPHA_CONVENTION}: 0 = pretrained, 1 = finetuned'
_LIMIT_PARAMS = ('joint_lower_limits', 'joint_upper_limits', 'max_joint_step')


class StartupError(RuntimeError):
    """The node cannot start (missing checkpoints, bad parameters); the message says why."""


@dataclass
class StepTiming:
    """Timings of one inference step (kept for the benchmark and diagnostics).

    :param image_stamps: header stamps (s) of the camera images used.
    :param obs_ready: monotonic time the newest input of the observation arrived.
    :param start: monotonic time inference started.
    :param model_ms: ``policy.predict`` wall time.
    :param convert_ms: conversion time of the images used (on the decode thread).
    :param post_ms: safety filter + message build (before publishing).
    :param published: monotonic time the chunk was handed to rclpy (stream mode: to the queue).
    :param obs_time: observation time on the node's clock (the chunk's stamp).
    """

    image_stamps: Tuple[float, ...]
    obs_ready: float
    start: float
    model_ms: float
    convert_ms: float
    post_ms: float
    published: float
    obs_time: float = 0.0


class PolicyNode(LifecycleNode):
    """The ``retain_policy`` node (see the module docstring).

    :param policy: an already built policy (tests, benchmarks); None loads it at configure.
    :param merger: the live merger owning ``policy``'s weights (with ``policy``).
    :param kwargs: passed to :class:`rclpy.lifecycle.LifecycleNode` (``context``,
        ``parameter_overrides``, ``namespace``, ``cli_args``...).
    :raises StartupError: with ``autostart``, when configure or activate fails (the reason), or
        when a parameter is invalid.
    """

    def __init__(self, policy=None, merger=None, **kwargs):
        self._runtime: Optional[MergedPolicy] = None
        self._inputs: Optional[InputHub] = None
        self._episodes: Optional[EpisodeServices] = None
        self._loops: List[ControlLoop] = []
        self._output_pub = None
        self._preview_pub = None
        self._rtc = None
        self._active = False
        self._limits_fault: Optional[str] = None
        self._hold_reason: Optional[str] = 'unconfigured'
        self._transition_error = ''
        self._given = (policy, merger)
        self._last_chunk: Optional[Tuple[np.ndarray, float]] = None
        #: fault-injection hook, called between predict and publish (tests)
        self.after_predict: Optional[Callable[[], None]] = None
        self._queue = ActionQueue()
        self.step_timings: Deque[StepTiming] = deque(maxlen=1000)
        #: what the merge worker is doing (None: idle); commands are held meanwhile
        self._busy: Optional[str] = None
        self._worker = Worker('retain-merge')
        parameter_services = kwargs.pop('start_parameter_services', True)
        super().__init__(NODE_NAME, start_parameter_services=False, **kwargs)
        self._slow_services = None
        if parameter_services:
            self._slow_services = WorkerParameterService(self, self._worker)
        P.declare_all(self)
        try:
            self._cfg = P.NodeConfig.from_values(P.read_all(self))
        except P.ConfigError as exc:
            super().destroy_node()
            raise StartupError(str(exc)) from exc
        self.stats = NodeStats(self.get_logger())
        self._merge_state_pub = self.create_publisher(String, '~/merge_state', LATCHED_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/reload_weights', self._reload_service,
                            callback_group=getattr(self._slow_services, 'callback_group', None))
        self.create_service(Trigger, '~/start_episode', self._start_episode_callback)
        self.create_service(SetBool, '~/end_episode', self._end_episode_callback)
        self._diag_timer = self.create_timer(1.0, self._diagnostics_callback)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._post_set_parameters)
        self.get_logger().info(f'alpha convention: {CONVENTION}')
        if self._cfg.autostart:
            self._autostart()

    def _autostart(self) -> None:
        for name, trigger in (('configure', self.trigger_configure),
                              ('activate', self.trigger_activate)):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                reason = self._transition_error or f'{name} failed'
                self.destroy_node()
                raise StartupError(reason)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load + merge + warm-up. FAILURE: the reason is logged; the node stays unconfigured."""
        try:
            self._configure()
        except Exception as exc:  # noqa: B902 - every failure is a FAILURE with its reason
            reason = str(exc) if isinstance(exc, StartupError) else (
                f'{type(exc).__name__}: {exc}')
            self._transition_error = reason
            self.get_logger().error(f'configure failed: {reason}')
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._hold_reason = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscriptions, command publishers, inference / streaming threads."""
        try:
            self._activate()
        except Exception as exc:  # noqa: B902
            self._transition_error = f'activate failed: {type(exc).__name__}: {exc}'
            self.get_logger().error(self._transition_error)
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop commanding: threads stopped, stream queue flushed, trajectory mode holds."""
        self._deactivate()
        self.get_logger().info('deactivated: not commanding (holding)')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model (and the CUDA cache)."""
        self._release()
        self.get_logger().info('cleaned up: model released')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything and free the model."""
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Back to unconfigured, model released."""
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state (``unconfigured``, ``inactive``, ``active``...)."""
        try:
            return str(self._state_machine.current_state[1])
        except AttributeError:
            return 'unknown'

    @property
    def is_active(self) -> bool:
        """Whether the node is active (commanding unless holding)."""
        return self._active

    # ------------------------------------------------------------------ configure
    def _spec_from(self, cfg: P.NodeConfig):
        from retain_ros.merging.spec import MergeSpec

        return MergeSpec(recipe=cfg.recipe, alpha=float(cfg.alpha),
                         group_alpha=P.group_overrides(cfg.to_values()))

    def _configure(self) -> None:
        cfg = self._cfg = P.NodeConfig.from_values(P.read_all(self))
        policy, merger = self._given
        if policy is None:
            policy, merger = self._load(cfg)
        self._runtime = MergedPolicy(policy, merger)
        self._check_config(cfg)
        ms = self._runtime.warm_up(cfg.default_instruction or 'warm up')
        self.get_logger().info(f'warm-up inference {ms:.1f} ms')
        try:
            self._episodes = EpisodeServices(self, cfg)
        except ValueError as exc:
            raise StartupError(f'alpha_schedule: {exc}') from exc
        if cfg.chunk_blending == 'rtc':
            from retain_ros.policies.rtc import RealTimeChunker

            self._rtc = RealTimeChunker(policy, execution_horizon=self._horizon)
        self._publish_merge_state()

    def _resolve_checkpoints(self, cfg: P.NodeConfig) -> Tuple[str, List[str]]:
        pretrained = cfg.pretrained_path.strip()
        finetuned = cfg.finetuned
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
        except Exception as exc:  # noqa: B902 - the demo module explains what is missing
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

    def _load(self, cfg: P.NodeConfig):
        pretrained, finetuned = self._resolve_checkpoints(cfg)
        try:
            spec = self._spec_from(cfg)
        except Exception as exc:  # noqa: B902
            raise StartupError(f'invalid merge parameters: {exc}') from exc
        from retain_ros.policies.loader import load_merged_policy

        self.get_logger().info(
            f'loading pretrained={pretrained} finetuned={finetuned} on device={cfg.device} '
            f'dtype={cfg.dtype} keep_sources={cfg.keep_sources}')
        t0 = time.perf_counter()
        try:
            policy, merger = load_merged_policy(
                pretrained, finetuned, spec, family=cfg.family, device=cfg.device,
                dtype=cfg.dtype, keep_sources=cfg.keep_sources,
                tokenizer_path=cfg.tokenizer_path, warmup=False)
        except Exception as exc:  # noqa: B902
            raise StartupError(f'cannot load and merge the checkpoints: {exc}') from exc
        state = merger.state
        self.get_logger().info(
            f'loaded {getattr(policy, "name", "policy")} and merged in '
            f'{(time.perf_counter() - t0):.2f} s (merge {state.merge_ms:.1f} ms): '
            f'{MergedPolicy(policy, merger).describe(cfg.blind)}')
        return policy, merger

    def _check_config(self, cfg: P.NodeConfig) -> None:
        policy = self._runtime.policy
        self._output_mode = cfg.output_mode
        self._horizon = int(policy.chunk_size)
        self._dt = cfg.control_period if cfg.control_period > 0 else float(policy.control_period)
        if not self._dt > 0:
            raise StartupError('control_period is 0 and the policy declares no period')
        self._replan_steps = int(cfg.replan_steps)
        if self._replan_steps > self._horizon:
            self.get_logger().warning(
                f'replan_steps={self._replan_steps} exceeds the chunk length {self._horizon}; '
                f'replanning every {self._horizon} steps')
            self._replan_steps = self._horizon
        slots = list(policy.camera_names)
        topics = list(cfg.camera_topics)
        if len(topics) != len(slots):
            raise StartupError(
                f'{len(topics)} camera_topics {topics} but the policy has {len(slots)} camera '
                f'slot(s) {slots}: give one topic per slot, in that order')
        self._camera_slots = dict(zip(topics, slots))
        if cfg.joint_names and len(cfg.joint_names) != int(policy.state_dim):
            raise StartupError(
                f'joint_names has {len(cfg.joint_names)} joint(s) {list(cfg.joint_names)} but the '
                f'policy state has {policy.state_dim} values')
        try:
            validate_limits(cfg.joint_lower_limits, cfg.joint_upper_limits,
                            list(cfg.joint_names) or None)
        except LimitsError as exc:
            raise StartupError(str(exc)) from exc
        self.get_logger().info(
            'cameras: ' + ', '.join(f'{t} -> {s}' for t, s in self._camera_slots.items()))

    # ------------------------------------------------------------------ activate / deactivate
    def _activate(self) -> None:
        if self._runtime is None:
            raise StartupError('not configured')
        cfg = self._cfg
        out_type = JointTrajectory if self._output_mode == 'trajectory' else Float64MultiArray
        self._output_pub = self.create_publisher(out_type, cfg.output_topic, 10)
        self._preview_pub = self.create_publisher(out_type, '~/preview', 10)
        self._inputs = InputHub(self, self._camera_slots, lambda: self._cfg, self.stats.drop,
                                self._check_joint_names)
        self._inputs.start()
        self._queue.flush()
        self._last_chunk = None
        if self._output_mode == 'trajectory':
            self._loops = [ControlLoop('retain_policy.inference', self._replan_steps * self._dt,
                                       self._trajectory_step, self._loop_error)]
        else:
            self._loops = [
                ControlLoop('retain_policy.inference', self._dt, self._refill_step,
                            self._loop_error),
                ControlLoop('retain_policy.stream', self._dt, self._stream_step,
                            self._loop_error)]
        self._hold_reason = 'waiting for observations'
        self._active = True
        for loop in self._loops:
            loop.start()
        self.get_logger().info(
            f'acting: {self._output_mode} mode, chunk H={self._horizon}, dt={self._dt:g} s, '
            f'replan every {self._replan_steps} step(s), chunk_blending={cfg.chunk_blending} -> '
            f'{"~/preview (dry_run)" if cfg.dry_run else cfg.output_topic}')

    def _deactivate(self) -> None:
        was_active = self._active
        self._active = False
        for loop in self._loops:
            loop.stop()
        self._loops = []
        self._queue.flush()
        self._last_chunk = None
        if was_active and self._output_mode == 'trajectory' and self._output_pub is not None \
                and self.context.ok():
            # joint_trajectory_controller rejects an empty trajectory: hold = one point at the
            # measured position, stamp 0 (start now), reached one control period later
            joints = getattr(self._inputs, '_joints', None)
            try:
                if joints is not None:
                    self._publish(build_trajectory(np.asarray(joints.value)[None],
                                                   self._joint_names(), 0.0, self._dt),
                                  force=True)
            except Exception:  # noqa: B902 - the context may be going away
                pass
        try:
            if self._inputs is not None:
                self._inputs.stop()
            for attr in ('_output_pub', '_preview_pub'):
                pub = getattr(self, attr)
                setattr(self, attr, None)
                if pub is not None:
                    self.destroy_publisher(pub)
        except Exception:  # noqa: B902 - tearing down on a context that is shutting down
            if self.context.ok():
                raise
        if self._runtime is not None:
            self._hold_reason = 'inactive'

    def _release(self) -> None:
        if self._episodes is not None and self._episodes.active:
            dropped = self._episodes.recorder.discard()
            self.get_logger().warning(f'episode {dropped} discarded (model released)')
        if self._episodes is not None:
            self._episodes.shutdown()
        self._episodes = None
        self._rtc = None
        if self._runtime is not None:
            self._runtime.release()
        self._runtime = None
        self._hold_reason = 'unconfigured'

    def _loop_error(self, exc: BaseException) -> bool:
        if not self.context.ok():
            return False        # shutting down: the publishers are gone, stop quietly
        self.get_logger().error(f'control loop step failed: {type(exc).__name__}: {exc}',
                                throttle_duration_sec=5.0)
        return True

    def destroy_node(self) -> None:
        """Stop the inference / streaming threads, then destroy the node."""
        self._deactivate()
        self._worker.stop()
        self._release()
        super().destroy_node()

    # ------------------------------------------------------------------ safety
    def _limits(self) -> SafetyLimits:
        cfg = self._cfg
        return SafetyLimits(lower=cfg.joint_lower_limits, upper=cfg.joint_upper_limits,
                            max_step=cfg.max_joint_step)

    def _joint_names(self) -> List[str]:
        if self._inputs is not None:
            return self._inputs.joint_names
        return list(self._cfg.joint_names)

    def _check_joint_names(self, names: List[str]) -> Optional[str]:
        """First JointState with ``joint_names`` empty: the limits must fit before acting."""
        cfg = self._cfg
        reason = None
        if len(names) != int(self._runtime.policy.state_dim):
            reason = (f'the JointState names {len(names)} joint(s) {names} but the policy state '
                      f'has {self._runtime.policy.state_dim} values: set joint_names')
        else:
            try:
                validate_limits(cfg.joint_lower_limits, cfg.joint_upper_limits, names)
            except LimitsError as exc:
                reason = f'{exc}; not acting until the limits are fixed'
        if reason and reason != self._limits_fault:
            self.get_logger().error(reason)
        self._limits_fault = reason
        return reason

    # ------------------------------------------------------------------ inference
    def _set_hold(self, reason: Optional[str]) -> None:
        previous, self._hold_reason = self._hold_reason, reason
        if reason and (previous is None or previous.split(' (')[0] != reason.split(' (')[0]):
            # throttled: flapping inputs must not flood the log
            self.get_logger().warning(f'holding (no new commands): {reason}',
                                      throttle_duration_sec=5.0)
        elif reason is None and previous is not None:
            self.get_logger().info('observations fresh: acting', throttle_duration_sec=5.0)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _guidance(self, info: ObservationInfo):
        last = self._last_chunk
        if self._rtc is None or last is None:
            return None
        actions, t_prev = last
        shift = int(round((info.time - t_prev) / self._dt))
        if shift < 0 or shift >= actions.shape[0]:
            return None
        try:
            return self._rtc.guidance_for(actions[shift:],
                                          self._rtc.latency.delay_steps(self._dt))
        except ValueError as exc:
            self.stats.drop('rtc_guidance', str(exc))
            return None

    def _infer(self):
        """One inference step: ``(safe, generation, info, timing)``, or None (holding/dropped)."""
        runtime = self._runtime
        if runtime is None or not self._active:
            return None
        busy = self._busy
        if busy:
            self._set_hold(busy)
            return None
        if not runtime.valid:
            self._set_hold(f'weights invalid: {runtime.invalid_reason}; call ~/reload_weights')
            return None
        if self._limits_fault:
            self._set_hold(self._limits_fault)
            return None
        obs, reason, info = self._inputs.observation()
        if obs is None:
            self._set_hold(reason)
            return None
        self._set_hold(None)
        timing = StepTiming(image_stamps=info.image_stamps, obs_ready=info.obs_ready,
                            start=time.monotonic(), model_ms=0.0, convert_ms=info.convert_ms,
                            post_ms=0.0, published=0.0, obs_time=info.time)
        guidance = self._guidance(info)
        t0 = time.perf_counter()
        try:
            chunk, generation = runtime.predict(obs, guidance=guidance)
        except RuntimeInvalidError as exc:
            self._set_hold(f'weights invalid: {exc}; call ~/reload_weights')
            return None
        except Exception as exc:  # noqa: B902 - a bad input must not kill the inference thread
            self.stats.drop('inference_error', f'{type(exc).__name__}: {exc}')
            return None
        timing.model_ms = (time.perf_counter() - t0) * 1e3
        if self._rtc is not None:
            self._rtc.latency.record(time.monotonic() - timing.start)
        hook = self.after_predict
        if hook is not None:
            hook()
        t1 = time.perf_counter()
        try:
            safe = make_safe(chunk.actions, obs.state, self._limits(), dim=len(obs.state))
        except UnsafeChunkError as exc:
            self.stats.drop('unsafe_chunk', str(exc))
            return None
        except ValueError as exc:   # limits that do not fit: never act on them
            self._limits_fault = f'joint limits unusable: {exc}'
            self.get_logger().error(self._limits_fault)
            return None
        timing.post_ms = (time.perf_counter() - t1) * 1e3
        with self.stats.lock:
            self.stats.model_ms.append(timing.model_ms)
        return safe, generation, info, timing

    def _late(self, info: ObservationInfo) -> Optional[int]:
        """Elapsed actions of a chunk from ``info``; None (dropped) when all of them passed."""
        skip = elapsed_steps(info.time, self._now(), self._dt)
        if skip >= self._horizon:
            self.stats.drop('late_chunk', f'every action of the chunk is in the past ({skip} '
                            f'periods elapsed since the observation, chunk of {self._horizon})')
            return None
        return skip

    def _trajectory_step(self) -> None:
        result = self._infer()
        if result is None:
            return
        safe, generation, info, timing = result
        if self._late(info) is None:
            return
        t1 = time.perf_counter()
        msg = build_trajectory(safe, self._joint_names(), info.time, self._dt)
        timing.post_ms += (time.perf_counter() - t1) * 1e3
        with self._runtime_current(generation) as ok:
            if ok:
                timing.published = time.monotonic()
                self._publish(msg)
                self._last_chunk = (safe, info.time)
        if not ok:
            self.stats.drop('stale_generation', 'chunk computed with weights replaced since')
            return
        self._finish_step(timing)

    def _runtime_current(self, generation: int):
        runtime = self._runtime
        if runtime is None or self._busy:
            return nullcontext(False)
        return runtime.current(generation)

    def _finish_step(self, timing: StepTiming) -> None:
        with self.stats.lock:
            self.stats.chunks_published += 1
            self.stats.step_ms.append((timing.published - timing.start) * 1e3)
            self.step_timings.append(timing)
        episodes = self._episodes
        if episodes is not None:
            episodes.recorder.record_chunk(timing.model_ms)

    def _publish(self, msg, force: bool = False) -> None:
        if not (self._active or force):
            return
        if self._cfg.dry_run:
            pub = self._preview_pub
        else:
            pub = self._output_pub
        if pub is not None:
            pub.publish(msg)

    def _refill_step(self) -> None:
        if len(self._queue) > self._horizon - self._replan_steps:
            return
        result = self._infer()
        if result is None:
            if self._hold_reason:
                self._queue.flush()
            return
        safe, generation, info, timing = result
        skip = self._late(info)
        if skip is None:
            return
        with self._runtime_current(generation) as ok:
            if ok:
                self._queue.replace(safe[skip:], generation)
                timing.published = time.monotonic()
                self._last_chunk = (safe, info.time)
        if not ok:
            self.stats.drop('stale_generation', 'chunk computed with weights replaced since')
            return
        self._finish_step(timing)

    def _stream_step(self) -> None:
        if self._hold_reason or not self._active:
            self._queue.flush()
            return
        action, generation, last = self._queue.pop()
        if action is None:
            with self.stats.lock:
                self.stats.stream_underruns += 1
            return
        if last is not None and last.shape == action.shape:
            action = make_safe(action[None, :], last, self._limits())[0]
        msg = Float64MultiArray()
        msg.data = [float(v) for v in action]
        with self._runtime_current(generation) as ok:
            if ok:
                self._publish(msg)
        if not ok:
            self._queue.flush()
            self.stats.drop('stale_generation', 'queued action of weights replaced since')
            return
        self._queue.sent(action)

    def flush_commands(self) -> None:
        """Drop queued actions and the chunk RTC would blend with (new weights, new episode)."""
        self._queue.flush()
        self._last_chunk = None

    # ------------------------------------------------------------------ merging
    def merge_state_dict(self) -> Dict[str, Any]:
        """``~/merge_state`` content (empty when not configured)."""
        runtime = self._runtime
        if runtime is None or runtime.merger is None:
            return {}
        return runtime.state_dict(blind=self._cfg.blind)

    def _publish_merge_state(self) -> None:
        data = self.merge_state_dict()
        if data:
            self._merge_state_pub.publish(String(data=json.dumps(data)))

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        changes = {p.name: _plain(p.value) for p in parameters}
        try:
            new = self._cfg.updated(changes)
        except P.ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if set(_LIMIT_PARAMS) & set(changes):
            try:
                validate_limits(new.joint_lower_limits, new.joint_upper_limits,
                                self._joint_names() or None)
            except LimitsError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        runtime = self._runtime
        if runtime is None or not set(P.MERGE_PARAMS) & set(changes):
            return SetParametersResult(successful=True)
        try:
            spec = self._spec_from(new)
        except Exception as exc:  # noqa: B902
            return SetParametersResult(successful=False, reason=f'invalid merge: {exc}')
        if not runtime.valid:
            return SetParametersResult(
                successful=False, reason=(f'weights invalid ({runtime.invalid_reason}): call '
                                          '~/reload_weights before changing the merge'))
        if spec == runtime.state.spec:
            return SetParametersResult(successful=True)     # these weights are already live
        if self._episodes is not None and self._episodes.active:
            return SetParametersResult(successful=False,
                                       reason=self._episodes.busy_reason('changing the merge'))
        try:
            with self._busy_while('re-merging the weights (alpha / recipe change)'):
                state = runtime.set_spec(spec)
        except RuntimeInvalidError as exc:
            self.flush_commands()
            reason = (f'merge failed and the previous weights could not be restored: {exc}. '
                      'Holding (no commands) until ~/reload_weights succeeds')
            self.get_logger().error(reason)
            return SetParametersResult(successful=False, reason=reason)
        except MergeError as exc:
            reason = f'merge failed, previous weights still live: {exc}'
            self.get_logger().error(reason)
            return SetParametersResult(successful=False, reason=reason)
        self.flush_commands()
        self._cfg = new
        self._publish_merge_state()
        self.get_logger().info(
            f're-merged in {state.merge_ms:.1f} ms: {runtime.describe(self._cfg.blind)}')
        return SetParametersResult(successful=True)

    def _post_set_parameters(self, parameters: List[Parameter]) -> None:
        self._cfg = self._cfg.updated({p.name: _plain(p.value) for p in parameters})

    @contextmanager
    def _busy_while(self, what: str) -> Iterator[None]:
        """Hold the commands (queue flushed, nothing published) while the weights change."""
        self._busy = what
        self.flush_commands()
        self._set_hold(what)
        try:
            yield
        finally:
            self._busy = None

    async def _reload_service(self, request, response):
        """``~/reload_weights``: the reload runs on the merge worker (see worker_services)."""
        return await run_on(self._worker, self, self._reload_callback, request, response)

    def _reload_callback(self, request, response):
        runtime = self._runtime
        response.success = False
        if runtime is None:
            response.message = f'not configured ({self.lifecycle_state}): nothing to reload'
            return response
        if self._episodes is not None and self._episodes.active:
            response.message = self._episodes.busy_reason('reloading the weights')
            return response
        was_valid = runtime.valid
        try:
            with self._busy_while('reloading the checkpoints'):
                state = runtime.reload()
        except Exception as exc:  # noqa: B902
            if runtime.valid:
                response.message = f'reload failed, previous weights still live: {exc}'
            else:
                response.message = (f'reload failed, the weights are still inconsistent '
                                    f'(holding): {exc}')
            self.get_logger().error(response.message)
            return response
        self.flush_commands()
        self._publish_merge_state()
        response.success = True
        response.message = json.dumps(self.merge_state_dict())
        self.get_logger().info(
            f'reloaded checkpoints, merged in {state.merge_ms:.1f} ms: '
            f'{runtime.describe(self._cfg.blind)}' + ('' if was_valid else '; acting again'))
        return response

    # ------------------------------------------------------------------ evaluation
    def _start_episode_callback(self, request, response):
        if self._episodes is None or self._busy:
            response.success = False
            response.message = (f'busy: {self._busy}' if self._busy else
                                f'not configured ({self.lifecycle_state})')
            return response
        return self._episodes.start_callback(request, response)

    def _end_episode_callback(self, request, response):
        if self._episodes is None:
            response.success = False
            response.message = 'no episode is running; call ~/start_episode first'
            return response
        return self._episodes.end_callback(request, response)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_status(self):
        """One ``DiagnosticStatus`` (see :mod:`retain_ros.ros.node_diagnostics`)."""
        return diagnostics_status(self)

    def _diagnostics_callback(self) -> None:
        if not self.context.ok():
            return
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status()]
        try:
            self._diag_pub.publish(msg)
        except Exception:  # noqa: B902 - the context went away between the check and here
            if self.context.ok():
                raise

    # ------------------------------------------------------------------ accessors
    @property
    def config(self) -> P.NodeConfig:
        """The validated configuration now in force."""
        return self._cfg

    @property
    def runtime(self) -> Optional[MergedPolicy]:
        """The merged policy (None when not configured)."""
        return self._runtime

    @property
    def inputs(self) -> Optional[InputHub]:
        """The inputs (None when not active)."""
        return self._inputs

    @property
    def episodes(self) -> Optional[EpisodeServices]:
        """The episode services (None when not configured)."""
        return self._episodes

    @property
    def fault(self) -> Optional[str]:
        """Why the node cannot act until someone intervenes (ERROR in diagnostics), or None."""
        runtime = self._runtime
        if runtime is not None and not runtime.valid and runtime.merger is not None:
            return f'weights invalid: {runtime.invalid_reason}; call ~/reload_weights'
        return self._limits_fault

    @property
    def hold_reason(self) -> Optional[str]:
        """Why the node is holding, or None while it acts."""
        return self._hold_reason

    @property
    def dropped(self) -> Dict[str, int]:
        """Dropped-message counts by input / reason."""
        with self.stats.lock:
            return dict(self.stats.dropped)

    @property
    def policy(self):
        """The running policy."""
        return None if self._runtime is None else self._runtime.policy

    @property
    def merger(self):
        """The live merger."""
        return None if self._runtime is None else self._runtime.merger


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
             f'Runs the {NODE_NAME} lifecycle node. Alpha convention: {CONVENTION}.', '',
             'parameters:']
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
