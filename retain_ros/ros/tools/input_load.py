"""The ``retain_policy`` node under a high input rate: chunks / s and input ages, idle vs loaded.

A publisher *process* (:mod:`.load_publisher`, its own rclpy context, as a camera driver would
be) sends 224x224 rgb8 images and ``sensor_msgs/JointState`` messages, each stamped with the time
it is published. The node (random tiny pi0 on CPU, :mod:`.checkpoints`; one camera, trajectory
output, 10 chunks / s nominal: :data:`NODE_PARAMS`) runs in this process on the executor its
``main()`` uses.
:func:`run` measures two phases:

- **idle**: 20 Hz images, 50 Hz joint states;
- **loaded**: the given image and joint-state rates, optionally with a CPU hog (one
  busy-looping process beside the node).

Per phase (:func:`measure`): chunks / s, the share of the phase the node held, the inputs' ages
(the node's own input ages, sampled every 0.1 s: p50 / max), the age of the image and of the
observation at the start of every inference (the node's step timings: inference start minus the
image's header stamp / ``obs_time``; p50 / max), image messages published / delivered to the
node's callback / stored as the node's latest frame, CPU share per thread.
``benchmarks/input_load.py`` prints them.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Dict
from typing import List
from typing import Optional

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
from retain_ros.ros.node_main import make_executor
from retain_ros.ros.node_main import spin_in_background
from retain_ros.ros.policy_node.cameras import CameraInputs
from retain_ros.ros.policy_node.node import PolicyNode
from retain_ros.ros.tools.checkpoints import JOINTS
from retain_ros.ros.tools.checkpoints import write_random_pair
from retain_ros.ros.tools.load_publisher import CAMERA_TOPIC
from retain_ros.ros.tools.load_publisher import cpu_hog
from retain_ros.ros.tools.load_publisher import LoadPublisher
from retain_ros.ros.tools.threads import StackSampler
from retain_ros.ros.tools.threads import thread_cpu

#: the node's acting parameters: 10 chunks / s nominal
NODE_PARAMS = {'control_period': 0.05, 'replan_steps': 2, 'max_observation_age': 1.0}


# --------------------------------------------------------------------------- the node
class _Counters:
    """Image messages delivered to the node's camera callback / stored as its latest frame."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delivered = 0
        self.stored = 0

    def snapshot(self) -> Dict[str, int]:
        with self.lock:
            return {'delivered': self.delivered, 'stored': self.stored}


def instrument(counters: _Counters) -> None:
    """Count the node's camera deliveries and stored frames (class-level wrappers).

    Must run before the node activates (its subscriptions bind the methods then).
    """
    hub = CameraInputs
    if getattr(hub, '_input_load_instrumented', False):
        hub._input_load_counters = counters
        return
    hub._input_load_instrumented = True
    hub._input_load_counters = counters
    callback = hub._camera_callback

    def counted_callback(self, *args):
        c = type(self)._input_load_counters
        with c.lock:
            c.delivered += 1
        return callback(self, *args)

    hub._camera_callback = counted_callback

    class CountingDict(dict):
        def __setitem__(self, key, value):
            c = hub._input_load_counters
            with c.lock:
                c.stored += 1
            super().__setitem__(key, value)

    init = hub.__init__

    def counted_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._images = CountingDict()

    hub.__init__ = counted_init


class NodeUnderLoad:
    """The ``retain_policy`` node in this process, on the executor its ``main()`` uses."""

    def __init__(self, tmp: str, params: Optional[dict] = None):
        self.counters = _Counters()
        instrument(self.counters)
        pre, ft = write_random_pair(tmp)
        values = {
            'pretrained_path': pre, 'finetuned_paths': [ft], 'camera_topics': [CAMERA_TOPIC],
            'joint_names': list(JOINTS), 'device': 'cpu', 'dtype': 'float32',
            'default_instruction': 'put the gripper on the red block',
            'episode_log': os.path.join(tmp, 'episodes.jsonl'), **NODE_PARAMS}
        values.update(params or {})
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = PolicyNode(context=self.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        self.executor = make_executor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = spin_in_background(self.executor)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=5)


