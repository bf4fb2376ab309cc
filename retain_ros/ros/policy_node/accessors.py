"""Read-only views of the ``retain_policy`` node's state (a mixin of the node class).

What ``/diagnostics``, the episode services, tests and benchmarks read: the configuration, the
merged policy, the inputs, why the node holds or cannot act, the merge state.
"""
from __future__ import annotations

from typing import Any
from typing import Dict
from typing import Optional

from retain_ros.ros.policy_node.config import NodeConfig
from retain_ros.ros.policy_node.diagnostics import diagnostics_status
from retain_ros.ros.policy_node.episodes import EpisodeServices
from retain_ros.ros.policy_node.inputs import InputHub
from retain_ros.runtime.merged_policy import MergedPolicy
from retain_ros.runtime.startup import ActingPlan


class NodeAccessors:
    """Properties of :class:`~retain_ros.ros.policy_node.node.PolicyNode` (a mixin)."""

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

    @property
    def busy(self) -> Optional[str]:
        """What the merge worker is doing (a re-merge, a reload), or None when idle."""
        return self._busy

    @property
    def config(self) -> NodeConfig:
        """The validated configuration now in force."""
        return self._cfg

    @property
    def runtime(self) -> Optional[MergedPolicy]:
        """The merged policy (None when not configured)."""
        return self._runtime

    @property
    def inputs(self) -> Optional[InputHub]:
        """Return the input hub (None before the first activation)."""
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
        """Return the acting plan; None when not configured."""
        return self._plan

    @property
    def dropped(self) -> Dict[str, int]:
        """Dropped-message counts by input / reason."""
        with self.stats.lock:
            return dict(self.stats.dropped)

    @property
    def policy(self):
        """Return the running policy; None when not configured."""
        return None if self._runtime is None else self._runtime.policy

    @property
    def merger(self):
        """Return the live merger; None when not configured."""
        return None if self._runtime is None else self._runtime.merger

    def merge_state(self) -> Dict[str, Any]:
        """Return the ``~/merge_state`` content (empty when not configured)."""
        runtime = self._runtime
        if runtime is None or runtime.merger is None:
            return {}
        return runtime.merge_state(blind=self._cfg.blind)

    def diagnostics_status(self):
        """Return the node's ``DiagnosticStatus`` (see :mod:`.diagnostics`)."""
        return diagnostics_status(self)
