"""Evaluation episodes of the ``retain_policy`` node: ``~/start_episode`` / ``~/end_episode``.

Each episode appends one JSON line (α per group, recipe, fingerprint, instruction, outcome,
chunks, latency) to ``episode_log``; with an ``alpha_schedule`` each start applies the next
setting (seeded, block-shuffled, optionally blind) through the alpha parameters.
"""
from __future__ import annotations

import functools
import json
from typing import Any
from typing import Dict

from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger

from retain_ros.evaluation.episode_log import EpisodeLog
from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.ros.policy_node.params import default_episode_log


def create_episode_services(node) -> None:
    """Create ``~/start_episode`` and ``~/end_episode`` on ``node``.

    They exist from startup and refuse politely until the node is configured (the
    :class:`EpisodeServices` doing the work are made at configure: ``node.episodes``).
    """
    node.create_service(Trigger, '~/start_episode', functools.partial(_start_episode, node))
    node.create_service(SetBool, '~/end_episode', functools.partial(_end_episode, node))


def _start_episode(node, request, response):
    episodes, busy = node.episodes, node.busy
    if episodes is None or busy:
        response.success = False
        response.message = (f'busy: {busy}' if busy else
                            f'not configured ({node.lifecycle_state})')
        return response
    return episodes.start_callback(request, response)


def _end_episode(node, request, response):
    episodes = node.episodes
    if episodes is None:
        response.success = False
        response.message = 'no episode is running; call ~/start_episode first'
        return response
    return episodes.end_callback(request, response)


class EpisodeServices:
    """Episode bookkeeping of one node.

    :param node: the :class:`~retain_ros.ros.policy_node.node.PolicyNode`.
    :param config: its :class:`~retain_ros.ros.policy_node.config.NodeConfig` at configure time.
    :raises ValueError: an invalid ``alpha_schedule``.
    """

    def __init__(self, node, config):
        self._node = node
        self.path = config.episode_log or default_episode_log()
        self.log = EpisodeLog(self.path)
        self.blind = bool(config.blind)
        self.schedule = None
        settings = [s for s in config.alpha_schedule if str(s).strip()]
        if settings:
            self.schedule = AlphaSchedule(settings, repeats=int(config.schedule_repeats),
                                          seed=int(config.schedule_seed), blind=self.blind)
            node.get_logger().info(
                f'alpha schedule: {len(settings)} setting(s) x {self.schedule.repeats} = '
                f'{self.schedule.total} episodes'
                + (' (blind)' if self.blind else f': {settings}'))
        node.get_logger().info(f'episode log: {self.path}')
        #: episode bags (:mod:`retain_ros.ros.policy_node.recording`) when ``record`` is true
        self.bag = None
        if config.record:
            from retain_ros.ros.policy_node.recording import NodeRecorder
            self.bag = NodeRecorder(node, config.to_values())

    def shutdown(self) -> None:
        """Close a bag still open (node teardown or cleanup)."""
        if self.bag is not None:
            self.bag.shutdown()

    @property
    def active(self) -> bool:
        """Whether an episode runs."""
        return self.log.active

    def busy_reason(self, what: str) -> str:
        """Return the refusal of a weight change while an episode runs."""
        return (f'episode {self.log.episode_id} is running; end it before {what} (its log '
                'line must describe one set of weights)')

    def start_callback(self, request, response):
        """``~/start_episode``: apply the next schedule setting, open the log line (and bag).

        :return: ``response``; success with a JSON message (episode id, tag, instruction, alpha
            unless blind, fingerprint), or failure with the reason.
        """
        node = self._node
        if not node.is_active:
            response.success = False
            response.message = f'the node is not active ({node.lifecycle_state}); activate it'
            return response
        if self.log.active:
            response.success = False
            response.message = (f'episode {self.log.episode_id} is still running; call '
                                '~/end_episode first')
            return response
        label = ''
        if self.schedule is not None:
            try:
                setting = self.schedule.next()
            except StopIteration:
                response.success = False
                response.message = (f'alpha schedule exhausted ({self.schedule.total} '
                                    'episodes done)')
                return response
            label = self.schedule.label(setting)
            result = node.set_parameters_atomically(
                [Parameter(k, Parameter.Type.DOUBLE, float(v)) for k, v in setting.items()])
            if not result.successful:
                response.success = False
                response.message = f'cannot apply schedule setting {label}: {result.reason}'
                return response
        runtime = node.runtime
        runtime.reset()
        node.flush_commands()
        state = runtime.state
        cfg = node.config
        instruction = node.inputs.instruction or cfg.default_instruction
        episode_id = self.log.start(
            instruction, tag=cfg.episode_tag, alphas=state.alphas, recipe=state.recipe,
            fingerprint=state.fingerprint, alpha_hidden=self.blind)
        if self.bag is not None:
            self.bag.start(episode_id, {'instruction': instruction, 'alpha': state.alphas,
                                        'recipe': state.recipe, 'tag': cfg.episode_tag,
                                        'fingerprint': state.fingerprint})
        reply: Dict[str, Any] = {'episode_id': episode_id, 'tag': cfg.episode_tag,
                                 'instruction': instruction}
        if label:
            reply['setting'] = label
            reply['remaining'] = self.schedule.remaining
        if not self.blind:
            reply['alpha'] = state.alphas
        reply['fingerprint'] = state.fingerprint
        response.success = True
        response.message = json.dumps(reply)
        node.get_logger().info(f'episode started: {response.message}')
        return response

    def end_callback(self, request, response):
        """``~/end_episode`` (``data`` = success): write the episode's log line, close its bag.

        :return: ``response``; success with a JSON summary of the line, or failure with the
            reason.
        """
        if not self.log.active:
            response.success = False
            response.message = 'no episode is running; call ~/start_episode first'
            return response
        recording, line = (self.bag.stop() if self.bag is not None else None), None
        try:
            line = self.log.end(bool(request.data), recording=recording,
                                instruction=self._node.inputs.instruction or '')
        except OSError as exc:
            response.success = False
            response.message = f'cannot write the episode log: {exc}'
            return response
        finally:
            if self.bag is not None:
                self.bag.close(line)
        reply = {k: line.get(k) for k in ('episode_id', 'success', 'duration_s', 'chunks',
                                          'latency_ms', 'tag', 'recording')}
        if not self.blind:
            reply['alpha'] = line.get('alpha')
        response.success = True
        response.message = json.dumps(reply)
        self._node.get_logger().info(f'episode ended: {response.message}')
        return response
