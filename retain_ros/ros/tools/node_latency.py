"""Latency of the retain_policy node: camera message published -> action chunk received.

Each sample publishes one joint state and one 224x224 rgb8 image per camera, all stamped with
the node clock's time at publishing (unique per sample), then waits for the JointTrajectory
computed from exactly those messages: the node ages inputs by their header stamps and stamps the
chunk with the observation time (the joint state's stamp), so the step is the one whose image
stamps and observation time are the sample's stamp, and the chunk is the one whose header stamp
is that stamp. The end-to-end time is split with the node's own step timings:

- ``model``: ``policy.predict`` wall time (pre-processing, flow-matching sampler, unnormalize);
- ``wait``: from the observation being complete to the inference timer picking it up (a phase
  of the replan timer, at most one timer period; not overhead of the node's code path);
- ``overhead`` = end-to-end - model - wait: publish, DDS transport both ways, deserialization,
  image conversion, reading the observation, safety filter, message build; split into
  ``inbound`` (publish -> observation complete in the node, conversion included), ``convert``
  (image conversion alone), ``observe`` (the timer step reading the inputs into an observation),
  ``post`` (embodiment maths + safety filter) and ``outbound`` (the publish call returned ->
  chunk received); what the parts leave of the overhead is the rest of the step in the node
  (building and publishing the message, locks, bookkeeping).

Between samples the inputs are left to go stale so the node holds (no inference runs in the
background while a sample is measured). Node and probe share one process (each on its own
executor and thread; the node's inference on its own thread), the policy is a random tiny pi0
on CPU (:mod:`.checkpoints`). ``benchmarks/node_latency.py`` tabulates :func:`run`'s samples.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from typing import Optional

from builtin_interfaces.msg import Time
import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
from retain_ros.ros.conversions import rgb_to_image
from retain_ros.ros.node_main import make_executor
from retain_ros.ros.node_main import spin_in_background
from retain_ros.ros.policy_node.node import PolicyNode
from retain_ros.ros.tools.checkpoints import JOINTS
from retain_ros.ros.tools.checkpoints import write_random_pair
from sensor_msgs.msg import Image
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

#: camera names, in the order cameras are added
CAMERAS = ('base', 'wrist', 'side')
#: camera image side (pixels)
SIDE = 224
#: a sample without its chunk after this long has none (the chunk horizon is 0.2 s)
NO_CHUNK_S = 2.0
#: float seconds round-trip a stamp to within ~0.3 us at today's epoch; stamps differ by >= 0.1 s
STAMP_TOLERANCE_NS = 1000


def same_stamp(seconds: float, other: float) -> bool:
    """Two stamps in float seconds are the same sample's (within :data:`STAMP_TOLERANCE_NS`)."""
    return abs(seconds - other) <= STAMP_TOLERANCE_NS * 1e-9


def sample_messages(images, stamp_ns: int):
    """Return one sample: a JointState (zeros) and one rgb8 Image per camera, stamped ``stamp_ns``.

    The stamp must be the node clock's time at publishing: the node ages its inputs by their
    header stamps (``max_observation_age``, ``clock_offset``) and holds on stale ones.
    """
    stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    joints = JointState(name=list(JOINTS), position=[0.0] * len(JOINTS))
    joints.header.stamp = stamp
    msgs = []
    for rgb in images:
        msg = rgb_to_image(rgb)
        msg.header.stamp = stamp
        msgs.append(msg)
    return joints, msgs


