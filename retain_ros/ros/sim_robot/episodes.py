"""How the sim robot ends evaluation episodes and tells the policy node.

With ``auto_end_episode``, an episode opened by ``~/reset`` ends as soon as the task's success
test holds or ``episode_timeout`` seconds of sim time have passed. The sim then calls
``<policy_node>/end_episode`` (``std_srvs/SetBool``, data = success), waiting up to
:data:`END_EPISODE_WAIT` s for the service, and publishes the outcome on ``~/episode``
(``std_msgs/String`` JSON, transient local: ``reset``, ``success``, ``time_s``, ``reason``, the
SceneInfo fields, ``reported`` = the policy node accepted it, ``message`` = its reply).
"""
from __future__ import annotations

from dataclasses import asdict
import json
import time
from typing import Optional
from typing import Tuple

from std_msgs.msg import String
from std_srvs.srv import SetBool

#: how long a pending end_episode call waits for the policy node's service to appear (s)
END_EPISODE_WAIT = 10.0


class EpisodeReporter:
    """Watches the open episode of a sim node and reports its end.

    :param node: the ``sim_robot`` node; its ``policy_node``, ``auto_end_episode`` and
        ``episode_timeout`` parameters are read.
    :param world: the node's :class:`~retain_ros.sim.world.SimWorld`.
    :param latched: the transient-local QoS of ``~/episode``.
    """

    def __init__(self, node, world, latched):
        self._node = node
        self._world = world
        self.publisher = node.create_publisher(String, '~/episode', latched)
        policy = node.get_parameter('policy_node').value.rstrip('/') or '/retain_policy'
        self.end_client = node.create_client(SetBool, f'{policy}/end_episode')
        self._open = False
        self._reset = 0
        #: (outcome, since) while the end_episode call waits for the service
        self._pending: Optional[Tuple[dict, float]] = None

    def start(self, reset: int, open_episode: bool) -> None:
        """Forget the previous episode after a reset; open this one if asked.

        :param reset: the reset's number (``reset`` of the outcome).
        :param open_episode: report this episode's end (only with ``auto_end_episode``).
        """
        self._reset = reset
        self._open = open_episode and bool(self._node.get_parameter('auto_end_episode').value)
        self._pending = None

    def check(self) -> None:
        """End the open episode when it succeeded or timed out; call end_episode once ready."""
        if self._open:
            success = bool(self._world.success())
            timeout = self._node.get_parameter('episode_timeout').value
            if success or self._world.time >= timeout:
                self._open = False
                outcome = {'reset': self._reset, 'success': success,
                           'time_s': round(self._world.time, 3),
                           'reason': 'success' if success else 'timeout',
                           **asdict(self._world.info)}
                self._pending = (outcome, time.monotonic())
        if self._pending is None:
            return
        outcome, since = self._pending
        logger = self._node.get_logger()
        if self.end_client.service_is_ready():
            self._pending = None
            future = self.end_client.call_async(SetBool.Request(data=outcome['success']))
            future.add_done_callback(lambda f, o=outcome: self._end_done(f, o))
            logger.info(
                f'episode over after {outcome["time_s"]:.1f} s: '
                f'{"SUCCESS" if outcome["success"] else "failure (timeout)"}; calling '
                f'{self.end_client.srv_name}')
        elif time.monotonic() - since > END_EPISODE_WAIT:
            self._pending = None
            message = f'{self.end_client.srv_name} not available after {END_EPISODE_WAIT:g} s'
            logger.error(f'{message}; episode outcome not reported')
            self._publish(outcome, False, message)

    def _end_done(self, future, outcome) -> None:
        try:
            result = future.result()
        except Exception as exc:  # noqa: B902 (any failure of the remote call is reported)
            self._node.get_logger().error(f'end_episode call failed: {exc}')
            self._publish(outcome, False, str(exc))
            return
        if result is None:
            self._publish(outcome, False, 'no response')
            return
        if not result.success:
            self._node.get_logger().warning(f'end_episode refused: {result.message}')
        self._publish(outcome, bool(result.success), result.message)

    def _publish(self, outcome, reported: bool, message: str) -> None:
        """Publish the episode's end on ``~/episode`` (JSON), for orchestrators and operators."""
        data = dict(outcome, reported=reported, message=message)
        self.publisher.publish(String(data=json.dumps(data)))
