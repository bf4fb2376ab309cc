"""The ``retain_policy`` node: merged VLA policy in, commands to the robot's controllers out.

A managed lifecycle node (``rclpy.lifecycle``); with ``autostart`` (default) it configures and
activates itself, so ``ros2 launch`` / ``ros2 run`` act without manual transitions. This module
wires the lifecycle; each concern has its own module:

- **configure** (:mod:`retain_ros.runtime.startup`): load the pretrained and finetuned
  checkpoints, merge them on the target device (``theta = (1 - alpha)*theta_pre +
  alpha*theta_ft``, alpha = weight on the FINETUNED model), load the robot's embodiment
  (parameter ``embodiment``: :mod:`.embodiment`), check that it fits the checkpoint, warm up.
  FAILURE (with the reason logged) leaves the node unconfigured;
- **activate**: subscriptions (:mod:`.inputs`), one publisher or action client per embodiment
  output (:mod:`.outputs`) and the inference / streaming threads running the acting steps
  (:mod:`retain_ros.runtime.acting`);
- **deactivate**: stop commanding: the threads stop, the queue is flushed, position outputs get
  a hold at the measured position, velocity and twist outputs zeros;
- **cleanup**: free the model (and the CUDA cache); **shutdown**: all of the above.

Parameters: :mod:`.params` (table), :mod:`.declare`, :mod:`.config` (typed, validated). Live alpha
and reloads: :mod:`.live_merge`. ``~/merge_state`` (JSON, transient local), ``/diagnostics``
(:mod:`.diagnostics`) and the episode services (:mod:`.episodes`) report what runs; read-only
views of the node's state: :mod:`.accessors`. Command line: :mod:`.main`.
"""
from __future__ import annotations

from collections import deque
import json
import traceback
from typing import Callable
from typing import Deque
from typing import List
from typing import Optional

from rclpy.lifecycle import LifecycleNode
from rclpy.lifecycle import LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import String
from std_srvs.srv import Trigger

from retain_ros.control.control_loop import ControlLoop
from retain_ros.ros.policy_node.accessors import NodeAccessors
from retain_ros.ros.policy_node.activation import ActivationMixin
from retain_ros.ros.policy_node.config import ConfigError
from retain_ros.ros.policy_node.config import NodeConfig
from retain_ros.ros.policy_node.declare import declare_all
from retain_ros.ros.policy_node.declare import read_all
from retain_ros.ros.policy_node.diagnostics import DiagnosticsPublisher
from retain_ros.ros.policy_node.embodiment import EmbodimentMixin
from retain_ros.ros.policy_node.episodes import create_episode_services
from retain_ros.ros.policy_node.episodes import EpisodeServices
from retain_ros.ros.policy_node.inputs import InputHub
from retain_ros.ros.policy_node.live_merge import LiveMergeMixin
from retain_ros.ros.policy_node.outputs import Outputs
from retain_ros.ros.policy_node.parameter_services import Worker
from retain_ros.ros.policy_node.parameter_services import WorkerParameterService
from retain_ros.ros.policy_node.qos import LATCHED_QOS
from retain_ros.runtime.acting import Actor
from retain_ros.runtime.acting import StepTiming
from retain_ros.runtime.merged_policy import ALPHA_CONVENTION
from retain_ros.runtime.merged_policy import MergedPolicy
from retain_ros.runtime.startup import ActingPlan
from retain_ros.runtime.startup import load_pair
from retain_ros.runtime.startup import plan_acting
from retain_ros.runtime.startup import StartupError
from retain_ros.runtime.stats import NodeStats

NODE_NAME = 'retain_policy'
#: the alpha convention, as logged at startup (one source: the merging engine's string)
CONVENTION = f'{ALPHA_CONVENTION}: 0 = pretrained, 1 = finetuned'

__all__ = ['PolicyNode', 'StartupError', 'LATCHED_QOS', 'NODE_NAME', 'CONVENTION']


class PolicyNode(ActivationMixin, LiveMergeMixin, EmbodimentMixin, NodeAccessors, LifecycleNode):
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
        #: the config a parameter set validated, installed after the set (:mod:`.live_merge`)
        self._pending_cfg: Optional[NodeConfig] = None
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
            declare_all(self)
            self._cfg = NodeConfig.from_values(read_all(self))
        except ConfigError as exc:
            super().destroy_node()
            raise StartupError(str(exc)) from exc
        self.stats = NodeStats(self.get_logger())
        self._merge_state_pub = self.create_publisher(String, '~/merge_state', LATCHED_QOS)
        self._diagnostics = DiagnosticsPublisher(self)
        self.create_service(Trigger, '~/reload_weights', self._reload_service,
                            callback_group=getattr(self._slow_services, 'callback_group', None))
        create_episode_services(self)
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
        """Load + merge + embodiment + warm-up.

        :return: SUCCESS (inactive), or FAILURE with the reason logged (unconfigured, model
            released).
        """
        try:
            self._configure()
        except StartupError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: B902 - see _unexpected
            reason = self._unexpected('configure', exc)
        else:
            self._hold_reason = 'inactive'
            return TransitionCallbackReturn.SUCCESS
        self._transition_error = reason
        self.get_logger().error(f'configure failed: {reason}')
        self._release()
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscriptions, command outputs, inference / streaming threads.

        :return: SUCCESS (active), or FAILURE with the reason logged (inactive again).
        """
        try:
            self._activate()
        except StartupError as exc:
            reason = f'{type(exc).__name__}: {exc}'
        except Exception as exc:  # noqa: B902 - see _unexpected
            reason = self._unexpected('activate', exc)
        else:
            return super().on_activate(state)
        self._transition_error = f'activate failed: {reason}'
        self.get_logger().error(self._transition_error)
        self._deactivate()
        return TransitionCallbackReturn.FAILURE

    def _unexpected(self, transition: str, exc: BaseException) -> str:
        """Log an unexpected failure of a transition with its traceback; return its reason.

        Broad on purpose: a transition callback must return FAILURE (not raise) whatever fails
        (a driver, torch, a bug), so the node stays in a known state and tells why.
        """
        self.get_logger().error(f'{transition}: unexpected failure\n'
                                + ''.join(traceback.format_exception(
                                    type(exc), exc, exc.__traceback__)))
        return f'{type(exc).__name__}: {exc}'

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

    # ------------------------------------------------------------------ configure
    def _configure(self) -> None:
        cfg = self._cfg = NodeConfig.from_values(read_all(self))
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

    def _release(self) -> None:
        if self._episodes is not None and self._episodes.active:
            dropped = self._episodes.log.discard()
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

    def destroy_node(self) -> None:
        """Stop the inference / streaming threads, then destroy the node."""
        self._deactivate()
        self._worker.stop()
        self._release()
        super().destroy_node()

    # ------------------------------------------------------------------ merging
    def _publish_merge_state(self) -> None:
        data = self.merge_state()
        if data and self.context.ok():      # a signal may have shut the context down
            self._merge_state_pub.publish(String(data=json.dumps(data)))
