"""The robot's embodiment in the ``retain_policy`` node: loading, binding, live re-loading.

- at configure, :meth:`EmbodimentMixin._load_embodiment` loads the ``embodiment`` parameter (a
  preset or a YAML file, :mod:`retain_ros.embodiment`) with the node's parameters for ``$name``;
- with ``joint_names`` empty, the first JointState binds the joint order
  (:meth:`EmbodimentMixin._on_joint_names`); limits that do not fit hold the node with an ERROR;
- a live set of parameters re-loads it (:meth:`EmbodimentMixin._check_embodiment` refuses the set
  when the new one is invalid, :meth:`EmbodimentMixin._apply_embodiment` swaps it in after the
  set), so the limits a file takes from ``joint_lower_limits`` ... follow the parameters.

All three go through :meth:`EmbodimentMixin._fitted`, the one place the node checks
``joint_lower_limits`` / ``joint_upper_limits`` against the joints
(:func:`retain_ros.control.safety.validate_limits`).
"""
from __future__ import annotations

from typing import Iterable
from typing import List
from typing import Optional

from retain_ros.control.safety import LimitsError
from retain_ros.control.safety import validate_limits
from retain_ros.ros.policy_node.config import NodeConfig
from retain_ros.ros.policy_node.params import MERGE_PARAMS
from retain_ros.runtime.startup import StartupError

_LIMIT_PARAMS = ('joint_lower_limits', 'joint_upper_limits', 'max_joint_step')


class EmbodimentMixin:
    """Embodiment handling of :class:`~retain_ros.ros.policy_node.node.PolicyNode` (a mixin)."""

    def _fitted(self, cfg: NodeConfig, bound: Optional[List[str]] = None, embodiment=None):
        """Return ``cfg``'s embodiment after checking ``cfg``'s joint limits against the joints.

        :param cfg: the configuration (its ``embodiment`` and joint limit parameters).
        :param bound: joint names taken from a JointState (``joint_names`` empty), or None. The
            limits are checked against them, else against ``joint_names``, else (joints not
            known yet) only against each other.
        :param embodiment: the loaded embodiment to bind to ``bound``; None loads ``cfg``'s.
        :return: the embodiment, bound to ``bound`` when it reads "the message's joints".
        :raises LimitsError: the joint limits do not fit.
        :raises EmbodimentError: the embodiment does not load or bind.
        """
        from retain_ros.embodiment import load_embodiment

        validate_limits(cfg.joint_lower_limits, cfg.joint_upper_limits,
                        bound or list(cfg.joint_names) or None)
        if embodiment is None:
            embodiment = load_embodiment(cfg.embodiment, cfg.to_values())
        if bound and embodiment.needs_joint_names:
            embodiment = embodiment.bind_joint_names(bound)
        return embodiment

    def _load_embodiment(self, cfg: NodeConfig):
        """Return the embodiment of ``cfg`` at configure.

        :raises StartupError: naming the embodiment and why it cannot be used.
        """
        from retain_ros.embodiment import EmbodimentError

        try:
            return self._fitted(cfg)
        except (EmbodimentError, LimitsError) as exc:
            raise StartupError(f'embodiment {cfg.embodiment!r}: {exc}') from exc

    def _on_joint_names(self, names: List[str]) -> Optional[str]:
        """Bind the joint order of the first JointState (``joint_names`` empty).

        :param names: the JointState's joint names.
        :return: None when bound, else why not (the node holds with an ERROR until the limits
            are fixed).
        """
        from retain_ros.embodiment import EmbodimentError

        reason = None
        state_dim = int(self._runtime.policy.state_dim) if self._runtime else len(names)
        if len(names) != state_dim:
            reason = (f'the JointState names {len(names)} joint(s) {names} but the policy state '
                      f'has {state_dim} values: set joint_names')
        else:
            try:
                bound = self._fitted(self._cfg, list(names), self._embodiment)
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

    def _check_embodiment(self, new: NodeConfig, changes: Iterable[str]) -> None:
        """Re-load the embodiment for a live set; it is kept pending until the set succeeded.

        :param new: the configuration after the set.
        :param changes: the names of the parameters set.
        :raises ValueError: the reason (the set is refused).
        """
        from retain_ros.embodiment import EmbodimentError

        self._pending_embodiment = None
        if self._embodiment is None or set(changes) <= set(MERGE_PARAMS):
            return
        try:
            self._pending_embodiment = self._fitted(new, self._bound_names)
        except EmbodimentError as exc:
            raise ValueError(f'embodiment {new.embodiment!r}: {exc}') from exc

    def _apply_embodiment(self, changes: Iterable[str]) -> None:
        """Swap in the embodiment :meth:`_check_embodiment` re-loaded (post-set).

        :param changes: the names of the parameters set.
        """
        pending, self._pending_embodiment = self._pending_embodiment, None
        if pending is None:
            return
        self._use_embodiment(pending)
        if set(_LIMIT_PARAMS) & set(changes) and self._limits_fault:
            self._set_limits_fault(None)    # the limits were re-validated with the set