class LatencyBench:
    """Node + probe in one context; measures ``samples`` publish -> chunk round trips."""

    def __init__(self, pretrained: str, finetuned: str, cameras: int,
                 record: Optional[str] = None, record_dir: str = ''):
        self.context = Context()
        rclpy.init(context=self.context)
        self.topics = [f'cam{i}/image_raw' for i in range(cameras)]
        values = {
            'pretrained_path': pretrained, 'finetuned_paths': [finetuned],
            'camera_topics': self.topics, 'joint_names': list(JOINTS), 'device': 'cpu',
            'dtype': 'float32', 'default_instruction': 'put the gripper on the red block',
            # a 20 ms replan timer; inputs older than 60 ms make the node hold between samples
            'control_period': 0.02, 'replan_steps': 1, 'max_observation_age': 0.06,
            'episode_log': os.path.join(tempfile.gettempdir(), 'node_latency_episodes.jsonl'),
        }
        if record:
            values.update(record=True, record_dir=record_dir,
                          record_jpeg_quality=90 if record == 'jpeg' else 0)
        self.record = record
        self.node = PolicyNode(context=self.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        self.probe = rclpy.create_node('node_latency_probe', context=self.context)
        self.image_pubs = [self.probe.create_publisher(Image, t, 10) for t in self.topics]
        self.joint_pub = self.probe.create_publisher(JointState, 'joint_states', 10)
        self._arrived = {}    # chunk header stamp (ns) -> monotonic arrival time
        self._last_stamp_ns = 0
        self.points = 0     # the chunk's point count (the transport floor's echo copies it)
        self._cond = threading.Condition()
        self.probe.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory',
                                       self._chunk_callback, 10)
        # node and probe on separate executors and threads, as separate processes would be
        self.executor = make_executor(context=self.context)
        self.executor.add_node(self.node)
        self.probe_executor = make_executor(context=self.context)
        self.probe_executor.add_node(self.probe)
        self.threads = [spin_in_background(e) for e in (self.executor, self.probe_executor)]
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
                       for _ in self.topics]
        time.sleep(1.0)  # discovery
        self.episode = self._call('start_episode') if record else None

    def _call(self, name: str) -> dict:
        """Call ``~/start_episode`` / ``~/end_episode`` (success) from the probe, as ros2 would."""
        srv = Trigger if name == 'start_episode' else SetBool
        client = self.probe.create_client(srv, f'/retain_policy/{name}')
        try:
            if not client.wait_for_service(timeout_sec=10):
                raise RuntimeError(f'no ~/{name} service')
            request = srv.Request() if srv is Trigger else srv.Request(data=True)
            future = client.call_async(request)
            deadline = time.monotonic() + 60
            while not future.done():
                if time.monotonic() > deadline:
                    raise RuntimeError(f'~/{name} did not answer')
                time.sleep(0.01)
            response = future.result()
            if not response.success:
                raise RuntimeError(f'~/{name}: {response.message}')
            return json.loads(response.message)
        finally:
            self.probe.destroy_client(client)

    def end_episode(self) -> dict:
        """End the recorded episode; returns its reply (with the ``recording`` counts)."""
        return self._call('end_episode')

    def _chunk_callback(self, msg) -> None:
        now = time.monotonic()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._cond:
            self.points = len(msg.points)
            self._arrived.setdefault(stamp_ns, now)   # the first chunk of that observation
            self._cond.notify_all()

    def next_stamp_ns(self) -> int:
        """Return the node clock's time now (ns), strictly after the previous sample's stamp."""
        now = self.node.get_clock().now().nanoseconds
        self._last_stamp_ns = max(now, self._last_stamp_ns + 1)
        return self._last_stamp_ns

    def sample(self, index: int) -> Optional[dict]:
        """Publish one stamped observation; return the timings of the chunk made from it.

        None when no chunk came within :data:`NO_CHUNK_S`: the node dropped it as late (every
        action in the past, ``late_chunk``) or a best-effort message of the sample was lost.
        """
        stamp_ns = self.next_stamp_ns()
        joints, images = sample_messages(self.images, stamp_ns)
        stamp_sec = stamp_ns * 1e-9
        t_pub = time.monotonic()
        self.joint_pub.publish(joints)
        for pub, msg in zip(self.image_pubs, images):
            pub.publish(msg)
        deadline = t_pub + NO_CHUNK_S
        timing, t_arr = None, None
        while t_arr is None:
            if time.monotonic() > deadline:
                return None
            if timing is None:
                # the first inference step that used exactly this sample's messages
                timing = next((step for step in list(self.node.step_timings)
                               if same_stamp(step.obs_time, stamp_sec) and step.image_stamps
                               and all(same_stamp(s, stamp_sec) for s in step.image_stamps)),
                              None)
            with self._cond:
                if timing is not None:
                    # the chunk is stamped with the observation time (clock_offset is 0)
                    t_arr = next((t for ns, t in self._arrived.items()
                                  if abs(ns - stamp_ns) <= STAMP_TOLERANCE_NS), None)
                if t_arr is None:
                    self._cond.wait(0.01)
        e2e = (t_arr - t_pub) * 1e3
        # the timer's phase only: the step's reading of the observation is the node's work (an
        # input arriving while it reads makes the difference slightly negative)
        wait = max(0.0, (timing.start - timing.obs_ready) * 1e3 - timing.observe_ms)
        return {
            'e2e': e2e, 'model': timing.model_ms, 'wait': wait,
            'overhead': e2e - timing.model_ms - wait,
            'inbound': (timing.obs_ready - t_pub) * 1e3, 'convert': timing.convert_ms,
            'observe': timing.observe_ms, 'post': timing.post_ms,
            'outbound': (t_arr - timing.published) * 1e3,
        }

    def close(self) -> None:
        for executor in (self.executor, self.probe_executor):
            executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        self.probe.destroy_node()
        self.context.try_shutdown()
        for thread in self.threads:
            thread.join(timeout=5)


