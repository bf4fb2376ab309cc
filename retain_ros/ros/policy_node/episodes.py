"""Evaluation episodes of the ``retain_policy`` node: start, end (success / failure) and abort.

Services ``~/start_episode`` (``std_srvs/Trigger``), ``~/end_episode`` (``std_srvs/SetBool``,
``data`` = success) and ``~/abort_episode`` (``std_srvs/Trigger``: end without counting). Each
episode appends one JSON line (α per group, recipe, fingerprint, instruction, outcome, chunks,
latency) to ``episode_log``; an aborted one a line with ``"aborted": true, "success": null``.
With an ``alpha_schedule`` each start applies the next setting through the alpha parameters
(:mod:`.episode_schedule`: the fixed block-shuffled schedule, or with ``sequential`` the
adaptive one that stops once its sequential test decides); ``~/evaluation``
(:mod:`.evaluation_status`) tells the operator's console where the evaluation stands.
"""
from __future__ import annotations

import functools
import json
from typing import Any
from typing import Dict
from typing import Optional

from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger

from retain_ros.evaluation.episode_log import EpisodeLog
from retain_ros.evaluation.schedule import describe
from retain_ros.merging.spec import ALPHA_PARAMS
from retain_ros.ros.policy_node.episode_schedule import EpisodeSchedule
from retain_ros.ros.policy_node.evaluation_status import EvaluationTopic
from retain_ros.ros.policy_node.evaluation_status import json_safe
from retain_ros.ros.policy_node.params import default_episode_log


def create_episode_services(node) -> None:
    """Create ``~/start_episode``, ``~/end_episode``, ``~/abort_episode`` and ``~/evaluation``.

    They exist from startup and refuse politely until the node is configured (the
    :class:`EpisodeServices` doing the work are made at configure: ``node.episodes``); the
    topic's publisher is kept as ``node.evaluation_topic``.
    """
    node.evaluation_topic = EvaluationTopic(node)
    for srv, name in ((Trigger, 'start'), (SetBool, 'end'), (Trigger, 'abort')):
        node.create_service(srv, f'~/{name}_episode', functools.partial(_dispatch, node, name))


#: refusals while the node is not configured, by service
_IDLE = {'end': 'no episode is running; call ~/start_episode first',
         'abort': 'no episode is running; nothing to abort'}


def _dispatch(node, name, request, response):
    episodes, busy = node.episodes, node.busy
    if name == 'start' and (episodes is None or busy):
        return _refuse(response, f'busy: {busy}' if busy else
                       f'not configured ({node.lifecycle_state})')
    if episodes is None:
        return _refuse(response, _IDLE[name])
    return getattr(episodes, f'{name}_callback')(request, response)


