"""The console's ROS side: one rclpy node that talks to the policy node over its public interface.

It uses only what any ROS client could: the services ``~/start_episode``, ``~/end_episode``,
``~/abort_episode``, the topics ``~/evaluation``, ``~/merge_state``, ``/diagnostics`` and a
camera topic, the node's standard parameter services (``episode_tag``, ``camera_topics``) and
``/parameter_events``. Callbacks only store the newest message; the web server reads a
consistent snapshot with :meth:`ConsoleClient.snapshot` and calls services from worker threads
(:meth:`ConsoleClient.call_action`, :meth:`ConsoleClient.set_tag`), never from the executor.
"""
from __future__ import annotations

import json
import threading
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterEvent
from rcl_interfaces.srv import GetParameters
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_parameter_events
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger

from retain_ros.ros.conversions import is_compressed_topic
from retain_ros.ros.console.camera import CameraPreview
from retain_ros.ros.policy_node.qos import LATCHED_QOS
from retain_ros.ros.policy_node.qos import SENSOR_QOS

#: seconds a service call may take (a start applies a schedule setting: a re-merge)
CALL_TIMEOUT = 60.0
#: the operator's actions and the services they call
ACTIONS = {'start': 'start_episode', 'success': 'end_episode', 'failure': 'end_episode',
           'abort': 'abort_episode'}


def resolve(topic: str, namespace: str) -> str:
    """Return ``topic`` resolved in the policy node's ``namespace`` (absolute names as given)."""
    if topic.startswith('/'):
        return topic
    return f"{namespace.rstrip('/')}/{topic.lstrip('~/')}"