def _pct(values: List[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


def measure(node_ul: NodeUnderLoad, publisher: Optional[LoadPublisher], seconds: float,
            sample_period: float = 0.1) -> dict:
    """Watch the node for ``seconds``: chunks / s, hold share, ages (see the module docstring)."""
    node = node_ul.node
    offset = time.time() - time.monotonic()     # ROS (system) time of a monotonic time
    t0 = time.monotonic()
    with node.stats.lock:
        chunks0 = node.stats.chunks_published
    pub0 = publisher.counts() if publisher is not None else {'images': 0, 'joints': 0}
    cnt0 = node_ul.counters.snapshot()
    cpu0 = thread_cpu()
    ages: Dict[str, List[float]] = {}
    held = samples = 0
    reasons: Dict[str, int] = {}
    while time.monotonic() - t0 < seconds:
        inputs = node.inputs
        if inputs is not None:
            for topic, age in inputs.ages().items():
                ages.setdefault(topic, []).append(float('inf') if age is None else age)
        reason = node.hold_reason
        samples += 1
        if reason:
            held += 1
            key = reason.split(' (')[0]
            reasons[key] = reasons.get(key, 0) + 1
        time.sleep(sample_period)
    t1 = time.monotonic()
    with node.stats.lock:
        chunks1 = node.stats.chunks_published
    pub1 = publisher.counts() if publisher is not None else {'images': 0, 'joints': 0}
    cnt1 = node_ul.counters.snapshot()
    cpu1 = thread_cpu()
    steps = [s for s in list(node.step_timings) if t0 <= s.start <= t1]
    image_age = [s.start + offset - stamp for s in steps for stamp in s.image_stamps]
    obs_age = [s.start + offset - s.obs_time for s in steps]
    span = t1 - t0
    return {
        'seconds': span,
        'chunks_per_s': (chunks1 - chunks0) / span,
        'steps': len(steps),
        'held': held / max(samples, 1),
        'reasons': reasons,
        'ages': {t: (_pct(v, 50), max(v) if v else float('nan')) for t, v in ages.items()},
        'image_age_at_inference': (_pct(image_age, 50), max(image_age, default=float('nan'))),
        'obs_age_at_inference': (_pct(obs_age, 50), max(obs_age, default=float('nan'))),
        'images_published_per_s': (pub1['images'] - pub0['images']) / span,
        'joints_published_per_s': (pub1['joints'] - pub0['joints']) / span,
        'images_delivered_per_s': (cnt1['delivered'] - cnt0['delivered']) / span,
        'images_stored_per_s': (cnt1['stored'] - cnt0['stored']) / span,
        'model_ms_p50': _pct(list(node.stats.model_ms), 50),
        'thread_cpu': {k: (v - cpu0.get(k, 0.0)) / span for k, v in cpu1.items()
                       if v - cpu0.get(k, 0.0) > 0.01 * span},
    }


def describe(label: str, m: dict) -> str:
    ages = ', '.join(f'{t} {p50:.3f}/{mx:.3f}' for t, (p50, mx) in m['ages'].items())
    return (f'{label}: {m["chunks_per_s"]:.1f} chunks/s ({m["steps"]} steps), held '
            f'{m["held"] * 100:.0f}% {m["reasons"] or ""}; ages p50/max s: {ages}; at '
            f'inference: image {m["image_age_at_inference"][0]:.3f}/'
            f'{m["image_age_at_inference"][1]:.3f}, obs {m["obs_age_at_inference"][0]:.3f}/'
            f'{m["obs_age_at_inference"][1]:.3f}; images/s published '
            f'{m["images_published_per_s"]:.0f}, delivered {m["images_delivered_per_s"]:.0f}, '
            f'stored {m["images_stored_per_s"]:.0f}; joints/s {m["joints_published_per_s"]:.0f};'
            f' model p50 {m["model_ms_p50"]:.1f} ms; CPU share by thread: '
            + ', '.join(f'{k} {v * 100:.0f}%' for k, v in
                        sorted(m['thread_cpu'].items(), key=lambda kv: -kv[1])))


def run(seconds: float, image_hz: float, joint_hz: float, hog: bool, qos: str,
        idle_seconds: float = 4.0, profile: bool = False) -> Dict[str, dict]:
    """Run the idle phase, then the loaded phase; return their measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeUnderLoad(tmp)
        publisher = LoadPublisher(qos=qos)
        hog_process = None
        try:
            publisher.set_rates(20, 50)
            deadline = time.monotonic() + 30.0   # discovery, first observations: acting
            while node.node.hold_reason is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            idle = measure(node, publisher, idle_seconds)
            publisher.set_rates(image_hz, joint_hz)
            if hog:
                hog_process = cpu_hog(seconds + 5.0)
            sampler = StackSampler() if profile else None
            loaded = measure(node, publisher, seconds)
            if sampler is not None:
                print(sampler.report(), flush=True)
            return {'idle': idle, 'loaded': loaded}
        finally:
            publisher.close()
            if hog_process is not None:
                hog_process.terminate()
                hog_process.join(5.0)
            node.close()
