"""Live weight changes of the ``retain_policy`` node: alpha / recipe / checkpoints, reloads.

alpha's path: a parameter set -> :meth:`LiveMergeMixin._on_set_parameters` (here, the on-set
callback, which calls :meth:`~retain_ros.runtime.merged_policy.MergedPolicy.set_spec` itself) ->
:meth:`retain_ros.merging.live.LiveMerger.apply` -> the recipe (:mod:`retain_ros.merging.recipes`).

- The set runs on the merge worker (:mod:`.parameter_services`): the caller's
  ``set_parameters`` waits for it, the executor keeps serving the node's other callbacks, and the
  node holds its commands meanwhile (``/diagnostics``: "holding: re-merging ...").
- The set succeeds only if the merge did, so the parameters always equal the live weights; a
  failed merge leaves the previous weights live; a merge whose restore failed leaves the weights
  inconsistent and the node holds until a successful ``~/reload_weights``.
- After a change no command computed with the previous weights reaches any output (merge
  generations, checked under the lock the set takes) and the queued actions are dropped.
- ``pretrained_path`` / ``finetuned_paths`` switch the checkpoints between episodes
  (:meth:`~retain_ros.runtime.merged_policy.MergedPolicy.switch`: checked like a reload, one
  merge with the new sources and the alpha of the same set, same all-or-nothing rule).
- Parameters the embodiment file names (``$joint_lower_limits``...) re-load the embodiment; the
  set is refused when the new one is invalid.
"""
from __future__ import annotations

from contextlib import contextmanager
import json
import traceback
from typing import Any
from typing import Iterator
from typing import List

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from retain_ros.merging.errors import MergeError
from retain_ros.ros.policy_node.config import ConfigError
from retain_ros.ros.policy_node.params import CHECKPOINT_PARAMS
from retain_ros.ros.policy_node.params import MERGE_PARAMS
from retain_ros.ros.policy_node.parameter_services import run_on
from retain_ros.runtime.merged_policy import RuntimeInvalidError
from retain_ros.runtime.startup import checkpoint_change
from retain_ros.runtime.startup import merge_spec
from retain_ros.runtime.startup import StartupError


class LiveMergeMixin:
    """Parameter callbacks and ``~/reload_weights`` of the policy node (a mixin)."""

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        """Validate a parameter set; re-merge when it changes the merge (on-set callback).

        The new config is validated here, once, and installed by :meth:`_post_set_parameters`
        (rclpy calls it right after this callback succeeded and the values were stored).

        :return: successful only when the new values are valid and, for alpha / recipe, the
            re-merge (or checkpoint switch) succeeded (the reason otherwise).
        """
        changes = {p.name: _plain(p.value) for p in parameters}
        try:
            new = self._cfg.updated(changes)
            self._check_embodiment(new, changes)
        except (ConfigError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._pending_cfg = new
        runtime = self._runtime
        if runtime is None or not set(MERGE_PARAMS + CHECKPOINT_PARAMS) & set(changes):
            return SetParametersResult(successful=True)
        try:
            spec = merge_spec(new)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=f'invalid merge: {exc}')
        try:
            sources = checkpoint_change(self._cfg, new, self.get_logger())
        except StartupError as exc:
            return SetParametersResult(successful=False, reason=f'invalid checkpoints: {exc}')
        if not runtime.valid:
            return SetParametersResult(
                successful=False, reason=(f'weights invalid ({runtime.invalid_reason}): call '
                                          '~/reload_weights before changing the merge'))
        if spec == runtime.state.spec and sources is None:
            return SetParametersResult(successful=True)     # these weights are already live
        if self._episodes is not None and self._episodes.active:
            what = 'changing the merge' if sources is None else 'switching checkpoints'
            return SetParametersResult(successful=False, reason=self._episodes.busy_reason(what))
        try:
            if sources is None:
                with self._busy_while('re-merging the weights (alpha / recipe change)'):
                    state = runtime.set_spec(spec)
            else:
                with self._busy_while(f'switching checkpoints to {sources[0]} + {sources[1]}'):
                    state = runtime.switch(sources[0], sources[1], spec)
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
        switched = '' if sources is None else (
            f'switched checkpoints to {json.dumps(runtime.checkpoints())}; ')
        self.get_logger().info(f'{switched}re-merged in {state.merge_ms:.1f} ms: '
                               f'{runtime.describe(self._cfg.blind)}')
        return SetParametersResult(successful=True)

    def _post_set_parameters(self, parameters: List[Parameter]) -> None:
        """Install the config :meth:`_on_set_parameters` validated, and a re-loaded embodiment."""
        self._cfg, self._pending_cfg = self._pending_cfg, None
        self._apply_embodiment({p.name for p in parameters})

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
        """``~/reload_weights``: the reload runs on the merge worker (see parameter_services)."""
        return await run_on(self._worker, self, self._reload_callback, request, response)

    def _reload_callback(self, request, response):
        """Re-read the checkpoints and re-merge with the current parameters (on the worker).

        :return: ``response``: success with the merge state (JSON), or failure with the reason
            (the previous weights stay live; inconsistent weights stay held).
        """
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
        except MergeError as exc:
            self._reload_failed(runtime, response, exc)
            return response
        except Exception as exc:  # noqa: B902 - a service callback must never kill the executor
            # unexpected (a bug, the device): the reply carries the reason, the log the traceback
            self.get_logger().error('reload: unexpected failure\n' + ''.join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))
            self._reload_failed(runtime, response, exc)
            return response
        self.flush_commands()
        self._publish_merge_state()
        response.success = True
        response.message = json.dumps(self.merge_state())
        self.get_logger().info(
            f'reloaded checkpoints, merged in {state.merge_ms:.1f} ms: '
            f'{runtime.describe(self._cfg.blind)}' + ('' if was_valid else '; acting again'))
        return response

    def _reload_failed(self, runtime, response, exc: BaseException) -> None:
        if runtime.valid:
            response.message = f'reload failed, previous weights still live: {exc}'
        else:
            response.message = ('reload failed, the weights are still inconsistent (holding): '
                                f'{exc}')
        self.get_logger().error(response.message)


def _plain(value: Any) -> Any:
    """Return a parameter value as plain Python (arrays become lists)."""
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    return list(value)
