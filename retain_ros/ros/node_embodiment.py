"""The robot's embodiment in the ``retain_policy`` node: loading, binding, live re-loading.

- at configure, :meth:`EmbodimentMixin._load_embodiment` loads the ``embodiment`` parameter (a
  preset or a YAML file, :mod:`retain_ros.embodiment`) with the node's parameters for ``$name``;
- with ``joint_names`` empty, the first JointState binds the joint order
  (:meth:`EmbodimentMixin._on_joint_names`); limits that do not fit hold the node with an ERROR;
- a live set of parameters re-loads it (:meth:`EmbodimentMixin._check_embodiment` refuses the set
  when the new one is invalid, :meth:`EmbodimentMixin._apply_embodiment` swaps it in after the
  set), so the limits a file takes from ``joint_lower_limits`` ... follow the parameters.
"""
from __future__ import annotations

from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from retain_ros.control.safety import LimitsError
from retain_ros.control.safety import validate_limits
from retain_ros.ros import params as P
from retain_ros.runtime.startup import StartupError

_LIMIT_PARAMS = ('joint_lower_limits', 'joint_upper_limits', 'max_joint_step')


class EmbodimentMixin:
    """Embodiment handling of :class:`~retain_ros.ros.policy_node.PolicyNode` (a mixin)."""

    def _load_embodiment(self, cfg: P.NodeConfig):
        """The embodiment of ``cfg`` (joint names bound when known). :raises StartupError:."""
        from retain_ros.embodiment import EmbodimentError
        from retain_ros.embodiment import load_embodiment

        try:
            validate_limits(cfg.joint_lower_limits, cfg.joint_upper_limits,
                            list(cfg.joint_names) or None)
            embodiment = load_embodiment(cfg.embodiment, cfg.to_values())
            if self._bound_names and embodiment.needs_joint_names:
                embodiment = embodiment.bind_joint_names(self._bound_names)
        except (EmbodimentError, LimitsError) as exc:
            raise StartupError(f'embodiment {cfg.embodiment!r}: {exc}') from exc
        return embodiment

    def _on_joint_names(self, names: List[str]) -> Optional[str]:
        """First JointState with ``joint_names`` empty: bind them, the limits must fit."""
        from retain_ros.embodiment import EmbodimentError

        cfg = self._cfg
        reason = None
        state_dim = int(self._runtime.policy.state_dim) if self._runtime else len(names)
        if len(names) != state_dim:
            reason = (f'the JointState names {len(names)} joint(s) {names} but the policy state '
                      f'has {state_dim} values: set joint_names')
        else:
            try:
                validate_limits(cfg.joint_lower_limits, cfg.joint_upper_limits, names)
                bound = self._embodiment.bind_joint_names(names)
            except (LimitsError, EmbodimentError) as exc:
                reason = f'{exc}; not acting until the limits are fixed'
            else:
                self._bound_names = list(names)
                self._use_embodiment(bound)
        if reason and reason != self._limits_fault:
            self.get_logger().error(reason)
        self._set_limits_fault(reason)
        return reason

    def _use_embodiment(self, embodiment) -> None:
        """Make ``embodiment`` (re-loaded or with bound joint names) the live one."""
        self._embodiment = embodiment
        if self._outputs is not None:
            self._outputs.update_specs(embodiment.outputs)
        if self._actor is not None:
            self._actor.embodiment = embodiment

    def _set_limits_fault(self, reason: Optional[str]) -> None:
        self._limits_fault = reason
        if self._actor is not None:
            self._actor.limits_fault = reason

    def _check_embodiment(self, new: P.NodeConfig, changes: Dict[str, Any]) -> None:
        """A live set of parameters the embodiment reads: the new one must load (kept pending).

        :raises ValueError: the reason (the set is refused).
        """
        self._pending_embodiment = None
        if self._embodiment is None or set(changes) <= set(P.MERGE_PARAMS):
            return
        names = self._bound_names or list(new.joint_names) or None
        if set(_LIMIT_PARAMS) & set(changes):
            validate_limits(new.joint_lower_limits, new.joint_upper_limits, names)
        try:
            self._pending_embodiment = self._load_embodiment(new)
        except StartupError as exc:
            raise ValueError(str(exc)) from exc

    def _apply_embodiment(self, changes: Dict[str, Any]) -> None:
        pending, self._pending_embodiment = self._pending_embodiment, None
        if pending is None:
            return
        self._use_embodiment(pending)
        if set(_LIMIT_PARAMS) & set(changes) and self._limits_fault:
            self._set_limits_fault(None)    # the limits were re-validated with the set
