"""The ``retain_policy`` node: merged VLA policy in, commands to the robot's controllers out.

A managed lifecycle node (``rclpy.lifecycle``); with ``autostart`` (default) it configures and
activates itself, so ``ros2 launch`` / ``ros2 run`` act without manual transitions. This module
wires the lifecycle; each concern has its own module:

- **configure** (:mod:`retain_ros.runtime.startup`): load the pretrained and finetuned
  checkpoints, merge them on the target device (``theta = (1 - alpha)*theta_pre +
  alpha*theta_ft``, alpha = weight on the FINETUNED model), load the robot's embodiment
  (parameter ``embodiment``: :mod:`retain_ros.embodiment`), check that it fits the checkpoint,
  warm up. FAILURE (with the reason logged) leaves the node unconfigured;
- **activate**: subscriptions (:mod:`retain_ros.ros.node_inputs`), one publisher or action
  client per embodiment output (:mod:`retain_ros.ros.node_outputs`) and the inference /
  streaming threads running the acting steps (:mod:`retain_ros.runtime.acting`);
- **deactivate**: stop commanding: the threads stop, the queue is flushed, position outputs get
  a hold at the measured position, velocity and twist outputs zeros;
- **cleanup**: free the model (and the CUDA cache); **shutdown**: all of the above.

Live alpha and reloads: :mod:`retain_ros.ros.live_merge`. ``~/merge_state`` (JSON, transient
local), ``/diagnostics`` (:mod:`retain_ros.ros.node_diagnostics`) and the episode services
(:mod:`retain_ros.ros.node_episodes`) report what runs.
"""
from __future__ import annotations

from collections import deque
import json
import logging
import sys
from typing import Any
from typing import Callable
from typing import Deque
from typing import Dict
from typing import List
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode
from rclpy.lifecycle import LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger

from retain_ros.control.control_loop import ControlLoop
from retain_ros.ros import params as P
from retain_ros.ros.live_merge import LiveMergeMixin
from retain_ros.ros.node_embodiment import EmbodimentMixin
from retain_ros.ros.node_diagnostics import diagnostics_status
from retain_ros.ros.node_episodes import EpisodeServices
from retain_ros.ros.node_inputs import InputHub
from retain_ros.ros.node_inputs import LATCHED_QOS
from retain_ros.ros.node_main import run_node
from retain_ros.ros.node_outputs import Outputs
from retain_ros.ros.worker_services import Worker
from retain_ros.ros.worker_services import WorkerParameterService
from retain_ros.runtime.acting import Actor
from retain_ros.runtime.acting import StepTiming
from retain_ros.runtime.merged_policy import ALPHA_CONVENTION
from retain_ros.runtime.merged_policy import MergedPolicy
from retain_ros.runtime.startup import ActingPlan
from retain_ros.runtime.startup import load_pair
from retain_ros.runtime.startup import plan_acting
from retain_ros.runtime.startup import StartupError
from retain_ros.runtime.stats import NodeStats

LOG = logging.getLogger(__name__)

NODE_NAME = 'retain_policy'
#: the alpha convention, as logged at startup (one source: the merging engine's string)
CONVENTION = f'{ALPHA_CONVENTION}: 0 = pretrained, 1 = finetuned'

__all__ = ['PolicyNode', 'StartupError', 'LATCHED_QOS', 'NODE_NAME', 'main']


