"""The ``retain_policy`` node under a high input rate: chunks / s and input ages, idle vs loaded.

A publisher *process* (its own rclpy context, as a camera driver would be) sends 224x224 rgb8
images and ``sensor_msgs/JointState`` messages, each stamped with the time it is published. The
node (tiny pi0 on CPU, one camera, trajectory output, 10 chunks / s nominal: ``control_period``
0.05 s, ``replan_steps`` 2, ``max_observation_age`` 1 s) runs in this process on the executor its
``main()`` uses. Two phases, one run:

- **idle**: 20 Hz images, 50 Hz joint states;
- **loaded**: ``--image-hz`` images (default 100) and ``--joint-hz`` joint states (default 200),
  optionally with a CPU hog (``--hog``: one busy-looping process beside the node).

Per phase: chunks / s, the share of the phase the node held, the inputs' ages (the node's own
``age_s.*`` of ``/diagnostics``, sampled every 0.1 s: p50 / max), the age of the image and of the
observation at the start of every inference (``step_timings``: inference start minus the image's
header stamp / ``obs_time``; p50 / max), image messages published / delivered to the node's
callback / stored as the node's latest frame.

    .venv/bin/python benchmarks/input_load.py [--seconds 15] [--image-hz 100] [--joint-hz 200]
        [--hog] [--qos reliable|sensor] [--repeat 1]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from typing import Dict
from typing import List
from typing import Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(101, 200)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

JOINTS = ('j0', 'j1', 'j2', 'j3')
CAMERA_TOPIC = 'camera/image_raw'
JOINT_TOPIC = 'joint_states'
SIDE = 224
#: the node's acting parameters: 10 chunks / s nominal
NODE_PARAMS = {'control_period': 0.05, 'replan_steps': 2, 'max_observation_age': 1.0}


# --------------------------------------------------------------------------- publisher process
def _publisher_main(rates, counts, stop, ready, side: int, qos: str) -> None:
    """Publish images and joint states at ``rates`` (``[image_hz, joint_hz]``, 0 = paused)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from sensor_msgs.msg import JointState

    from retain_ros.ros.conversions import rgb_to_image

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('input_load_publisher', context=context)
    profile = qos_profile_sensor_data if qos == 'sensor' else 10
    image_pub = node.create_publisher(Image, CAMERA_TOPIC, profile)
    joint_pub = node.create_publisher(JointState, JOINT_TOPIC, profile)
    rgb = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    image = rgb_to_image(rgb)
    joints = JointState(name=list(JOINTS), position=[0.0] * len(JOINTS))
    ready.set()
    next_image = next_joint = time.monotonic()
    current = (None, None)
    try:
        while not stop.is_set():
            image_hz, joint_hz = float(rates[0]), float(rates[1])
            now = time.monotonic()
            if (image_hz, joint_hz) != current:
                current = (image_hz, joint_hz)
                next_image = next_joint = now
            due = []
            if image_hz > 0:
                due.append(next_image)
                if now >= next_image:
                    image.header.stamp = node.get_clock().now().to_msg()
                    image_pub.publish(image)
                    counts[0] += 1
                    # absolute deadlines; a late publisher skips ticks instead of bursting
                    next_image = max(next_image + 1.0 / image_hz, now)
            if joint_hz > 0:
                due.append(next_joint)
                if now >= next_joint:
                    joints.header.stamp = node.get_clock().now().to_msg()
                    joint_pub.publish(joints)
                    counts[1] += 1
                    next_joint = max(next_joint + 1.0 / joint_hz, now)
            wait = (min(due) - time.monotonic()) if due else 0.01
            if wait > 0:
                time.sleep(min(wait, 0.01))
    finally:
        node.destroy_node()
        context.try_shutdown()


