"""Latency of the retain_policy node: camera message published -> action chunk received.

For 1-3 cameras at 224x224 (rgb8), the tiny pi0 on CPU, each sample publishes one joint state and
one image per camera, all stamped with the node clock's time at publishing (unique per sample),
then waits for the JointTrajectory computed from exactly those messages: the node ages inputs by
their header stamps and stamps the chunk with the observation time (the joint state's stamp), so
the step is the one whose image stamps and observation time are the sample's stamp, and the chunk
is the one whose header stamp is that stamp. The end-to-end time is split with the node's own
step timings:

- ``model``: ``policy.predict`` wall time (pre-processing, flow-matching sampler, unnormalize);
- ``wait``: from the observation being complete to the inference timer picking it up (a phase
  of the replan timer, at most one timer period; not overhead of the node's code path, reported
  separately);
- ``overhead`` = end-to-end - model - wait: publish, DDS transport both ways, deserialization,
  image conversion, safety filter, message build (what ROS and the node add to the model);
  split into ``inbound`` (publish -> observation complete in the node, conversion included),
  ``convert`` (image conversion alone), ``post`` (safety filter + trajectory message build) and
  ``outbound`` (publish call -> chunk received).

Between samples the inputs are left to go stale so the node holds (no inference runs in the
background while a sample is measured). Node and publisher share one process (each on its own
single-threaded executor and thread; the node's inference on its own thread), transport is Fast
DDS on loopback.

    .venv/bin/python benchmarks/node_latency.py [--samples 60] [--cameras 1 2 3] [--results]
    .venv/bin/python benchmarks/node_latency.py --recording [--cameras 1 3] [--repeat 2]
        [--results]
    (--threads N sets torch's threads; default torch's own, as the node runs)

``--results`` writes the table into the ``## Node latency`` section of benchmarks/RESULTS.md
(replacing that section only). ``--recording`` measures the same round trips with the node's
``record`` parameter off, on (images as received) and on with JPEG re-encoding, an episode
running throughout, in the same run (ratios against the run without recording), with the bag's
size and dropped-frame count; ``--results`` then writes the ``## Recording`` section.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import threading
import time
from typing import Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.results import write_section  # noqa: E402
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(101, 200)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

JOINTS = ('j0', 'j1', 'j2', 'j3')
CAMERAS = ('base', 'wrist', 'side')
SIDE = 224
SECTION = '## Node latency'
RECORDING_SECTION = '## Recording'


def write_checkpoint(out_dir: str, seed: int, cameras) -> str:
    """A randomly initialised tiny pi0 (default tiny widths, 64 px model input)."""
    from retain_ros.policies.pi0 import load_tokenizer
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import Pi0Policy
    from retain_ros.policies.pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0 import save_byte_tokenizer
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.policies.pi0 import tiny_pi0_config

    dim = len(JOINTS)
    spec = pi0_config_from_dict(tiny_pi0_config(state_dim=dim, action_dim=dim,
                                                camera_names=tuple(cameras)))
    tokenizer = load_tokenizer(save_byte_tokenizer(os.path.join(out_dir, 'tokenizer')))
    policy = Pi0Policy.from_spec(spec, tokenizer, NormStats.identity(dim, dim),
                                 init_weights=True, init_seed=seed)
    return save_pi0_checkpoint(policy, out_dir)


#: a sample without its chunk after this long has none (the chunk horizon is 0.2 s)
NO_CHUNK_S = 2.0
#: float seconds round-trip a stamp to within ~0.3 us at today's epoch; stamps differ by >= 0.1 s
STAMP_TOLERANCE_NS = 1000


def same_stamp(seconds: float, other: float) -> bool:
    """Two stamps in float seconds are the same sample's (within :data:`STAMP_TOLERANCE_NS`)."""
    return abs(seconds - other) <= STAMP_TOLERANCE_NS * 1e-9


def sample_messages(images, stamp_ns: int):
    """One sample: a JointState (zeros) and one rgb8 Image per camera, all stamped ``stamp_ns``.

    The stamp must be the node clock's time at publishing: the node ages its inputs by their
    header stamps (``max_observation_age``, ``clock_offset``) and holds on stale ones.
    """
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import JointState

    from retain_ros.ros.conversions import rgb_to_image

    stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    joints = JointState(name=list(JOINTS), position=[0.0] * len(JOINTS))
    joints.header.stamp = stamp
    msgs = []
    for rgb in images:
        msg = rgb_to_image(rgb)
        msg.header.stamp = stamp
        msgs.append(msg)
    return joints, msgs