class PolicyNode(LiveMergeMixin, EmbodimentMixin, LifecycleNode):
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
        self._plan: Optional[ActingPlan] = None
        self._embodiment = None
        self._bound_names: Optional[List[str]] = None
        self._pending_embodiment = None
        self._inputs: Optional[InputHub] = None
        self._outputs: Optional[Outputs] = None
        self._actor: Optional[Actor] = None
        self._episodes: Optional[EpisodeServices] = None
        self._loops: List[ControlLoop] = []
        self._rtc = None
        self._active = False
        self._limits_fault: Optional[str] = None
        self._hold_reason: Optional[str] = 'unconfigured'
        self._transition_error = ''
        self._given = (policy, merger)
        #: fault-injection hook, called between predict and publish (tests)
        self.after_predict: Optional[Callable[[], None]] = None
        self.step_timings: Deque[StepTiming] = deque(maxlen=1000)
        #: what the merge worker is doing (None: idle); commands are held meanwhile
        self._busy: Optional[str] = None
        self._worker = Worker('retain-merge')
        parameter_services = kwargs.pop('start_parameter_services', True)
        super().__init__(NODE_NAME, start_parameter_services=False, **kwargs)
        self._slow_services = None
        if parameter_services:
            self._slow_services = WorkerParameterService(self, self._worker)
        try:
            P.declare_all(self)
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
        """Load + merge + embodiment + warm-up. FAILURE: the reason is logged; unconfigured."""
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
        """Subscriptions, command outputs, inference / streaming threads."""
        try:
            self._activate()
        except Exception as exc:  # noqa: B902 - every failure is a FAILURE with its reason
            self._transition_error = f'activate failed: {type(exc).__name__}: {exc}'
            self.get_logger().error(self._transition_error)
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop commanding: threads stopped, queue flushed, every output told to hold."""
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
    def _configure(self) -> None:
        cfg = self._cfg = P.NodeConfig.from_values(P.read_all(self))
        log = self.get_logger()
        self._bound_names = None
        embodiment = self._load_embodiment(cfg)
        policy, merger = self._given
        if policy is None:
            policy, merger = load_pair(cfg, log)
        self._runtime = MergedPolicy(policy, merger)
        self._embodiment = embodiment
        self._plan = plan_acting(cfg, policy, embodiment, log)
        log.info(f'embodiment {embodiment.name!r}: '
                 + ', '.join(f'{o.name} -> {o.type} {o.topic}' for o in embodiment.outputs))
        ms = self._runtime.warm_up(cfg.default_instruction or 'warm up')
        log.info(f'warm-up inference {ms:.1f} ms')
        try:
            self._episodes = EpisodeServices(self, cfg)
        except ValueError as exc:
            raise StartupError(f'alpha_schedule: {exc}') from exc
        if cfg.chunk_blending == 'rtc':
            from retain_ros.policies.rtc import RealTimeChunker

            self._rtc = RealTimeChunker(policy, execution_horizon=self._plan.horizon)
        self._publish_merge_state()

    # ------------------------------------------------------------------ activate / deactivate
    def _activate(self) -> None:
        if self._runtime is None or self._plan is None:
            raise StartupError('not configured')
        cfg, plan = self._cfg, self._plan
        self._outputs = Outputs(self, self._embodiment.outputs, plan.dt,
                                dry_run=lambda: self._cfg.dry_run, active=lambda: self._active)
        self._inputs = InputHub(self, plan.camera_topics, lambda: self._cfg,
                                lambda: self._embodiment, self.stats.drop, self._on_joint_names,
                                empty_cameras=plan.empty_cameras)
        actor = Actor(self._runtime, plan, self._inputs, self._outputs.publish, self.stats,
                      self.get_logger(), self._now, lambda: self._busy, rtc=self._rtc)
        actor.embodiment = self._embodiment
        actor.timings = self.step_timings
        actor.after_predict = self._after_predict
        actor.limits_fault = self._limits_fault
        if self._episodes is not None:
            actor.on_chunk = self._episodes.recorder.record_chunk
        self._actor = actor
        self._inputs.start()
        if plan.streams:
            self._loops = [
                ControlLoop('retain_policy.inference', plan.dt, actor.refill_step,
                            self._loop_error),
                ControlLoop('retain_policy.stream', plan.dt, actor.stream_step,
                            self._loop_error)]
        else:
            self._loops = [ControlLoop('retain_policy.inference', plan.replan_steps * plan.dt,
                                       actor.chunk_step, self._loop_error)]
        self._active = True
        for loop in self._loops:
            loop.start()
        self.get_logger().info(
            f'acting: chunk H={plan.horizon}, dt={plan.dt:g} s, replan every '
            f'{plan.replan_steps} step(s), chunk_blending={cfg.chunk_blending} -> '
            + ', '.join(self._outputs.topics()) + (' (dry_run)' if cfg.dry_run else ''))

    def _after_predict(self) -> None:
        hook = self.after_predict
        if hook is not None:
            hook()

    def _deactivate(self) -> None:
        was_active = self._active
        actor = self._actor
        if actor is not None:
            actor.active = False        # no new command from a step still running
        for loop in self._loops:
            loop.stop()
        self._loops = []
        if actor is not None:
            actor.flush()
            if was_active and self.context.ok():
                # joint_trajectory_controller rejects an empty trajectory: hold = one point at
                # the measured position, stamp 0 (start now); velocity outputs get zeros
                try:
                    actor.send_hold()
                except Exception:  # noqa: B902 - the context may be going away
                    if self.context.ok():
                        raise
        self._active = False
        self._actor = None
        try:
            if self._inputs is not None:
                self._inputs.stop()
            if self._outputs is not None:
                outputs, self._outputs = self._outputs, None
                outputs.close()
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
        self._plan = None
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

    # ------------------------------------------------------------------ acting
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _set_hold(self, reason: Optional[str]) -> None:
        if self._actor is not None:
            self._actor.set_hold(reason)

    def flush_commands(self) -> None:
        """Drop queued actions and the chunk RTC would blend with (new weights, new episode)."""
        if self._actor is not None:
            self._actor.flush()

    # ------------------------------------------------------------------ merging
    def merge_state_dict(self) -> Dict[str, Any]:
        """``~/merge_state`` content (empty when not configured)."""
        runtime = self._runtime
        if runtime is None or runtime.merger is None:
            return {}
        return runtime.state_dict(blind=self._cfg.blind)

    def _publish_merge_state(self) -> None:
        data = self.merge_state_dict()
        if data and self.context.ok():      # a signal may have shut the context down
            self._merge_state_pub.publish(String(data=json.dumps(data)))

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
        actor = self._actor
        if actor is not None and self._active:
            return actor.hold_reason
        return self._hold_reason

    @property
    def embodiment(self):
        """The robot's :class:`~retain_ros.embodiment.Embodiment` (None when not configured)."""
        return self._embodiment

    @property
    def plan(self) -> Optional[ActingPlan]:
        """The acting plan (None when not configured)."""
        return self._plan

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