class EpisodeServices:
    """Episode bookkeeping of one node (from configure to cleanup).

    :param node: the :class:`~retain_ros.ros.policy_node.node.PolicyNode`.
    :param config: its :class:`~retain_ros.ros.policy_node.config.NodeConfig` at configure time.
    :raises ValueError: an invalid ``alpha_schedule``.
    :raises StartupError: sequential parameters the test's design refuses (names them).
    """

    def __init__(self, node, config):
        self._node = node
        self.path = config.episode_log or default_episode_log()
        self.log = EpisodeLog(self.path)
        self.blind = bool(config.blind)
        self.schedule: Optional[EpisodeSchedule] = None
        settings = [s for s in config.alpha_schedule if str(s).strip()]
        if settings:
            self.schedule = EpisodeSchedule(config)
            node.get_logger().info(self._schedule_text(config, settings))
        node.get_logger().info(f'episode log: {self.path}')
        #: label and tag of the running episode (None / '' when none runs)
        self._label: Optional[str] = None
        self._tag = ''
        self._released = False
        self.topic: EvaluationTopic = node.evaluation_topic
        self.topic.reset(self.blind, self.schedule.labels if self.schedule is not None else ())
        #: episode bags (:mod:`retain_ros.ros.policy_node.recording`) when ``record`` is true
        self.bag = None
        if config.record:
            from retain_ros.ros.policy_node.recording import NodeRecorder
            self.bag = NodeRecorder(node, config.to_values())
        self.publish_status()

    def _schedule_text(self, config, settings) -> str:
        shown = ' (blind)' if self.blind else (
            f': {settings}' + (f', reference {config.sequential_reference!r}'
                               if config.sequential else ''))
        if self.schedule.sequential:
            return (f'sequential alpha schedule: {len(settings)} setting(s), at most '
                    f'{config.sequential_budget} episodes each, level '
                    f'{config.sequential_level:g}, power {config.sequential_power:g} at gap '
                    f'{config.sequential_gap:g}' + shown)
        return (f'alpha schedule: {len(settings)} setting(s) x {config.schedule_repeats} = '
                f'{self.schedule.total} episodes' + shown)

    def shutdown(self) -> None:
        """Close a bag still open; tell ``~/evaluation`` (node teardown or cleanup)."""
        if self.bag is not None:
            self.bag.shutdown()
        self._released = True
        self._episode_over()

    @property
    def active(self) -> bool:
        """Whether an episode runs."""
        return self.log.active

    def busy_reason(self, what: str) -> str:
        """Return the refusal of a weight change while an episode runs."""
        return (f'episode {self.log.episode_id} is running; end it before {what} (its log '
                'line must describe one set of weights)')

    def status(self) -> Dict[str, Any]:
        """Return the ``~/evaluation`` content now (see :mod:`.evaluation_status`)."""
        schedule = None if self._released else self.schedule
        return self.topic.message(
            running=self.log.episode_id, setting=self._label,
            next_label=None if schedule is None else schedule.label(schedule.next_params),
            tag=self._node.config.episode_tag,
            remaining=None if schedule is None else schedule.remaining,
            sequential=None if schedule is None else schedule.status(),
            finished='node not configured (cleanup)' if self._released else (
                None if schedule is None else schedule.finished))

    def publish_status(self) -> None:
        """Publish :meth:`status` on ``~/evaluation``."""
        self.topic.publish(self.status())

    def start_callback(self, request, response):
        """``~/start_episode``: apply the next schedule setting, open the log line (and bag).

        :return: ``response``; success with a JSON message (episode id, tag, instruction,
            setting label and episodes remaining with a schedule, alpha unless blind,
            fingerprint), or failure with the reason (``evaluation finished: ...`` once the
            schedule is done).
        """
        node = self._node
        if not node.is_active:
            return _refuse(response, f'the node is not active ({node.lifecycle_state}); '
                                     'activate it')
        if self.log.active:
            return _refuse(response, f'episode {self.log.episode_id} is still running; call '
                                     '~/end_episode or ~/abort_episode first')
        schedule, label = self.schedule, None
        if schedule is not None:
            setting = schedule.next_params
            if setting is None:
                return _refuse(response, schedule.finished_message())
            label = schedule.label(setting)
            result = node.set_parameters_atomically(
                [Parameter(k, Parameter.Type.DOUBLE, float(v)) for k, v in setting.items()])
            if not result.successful:
                return _refuse(response, f'cannot apply schedule setting {label}: '
                                         f'{result.reason}')
            schedule.started()
        runtime = node.runtime
        runtime.reset()
        node.flush_commands()
        state = runtime.state
        cfg = node.config
        instruction = node.inputs.instruction or cfg.default_instruction
        episode_id = self.log.start(
            instruction, tag=cfg.episode_tag, alphas=state.alphas, recipe=state.recipe,
            fingerprint=state.fingerprint, alpha_hidden=self.blind,
            checkpoints=runtime.checkpoints())
        if self.bag is not None:
            self.bag.start(episode_id, {'instruction': instruction, 'alpha': state.alphas,
                                        'recipe': state.recipe, 'tag': cfg.episode_tag,
                                        'fingerprint': state.fingerprint})
        self._label = label or _current_label(cfg, self.blind)
        self._tag = cfg.episode_tag
        reply: Dict[str, Any] = {'episode_id': episode_id, 'tag': cfg.episode_tag,
                                 'instruction': instruction}
        if label:
            reply['setting'] = label
            reply['remaining'] = schedule.remaining
        if not self.blind:
            reply['alpha'] = state.alphas
        reply['fingerprint'] = state.fingerprint
        self.publish_status()
        return _answer(node, response, 'episode started', reply)

    def end_callback(self, request, response):
        """``~/end_episode`` (``data`` = success): write the episode's log line, close its bag.

        With a sequential schedule the outcome updates the test and the line carries its state
        (``sequential``); it is counted only once the line is on disk.

        :return: ``response``; success with a JSON summary of the line, or failure with the
            reason.
        """
        if not self.log.active:
            return _refuse(response, 'no episode is running; call ~/start_episode first')
        success = bool(request.data)
        recording, line = (self.bag.stop() if self.bag is not None else None), None
        instruction = self._node.inputs.instruction or ''

        def write(status):
            return self.log.end(success, recording=recording, instruction=instruction,
                                sequential=json_safe(status) if status is not None else None,
                                setting=self._label if self.schedule is not None else '')
        try:
            line = write(None) if self.schedule is None else self.schedule.record(
                success, self._tag, write)
        except OSError as exc:
            self._episode_over()
            return _refuse(response, f'cannot write the episode log (the episode is not '
                                     f'counted): {exc}')
        finally:
            if self.bag is not None:
                self.bag.close(line)
        self.topic.count(self._label, success)
        return _answer(self._node, response, 'episode ended', self._summary(line))

    def abort_callback(self, request, response):
        """``~/abort_episode``: end the running episode WITHOUT counting it.

        Its log line says ``"aborted": true, "success": null``, its bag is closed with that
        line, and a schedule offers the same setting again.

        :return: ``response``; success with a JSON summary of the line, or failure with the
            reason.
        """
        if not self.log.active:
            return _refuse(response, 'no episode is running; nothing to abort')
        if self.schedule is not None:
            self.schedule.abort()
        status = None if self.schedule is None else self.schedule.status()
        recording, line = (self.bag.stop() if self.bag is not None else None), None
        try:
            line = self.log.abort(recording=recording,
                                  instruction=self._node.inputs.instruction or '',
                                  sequential=json_safe(status) if status is not None else None,
                                  setting=self._label if self.schedule is not None else '')
        except OSError as exc:
            self._episode_over()
            return _refuse(response, f'episode aborted, but its log line could not be '
                                     f'written: {exc}')
        finally:
            if self.bag is not None:
                self.bag.close(line)
        return _answer(self._node, response, 'episode aborted (not counted)',
                       self._summary(line))

    def _summary(self, line: Dict[str, Any]) -> Dict[str, Any]:
        """Reply of an end / abort (blind-safe), after publishing ``~/evaluation``."""
        reply = {k: line.get(k) for k in ('episode_id', 'success', 'duration_s', 'chunks',
                                          'latency_ms', 'tag', 'recording')}
        if line.get('aborted'):
            reply['aborted'] = True
        if not self.blind:
            reply['alpha'] = line.get('alpha')
        schedule = self.schedule
        if schedule is not None:
            reply['setting'] = self._label
            reply['remaining'] = schedule.remaining
            reply['next'] = schedule.label(schedule.next_params)
            reply['finished'] = schedule.finished
            status = schedule.status()
            if status is not None:
                reply['sequential'] = status.get('summary')
        self._episode_over()
        return reply

    def _episode_over(self) -> None:
        self._label, self._tag = None, ''
        self.publish_status()


def _current_label(cfg, blind: bool) -> str:
    """Label of the node's own α parameters (no schedule): ``'alpha=0.5'``, or opaque."""
    if blind:
        return 'current setting'
    return describe({name: getattr(cfg, name) for name in ALPHA_PARAMS})


def _refuse(response, message: str):
    response.success = False
    response.message = message
    return response


def _answer(node, response, what: str, reply: Dict[str, Any]):
    response.success = True
    response.message = json.dumps(json_safe(reply), allow_nan=False)
    node.get_logger().info(f'{what}: {response.message}')
    return response