def run(cameras: int, samples: int, warmup: int = 5, record: Optional[str] = None):
    """Measure ``samples`` round trips with ``cameras`` cameras: ``(rows, extra)``.

    ``rows``: one dict of timings per sample that got its chunk. ``extra['missed']``: measured
    samples without a chunk (not in ``rows``), ``extra['late']`` of them dropped by the node as
    late. With ``record`` (``'raw'`` or ``'jpeg'``) an episode is recorded throughout and
    ``extra['recording']`` holds the episode line's ``recording`` counts plus the bag's size
    (``bag_mib``), the episode's duration (``seconds``) and the camera frames in the bag
    (``frames``). ``extra['points']``: the chunk's point count. Raises RuntimeError when more
    than ``max(1, samples // 10)`` samples got no chunk (the node holds: its reason is in the
    message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        names = CAMERAS[:cameras]
        pre, ft = write_random_pair(tmp, names)
        bench = LatencyBench(pre, ft, cameras, record=record, record_dir=os.path.join(tmp, 'bags'))
        extra = {'missed': 0, 'late': 0, 'recording': None}
        try:
            rows = []
            for i in range(warmup + samples):
                if i == warmup:
                    late0 = bench.node.stats.dropped.get('late_chunk', 0)
                row = bench.sample(i)
                if i >= warmup:
                    if row is None:
                        extra['missed'] += 1
                    else:
                        rows.append(row)
                time.sleep(0.12)  # inputs go stale: the node holds until the next sample
            extra['late'] = bench.node.stats.dropped.get('late_chunk', 0) - late0
            extra['points'] = bench.points
            if extra['missed'] > max(1, samples // 10):
                raise RuntimeError(f'{extra["missed"]} of {samples} samples got no chunk '
                                   f'({extra["late"]} late); the node holds: '
                                   f'{bench.node.hold_reason!r}')
            if record:
                reply = bench.end_episode()
                recording = dict(reply['recording'])
                recording['seconds'] = float(reply['duration_s'])
                recording['frames'] = sum(n for topic, n in recording['topics'].items()
                                          if 'image_raw' in topic)
                bag = recording['bag']
                recording['bag_mib'] = sum(os.path.getsize(os.path.join(bag, f))
                                           for f in os.listdir(bag)) / 2 ** 20
                extra['recording'] = recording
        finally:
            bench.close()
        return rows, extra
