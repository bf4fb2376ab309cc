"""QoS profiles of the ``retain_policy`` node and its subscriptions' QoS-mismatch warnings.

A publisher whose QoS is incompatible with a subscription is reported by a clear warning and
counted (``qos_incompatible.<topic>`` in ``/diagnostics``); its messages never arrive.
"""
from __future__ import annotations

import functools
import threading
from typing import Any
from typing import Dict
from typing import List

from rclpy.qos import DurabilityPolicy
from rclpy.qos import HistoryPolicy
from rclpy.qos import QoSPolicyKind
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

#: cameras and joint states: best effort (compatible with every publisher), latest only
SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.BEST_EFFORT)
#: latched topics (``~/merge_state``; the instruction's transient-local subscription)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: the instruction's volatile subscription (what ``ros2 topic pub`` offers by default)
INSTRUCTION_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


class Subscriptions:
    """The input subscriptions of one activation, with their QoS-mismatch warnings.

    :param node: the node (subscriptions, logger).
    """

    def __init__(self, node):
        self._node = node
        self._lock = threading.Lock()
        self._subscriptions: List[Any] = []
        #: publishers with incompatible QoS, by topic (their total count)
        self.incompatible: Dict[str, int] = {}

    def add(self, msg_type, topic: str, callback, qos: QoSProfile, warn: bool = True,
            raw: bool = False) -> None:
        """Subscribe ``callback`` to ``topic``.

        :param warn: report publishers with incompatible QoS (False for the instruction's
            transient-local twin: volatile publishers reach the node through the volatile one).
        :param raw: hand ``callback`` the serialized bytes (no rclpy deserialization).
        """
        if warn:
            events = SubscriptionEventCallbacks(
                incompatible_qos=functools.partial(self._incompatible_qos, topic, qos))
        else:
            events = SubscriptionEventCallbacks(incompatible_qos=lambda info: None)
        self._subscriptions.append(self._node.create_subscription(
            msg_type, topic, callback, qos, event_callbacks=events, raw=raw))

    def destroy(self) -> None:
        """Destroy every subscription."""
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions = []

    def _incompatible_qos(self, topic: str, qos: QoSProfile, info) -> None:
        try:
            policy = QoSPolicyKind(int(info.last_policy_kind)).name
        except (ValueError, TypeError):
            policy = str(info.last_policy_kind)
        with self._lock:
            self.incompatible[topic] = int(info.total_count)
        self._node.get_logger().warning(
            f'{topic}: a publisher offers QoS incompatible with this subscription '
            f'(policy {policy}; the node subscribes with reliability='
            f'{qos.reliability.name.lower()}, durability={qos.durability.name.lower()}); its '
            'messages never arrive: change the publisher QoS')