class Bench:
    """Node + probe in one context; measures ``samples`` publish -> chunk round trips."""

    def __init__(self, pretrained: str, finetuned: str, cameras: int,
                 record: Optional[str] = None, record_dir: str = ''):
        import rclpy
        from rclpy.context import Context
        from retain_ros.ros.node_main import make_executor
        from retain_ros.ros.node_main import spin_in_background
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        from retain_ros.ros.policy_node import PolicyNode

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
        import json

        from std_srvs.srv import SetBool
        from std_srvs.srv import Trigger

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
            self._arrived.setdefault(stamp_ns, now)   # the first chunk of that observation
            self._cond.notify_all()

    def next_stamp_ns(self) -> int:
        """The node clock's time now (ns), strictly after the previous sample's stamp."""
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
        wait = (timing.start - timing.obs_ready) * 1e3
        return {
            'e2e': e2e, 'model': timing.model_ms, 'wait': wait,
            'overhead': e2e - timing.model_ms - wait,
            'inbound': (timing.obs_ready - t_pub) * 1e3, 'convert': timing.convert_ms,
            'post': timing.post_ms, 'outbound': (t_arr - timing.published) * 1e3,
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
    (``frames``). Raises RuntimeError when more than ``max(1, samples // 10)`` samples got
    no chunk (the node holds: its reason is in the message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        names = CAMERAS[:cameras]
        pre = write_checkpoint(os.path.join(tmp, 'pre'), 1, names)
        ft = write_checkpoint(os.path.join(tmp, 'ft'), 2, names)
        bench = Bench(pre, ft, cameras, record=record, record_dir=os.path.join(tmp, 'bags'))
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


def summarize(rows, extra):
    """p50 / p99 of every timing; ``no_chunk``: the samples without a chunk, as a cell."""
    out = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        out[key] = (float(np.percentile(values, 50)), float(np.percentile(values, 99)))
    out['no_chunk'] = f'{extra["missed"]} ({extra["late"]} late)'
    return out


def table(results, samples: int) -> str:
    lines = [
        f'Tiny pi0 (random weights, 64 px model input) on CPU, {SIDE}x{SIDE} rgb8 cameras, '
        f'{samples} samples per row; p50 / p99 in ms. Overhead = end-to-end - model - timer '
        'wait (publish, DDS loopback both ways, deserialization, image conversion, safety, '
        'message build). Node and publisher in one process. "no chunk": samples whose chunk '
        'never came, left out of the percentiles: "late" = the node dropped the chunk because '
        'inference outlasted its 0.2 s of actions; the others went stale (60 ms) before the '
        'inference timer picked them up, or lost a best-effort message.',
        '',
        '| cameras | end-to-end | model (predict) | timer wait | overhead | overhead / model '
        '(p50) | of which: inbound | convert | post | outbound | no chunk |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for cams, s in results.items():
        ratio = s['overhead'][0] / s['model'][0] * 100
        lines.append(
            f'| {cams} | {s["e2e"][0]:.1f} / {s["e2e"][1]:.1f} | {s["model"][0]:.1f} / '
            f'{s["model"][1]:.1f} | {s["wait"][0]:.1f} / {s["wait"][1]:.1f} | '
            f'{s["overhead"][0]:.2f} / {s["overhead"][1]:.2f} | {ratio:.0f}% | '
            f'{s["inbound"][0]:.2f} | {s["convert"][0]:.2f} | {s["post"][0]:.2f} | '
            f'{s["outbound"][0]:.2f} | {s["no_chunk"]} |')
    return '\n'.join(lines)


MODES = (('off', None), ('on (as received)', 'raw'), ('on (JPEG q90)', 'jpeg'))


def bag_size(rec, cameras: int) -> str:
    """Bag columns: MiB, episode s, MiB per s per camera, KiB per camera frame, counts."""
    per_frame = rec['bag_mib'] * 1024 / rec['frames'] if rec['frames'] else float('nan')
    return (f'{rec["bag_mib"]:.2f} | {rec["seconds"]:.1f} | '
            f'{rec["bag_mib"] / rec["seconds"] / cameras:.3f} | {per_frame:.0f} | '
            f'{rec["frames"]} / {rec["messages"]} | {rec["dropped"]}')


def recording_table(cameras, samples: int, machine: str) -> str:
    """Step latency with and without recording, same run; bag size and drops."""
    lines = [
        f'`.venv/bin/python benchmarks/node_latency.py --recording --results` on {machine}. '
        f'Same round trip as "Node latency" ({SIDE}x{SIDE} rgb8 cameras of uniform random '
        f'noise, tiny pi0, {samples} samples per row, p50 / p99 ms); "recording on" = the '
        'node\'s `record` parameter with an episode running for the whole row (the bag holds '
        'every camera frame, joint state, chunk, `~/merge_state` and `/diagnostics` message of '
        'the row). Ratios are against the row without recording of the same camera count, '
        'measured in the same run. Camera frames arrive at the benchmark\'s sample rate '
        '(one per camera per sample, 0.17-0.22 s apart), so MiB / s / camera is at that '
        'rate; KiB per camera '
        'frame (bag size / camera frames, everything else included) is what scales to a real '
        'camera rate. Noise images are the worst case for zstd and JPEG. "no chunk" as in '
        '"Node latency"; "dropped": frames the recorder dropped.',
        '',
        '| cameras | recording | end-to-end | model (predict) | overhead | overhead vs off '
        '(p50) | e2e vs off (p50) | no chunk | bag MiB | episode s | MiB / s / camera | '
        'KiB / camera frame | camera frames / messages | dropped |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for cams in cameras:
        base = None
        for label, mode in MODES:
            rows, extra = run(cams, samples, record=mode)
            rec = extra['recording']
            s = summarize(rows, extra)
            base = base or s
            print(f'{cams} camera(s), recording {label}: e2e p50 {s["e2e"][0]:.1f} ms, '
                  f'overhead p50 {s["overhead"][0]:.2f} ms' +
                  (f', bag {rec["bag_mib"]:.1f} MiB, dropped {rec["dropped"]}' if rec else ''),
                  flush=True)
            size = bag_size(rec, cams) if rec else '- | - | - | - | - | -'
            lines.append(
                f'| {cams} | {label} | {s["e2e"][0]:.1f} / {s["e2e"][1]:.1f} | '
                f'{s["model"][0]:.1f} / {s["model"][1]:.1f} | '
                f'{s["overhead"][0]:.2f} / {s["overhead"][1]:.2f} | '
                f'{s["overhead"][0] - base["overhead"][0]:+.2f} ms | '
                f'{s["e2e"][0] / base["e2e"][0]:.2f}x | {s["no_chunk"]} | {size} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--samples', type=int, default=60)
    parser.add_argument('--cameras', type=int, nargs='+', default=None)
    parser.add_argument('--recording', action='store_true',
                        help='with / without the record parameter (the Recording section)')
    parser.add_argument('--results', action='store_true',
                        help='write the section of benchmarks/RESULTS.md')
    parser.add_argument('--repeat', type=int, default=1,
                        help='--recording: run the whole comparison this many times (spread)')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch threads (default: torch's own, as the node runs)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
               f'torch {torch.__version__}, {torch.get_num_threads()} torch threads, '
               f'RMW {os.environ.get("RMW_IMPLEMENTATION", "default (Fast DDS)")}')
    if args.recording:
        runs = [recording_table(args.cameras or [1, 3], args.samples, machine)
                for _ in range(args.repeat)]
        text = f'{RECORDING_SECTION}\n\n' + '\n\n'.join(
            (f'Run {i + 1} of {len(runs)}:\n\n' if len(runs) > 1 else '') + table
            for i, table in enumerate(runs))
        print(text)
        if args.results:
            write_section(text, RECORDING_SECTION)
        return 0
    args.cameras = args.cameras or [1, 2, 3]

    results = {}
    for cams in args.cameras:
        rows, extra = run(cams, args.samples)
        results[cams] = summarize(rows, extra)
        s = results[cams]
        print(f'{cams} camera(s): e2e p50 {s["e2e"][0]:.1f} ms, model p50 {s["model"][0]:.1f} ms, '
              f'overhead p50 {s["overhead"][0]:.2f} ms p99 {s["overhead"][1]:.2f} ms', flush=True)
    text = (f'{SECTION}\n\n`.venv/bin/python benchmarks/node_latency.py --results` on {machine}. '
            'No GPU was lent for this task, so there are no GPU rows (pi0-sized bf16 model, '
            'merge-at-startup / alpha-change time on GPU: not measured).\n\n'
            + table(results, args.samples))
    print(text)
    if args.results:
        write_section(text, SECTION)
    return 0


if __name__ == '__main__':
    sys.exit(main())