class ConsoleClient(Node):
    """The ``retain_console`` node.

    :param target: fully qualified name of the policy node (``/retain_policy``).
    :param camera: camera topic of the preview; ``''`` = the policy node's first
        ``camera_topics`` entry (looked up with :meth:`lookup_camera`), ``'none'`` = no preview.
    :param kwargs: passed to ``rclpy.node.Node`` (``context``, ...).
    """

    def __init__(self, target: str = '/retain_policy', camera: str = '', **kwargs):
        super().__init__('retain_console', **kwargs)
        self.target = '/' + target.strip('/')
        self.target_namespace = self.target.rsplit('/', 1)[0] or '/'
        self.camera_topic: Optional[str] = None
        self.preview = CameraPreview()
        self._lock = threading.Lock()
        self._evaluation: Optional[Dict[str, Any]] = None
        self._merge: Optional[Dict[str, Any]] = None
        self._diagnostics: Optional[Dict[str, Any]] = None
        self._tag: Optional[str] = None
        t = self.target
        self.create_subscription(String, f'{t}/evaluation', self._on_evaluation, LATCHED_QOS)
        self.create_subscription(String, f'{t}/merge_state', self._on_merge, LATCHED_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.create_subscription(ParameterEvent, '/parameter_events', self._on_parameters,
                                 qos_profile_parameter_events)
        self._episode_clients = {
            'start_episode': self.create_client(Trigger, f'{t}/start_episode'),
            'end_episode': self.create_client(SetBool, f'{t}/end_episode'),
            'abort_episode': self.create_client(Trigger, f'{t}/abort_episode')}
        self._get_params = self.create_client(GetParameters, f'{t}/get_parameters')
        self._set_params = self.create_client(SetParameters, f'{t}/set_parameters')
        if camera and camera != 'none':
            self.subscribe_camera(resolve(camera, self.target_namespace))

    # ------------------------------------------------------------------ subscriptions
    def subscribe_camera(self, topic: str) -> None:
        """Show ``topic`` (``Image``, or ``CompressedImage`` when it ends in ``/compressed``)."""
        msg_type = CompressedImage if is_compressed_topic(topic) else Image
        self.create_subscription(msg_type, topic, self.preview.update, SENSOR_QOS)
        self.camera_topic = topic
        self.get_logger().info(f'camera preview: {topic}')

    def _json(self, msg: String, what: str) -> Optional[Dict[str, Any]]:
        try:
            value = json.loads(msg.data)
        except ValueError:
            self.get_logger().warning(f'{self.target}/{what} is not JSON; ignored')
            return None
        return value if isinstance(value, dict) else None

    def _on_evaluation(self, msg: String) -> None:
        value = self._json(msg, 'evaluation')
        with self._lock:
            self._evaluation = value

    def _on_merge(self, msg: String) -> None:
        value = self._json(msg, 'merge_state')
        with self._lock:
            self._merge = value

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id != self.target:
                continue
            value = {'level': int.from_bytes(status.level, 'little')
                     if isinstance(status.level, bytes) else int(status.level),
                     'message': status.message,
                     'values': {kv.key: kv.value for kv in status.values}}
            with self._lock:
                self._diagnostics = value

    def _on_parameters(self, msg: ParameterEvent) -> None:
        if msg.node != self.target:
            return
        for param in list(msg.new_parameters) + list(msg.changed_parameters):
            if param.name == 'episode_tag':
                with self._lock:
                    self._tag = param.value.string_value

    def snapshot(self) -> Tuple[Any, Any, Any, Optional[str]]:
        """Return ``(evaluation, merge_state, diagnostics, episode_tag)`` as last received."""
        with self._lock:
            return self._evaluation, self._merge, self._diagnostics, self._tag

    # ------------------------------------------------------------------ calls (worker threads)
    def _call(self, client, request, timeout: float = CALL_TIMEOUT):
        if not client.wait_for_service(timeout_sec=2.0):
            raise RuntimeError(f'service {client.srv_name} is not available: is the policy '
                               f'node {self.target} running (and new enough)?')
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            raise RuntimeError(f'service {client.srv_name} did not answer in {timeout:g} s')
        return future.result()

    def call_action(self, action: str) -> Tuple[bool, str]:
        """Call the service of ``action`` (``start``, ``success``, ``failure``, ``abort``).

        :return: ``(success, message)`` of the reply, or ``(False, reason)``.
        :raises ValueError: on an unknown action.
        """
        if action not in ACTIONS:
            raise ValueError(f'unknown action {action!r}; one of {sorted(ACTIONS)}')
        client = self._episode_clients[ACTIONS[action]]
        request = (SetBool.Request(data=action == 'success') if action in ('success', 'failure')
                   else Trigger.Request())
        try:
            reply = self._call(client, request)
        except RuntimeError as exc:
            return False, str(exc)
        return bool(reply.success), str(reply.message)

    def set_tag(self, tag: str) -> Tuple[bool, str]:
        """Set the policy node's ``episode_tag`` parameter.

        :return: ``(successful, reason)`` of the parameter set.
        """
        request = SetParameters.Request()
        request.parameters = [Parameter('episode_tag', Parameter.Type.STRING,
                                        str(tag)).to_parameter_msg()]
        try:
            result = self._call(self._set_params, request).results[0]
        except RuntimeError as exc:
            return False, str(exc)
        if result.successful:
            with self._lock:
                self._tag = str(tag)
        return bool(result.successful), str(result.reason)

    def get_parameter_values(self, *names: str) -> Dict[str, Any]:
        """Return the policy node's parameters ``names`` (``{}`` when it does not answer)."""
        request = GetParameters.Request(names=list(names))
        try:
            values = self._call(self._get_params, request, timeout=10.0).values
        except RuntimeError:
            return {}
        return {n: Parameter.from_parameter_msg(ParameterMsg(name=n, value=v)).value
                for n, v in zip(names, values)}

    def refresh_tag(self) -> None:
        """Read ``episode_tag`` from the node (at start; later changes arrive as events)."""
        value = self.get_parameter_values('episode_tag').get('episode_tag')
        if value is not None:
            with self._lock:
                self._tag = str(value)

    def lookup_camera(self) -> None:
        """Subscribe the preview to the node's first ``camera_topics`` entry (when it has one)."""
        topics = self.get_parameter_values('camera_topics').get('camera_topics') or []
        topics = [t for t in topics if str(t).strip()]
        if topics and self.camera_topic is None:
            self.subscribe_camera(resolve(str(topics[0]), self.target_namespace))