def _hog_main(seconds: float) -> None:
    """Busy-loop one core for ``seconds``."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


class LoadPublisher:
    """The publisher process: ``set_rates(image_hz, joint_hz)``, ``counts()``, ``close()``."""

    def __init__(self, side: int = SIDE, qos: str = 'reliable'):
        ctx = multiprocessing.get_context('spawn')
        self._rates = ctx.Array('d', [0.0, 0.0])
        self._counts = ctx.Array('q', [0, 0])
        self._stop = ctx.Event()
        ready = ctx.Event()
        self._process = ctx.Process(target=_publisher_main, daemon=True,
                                    args=(self._rates, self._counts, self._stop, ready, side,
                                          qos))
        self._process.start()
        if not ready.wait(60.0):
            self.close()
            raise RuntimeError('the publisher process did not start')

    def set_rates(self, image_hz: float, joint_hz: float) -> None:
        """Publish at these rates from now on (0 = paused)."""
        self._rates[0], self._rates[1] = float(image_hz), float(joint_hz)

    def counts(self) -> Dict[str, int]:
        """Messages published so far."""
        return {'images': int(self._counts[0]), 'joints': int(self._counts[1])}

    def close(self) -> None:
        """Stop and join the process."""
        self._stop.set()
        self._process.join(10.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)


def cpu_hog(seconds: float) -> multiprocessing.Process:
    """Start one busy-looping process for ``seconds`` (bounded even if nobody joins it)."""
    ctx = multiprocessing.get_context('spawn')
    process = ctx.Process(target=_hog_main, args=(seconds,), daemon=True)
    process.start()
    return process


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
    """Count the InputHub's camera deliveries and stored frames (class-level wrappers).

    Must run before the node activates (its subscriptions bind the methods then).
    """
    from retain_ros.ros import node_inputs

    hub = node_inputs.InputHub
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
        import rclpy
        from rclpy.context import Context
        from rclpy.parameter import Parameter

        from benchmarks.node_latency import write_checkpoint
        from retain_ros.ros.node_main import make_executor
        from retain_ros.ros.node_main import spin_in_background
        from retain_ros.ros.policy_node import PolicyNode

        self.counters = _Counters()
        instrument(self.counters)
        pre = write_checkpoint(os.path.join(tmp, 'pre'), 1, ('base',))
        ft = write_checkpoint(os.path.join(tmp, 'ft'), 2, ('base',))
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


def thread_cpu() -> Dict[str, float]:
    """CPU seconds per thread of this process (Linux), by Python thread name or OS name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf('SC_CLK_TCK')
    out: Dict[str, float] = {}
    try:
        tids = os.listdir('/proc/self/task')
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f'/proc/self/task/{tid}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index('(') + 1:stat.rindex(')')]
        fields = stat[stat.rindex(')') + 2:].split()
        label = names.get(int(tid), comm)
        out[label] = out.get(label, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


class StackSampler:
    """Where each thread is, sampled every ``period`` s (``--profile``): top frames by thread."""

    def __init__(self, period: float = 0.01):
        self.counts: Dict[str, Dict[str, int]] = {}
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='stack-sampler', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self._period):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                where = []
                while frame is not None and len(where) < 3:
                    code = frame.f_code
                    where.append(f'{os.path.basename(code.co_filename)}:{code.co_name}:'
                                 f'{frame.f_lineno}')
                    frame = frame.f_back
                per = self.counts.setdefault(names.get(ident, str(ident)), {})
                key = ' < '.join(where)
                per[key] = per.get(key, 0) + 1

    def report(self, top: int = 6) -> str:
        self._stop.set()
        self._thread.join(1.0)
        lines = []
        for name, per in self.counts.items():
            total = sum(per.values())
            lines.append(f'  thread {name} ({total} samples):')
            for key, n in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
                lines.append(f'    {n * 100 / total:5.1f}% {key}')
        return '\n'.join(lines)


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
    """One run: idle phase then loaded phase; returns their measurements."""
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=15.0)
    parser.add_argument('--image-hz', type=float, default=100.0)
    parser.add_argument('--joint-hz', type=float, default=200.0)
    parser.add_argument('--hog', action='store_true', help='one busy-looping process beside')
    parser.add_argument('--qos', choices=('reliable', 'sensor'), default='reliable',
                        help="publisher QoS: reliable depth 10 (ros2 topic pub's) or sensor data")
    parser.add_argument('--repeat', type=int, default=1)
    parser.add_argument('--profile', action='store_true',
                        help='sample the threads\' stacks during the loaded phase')
    args = parser.parse_args(argv)
    for i in range(args.repeat):
        result = run(args.seconds, args.image_hz, args.joint_hz, args.hog, args.qos,
                     profile=args.profile)
        print(f'run {i + 1}/{args.repeat}', flush=True)
        for label, m in result.items():
            print('  ' + describe(label, m), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
