"""Activate / deactivate of the ``retain_policy`` node: the acting wiring (a mixin).

On activate the node's inputs (:class:`~.inputs.InputHub`), outputs (:class:`~.outputs.Outputs`)
and the :class:`~retain_ros.runtime.acting.Actor` joining them are made, and the acting steps run
on the node's own threads (:class:`~retain_ros.control.control_loop.ControlLoop`); deactivate
stops them and sends every output its hold command.
"""
from __future__ import annotations

import traceback
from typing import List
from typing import Optional

from retain_ros.control.control_loop import ControlLoop
from retain_ros.ros.policy_node.inputs import InputHub
from retain_ros.ros.policy_node.outputs import Outputs
from retain_ros.runtime.acting import Actor
from retain_ros.runtime.startup import ActingPlan
from retain_ros.runtime.startup import StartupError


class ActivationMixin:
    """Activation of :class:`~retain_ros.ros.policy_node.node.PolicyNode` (a mixin)."""

    def _activate(self) -> None:
        """Create the outputs, inputs, actor and acting threads, and start them.

        :raises StartupError: not configured.
        """
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
            actor.on_chunk = self._episodes.log.record_chunk
        self._actor = actor
        self._inputs.start()
        self._loops = _control_loops(plan, actor, self._loop_error)
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
        """Stop the threads, flush the queue, send every output its hold, close inputs/outputs."""
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
                except Exception:  # noqa: B902 - re-raised unless the context is going away
                    # a signal may shut the context down meanwhile (RCLError / InvalidHandle)
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
        except Exception:  # noqa: B902 - re-raised unless the context is shutting down
            if self.context.ok():
                raise
        if self._runtime is not None:
            self._hold_reason = 'inactive'

    def _loop_error(self, exc: BaseException) -> bool:
        """Report a failed acting step (the loop goes on); False stops the loop at shutdown."""
        if not self.context.ok():
            return False        # shutting down: the publishers are gone, stop quietly
        self.get_logger().error(
            f'control loop step failed: {type(exc).__name__}: {exc}\n'
            + ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            throttle_duration_sec=5.0)
        return True

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _set_hold(self, reason: Optional[str]) -> None:
        if self._actor is not None:
            self._actor.set_hold(reason)

    def flush_commands(self) -> None:
        """Drop queued actions and the chunk RTC would blend with (new weights, new episode)."""
        if self._actor is not None:
            self._actor.flush()


def _control_loops(plan: ActingPlan, actor: Actor, on_error) -> List[ControlLoop]:
    """Return the acting threads (not started) for ``plan``.

    Trajectory outputs only: one inference loop every ``replan_steps`` periods. With a stream
    output: an inference loop refilling the queue and a stream loop, both every period.
    """
    if plan.streams:
        return [ControlLoop('retain_policy.inference', plan.dt, actor.refill_step, on_error),
                ControlLoop('retain_policy.stream', plan.dt, actor.stream_step, on_error)]
    return [ControlLoop('retain_policy.inference', plan.replan_steps * plan.dt,
                        actor.chunk_step, on_error)]
