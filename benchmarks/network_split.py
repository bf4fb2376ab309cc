"""Policy on one host, robot on another: the retain_policy node across a network link.

The two hosts are two Linux network namespaces joined by a veth pair
(:class:`retain_ros.ros.tools.split_hosts.SplitHosts`): DDS over UDP only, discovery with
``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` (multicast) or ``ROS_STATIC_PEERS``, a one-way link
delay from ``tc netem`` or, on kernels without ``sch_netem`` (this machine's), from the
user-space relay of :mod:`retain_ros.ros.tools.delay_relay`.

Measured, for raw ``sensor_msgs/Image`` (rgb8) and JPEG ``CompressedImage`` camera streams at
one-way delays of 0 / 20 / 50 ms, with the node (tiny pi0, CPU) in the policy namespace and a
probe in the robot namespace:

- **image-to-chunk latency** (p50 / p99): the probe stamps and publishes one camera image (JPEG
  encoding included) and a joint state, and times the first ``JointTrajectory`` that comes back;
  inputs then go stale so the node holds before the next sample (one chunk per sample);
- **bandwidth per camera**: bytes the robot's veth sent while the camera streamed at
  ``--camera-rate`` Hz, minus those it sent with the joint states alone
  (``/sys/class/net/<if>/statistics/tx_bytes``).

Needs root and iproute2 (``ip netns``); run from the repository root:

    .venv/bin/python benchmarks/network_split.py [--samples 30] [--results]

``--results`` writes the table into the ``## Policy and robot on two hosts`` section of
benchmarks/RESULTS.md. ``test/ros/tools/test_split_hosts.py`` runs a closed-loop episode across
the same link.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from typing import Dict
from typing import List
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.results import write_section  # noqa: E402
from retain_ros.ros.closed_loop_demo.processes import write_params  # noqa: E402
from retain_ros.ros.tools.checkpoints import JOINTS  # noqa: E402
from retain_ros.ros.tools.checkpoints import write_random_pair  # noqa: E402
from retain_ros.ros.tools.split_hosts import netns_unavailable_reason  # noqa: E402
from retain_ros.ros.tools.split_hosts import POLICY  # noqa: E402
from retain_ros.ros.tools.split_hosts import ROBOT  # noqa: E402
from retain_ros.ros.tools.split_hosts import ROBOT_IF  # noqa: E402
from retain_ros.ros.tools.split_hosts import SplitHosts  # noqa: E402
from retain_ros.sim.tasks import NEW_TASK  # noqa: E402
from retain_ros.sim.tasks import TASKS  # noqa: E402

SECTION = '## Policy and robot on two hosts'
CAMERA_TOPIC = 'camera/image_raw'
IMAGE_SIDE = 224
DELAYS_MS = (0, 20, 50)
#: std of the Gaussian sensor noise added to the rendered camera image (grey levels)
NOISE = 4.0


# ---------------------------------------------------------------------------- the probe
def probe_main(args) -> int:
    """Run the robot-side probe: latency samples and bandwidth phases; print one JSON line."""
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy
    from rclpy.qos import QoSProfile
    from rclpy.qos import ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage
    from sensor_msgs.msg import Image
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from retain_ros.ros.conversions import rgb_to_image
    from retain_ros.ros.node_main import spin_in_background
    from retain_ros.ros.sim_robot.camera import jpeg_image
    from retain_ros.sim.world import SimWorld

    sensor = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.BEST_EFFORT)
    world = SimWorld(image_size=IMAGE_SIDE)
    world.reset('reach_yellow', 'new_id', 0)
    rgb = world.render().astype(np.float64)
    # camera-like sensor noise: a flat-shaded render alone compresses far better than a camera
    rgb += np.random.default_rng(0).normal(0.0, args.noise, rgb.shape)
    rgb = np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255), dtype=np.uint8)
    jpeg = args.format == 'jpeg'

    rclpy.init()
    node = rclpy.create_node('network_split_probe')
    topic = CAMERA_TOPIC + ('/compressed' if jpeg else '')
    image_pub = node.create_publisher(CompressedImage if jpeg else Image, topic, sensor)
    joint_pub = node.create_publisher(JointState, 'joint_states', sensor)
    arrived: List[float] = []
    node.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory',
                             lambda msg: arrived.append(time.monotonic()), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = spin_in_background(executor)

    def image_msg():
        stamp = node.get_clock().now().to_msg()
        msg = jpeg_image(rgb, args.jpeg_quality) if jpeg else rgb_to_image(rgb)
        msg.header.stamp = stamp
        return msg

    def joints_msg():
        msg = JointState(name=list(JOINTS), position=[0.0] * len(JOINTS))
        msg.header.stamp = node.get_clock().now().to_msg()
        return msg

    def link_tx() -> int:
        with open(f'/sys/class/net/{ROBOT_IF}/statistics/tx_bytes', encoding='ascii') as f:
            return int(f.read())

    result = {'format': args.format, 'delay_ms': args.delay_ms, 'image_bytes': 0}
    try:
        # wait for the node: a chunk back for a stream of observations (discovery + warm-up)
        deadline = time.monotonic() + args.timeout
        while not arrived:
            if time.monotonic() > deadline:
                raise RuntimeError('no chunk from the policy node across the link')
            joint_pub.publish(joints_msg())
            image_pub.publish(image_msg())
            time.sleep(0.1)
        time.sleep(args.max_age + 0.3 + 2 * args.delay_ms / 1e3)
        # latency: one observation, the first chunk after it; then the inputs go stale
        latencies, lost = [], 0
        while len(latencies) < args.samples:
            n_before = len(arrived)
            t_pub = time.monotonic()
            msg = image_msg()              # JPEG encoding counts: the robot does it
            joint_pub.publish(joints_msg())
            image_pub.publish(msg)
            # best effort: a frame lost on the way gets no chunk; counted, then the next sample
            deadline = t_pub + args.max_age + 1.0 + 2 * args.delay_ms / 1e3
            while len(arrived) <= n_before and time.monotonic() < deadline:
                time.sleep(0.0005)
            if len(arrived) > n_before:
                latencies.append((arrived[n_before] - t_pub) * 1e3)
            else:
                lost += 1
                if lost > 5 * args.samples:
                    raise RuntimeError(f'{lost} samples got no chunk')
            time.sleep(args.max_age + 0.15 + 2 * args.delay_ms / 1e3)
        result['latency_ms'] = latencies
        result['lost'] = lost
        result['image_bytes'] = len(image_msg().data)
        # bandwidth: joint states alone, then joint states + the camera stream
        for phase, with_camera in (('joints_only', False), ('camera', True)):
            t0, b0 = time.monotonic(), link_tx()
            next_joint = next_image = t0
            frames = 0
            while time.monotonic() - t0 < args.bandwidth_seconds:
                now = time.monotonic()
                if now >= next_joint:
                    joint_pub.publish(joints_msg())
                    next_joint += 1.0 / args.joint_rate
                if with_camera and now >= next_image:
                    image_pub.publish(image_msg())
                    frames += 1
                    next_image += 1.0 / args.camera_rate
                time.sleep(0.001)
            elapsed = time.monotonic() - t0
            result[f'{phase}_bytes_per_s'] = (link_tx() - b0) / elapsed
            if with_camera:
                result['frames'] = frames
        print('RESULT ' + json.dumps(result), flush=True)
        return 0
    finally:
        rclpy.try_shutdown()       # wakes the spinning executor, which then returns
        spinner.join(timeout=5)
        executor.shutdown(timeout_sec=2)
        node.destroy_node()


# ---------------------------------------------------------------------------- the benchmark
def start_policy_node(hosts: SplitHosts, work: str, fmt: str, pre: str, ft: str,
                      env: Dict[str, str], max_age: float, name: str):
    """Start the retain_policy node on the policy host; return (process, log path)."""
    topic = CAMERA_TOPIC + ('/compressed' if fmt == 'jpeg' else '')
    params = write_params(os.path.join(work, f'{name}.yaml'), 'retain_policy', {
        'pretrained_path': pre, 'finetuned_paths': [ft], 'camera_topics': [topic],
        'joint_names': list(JOINTS), 'device': 'cpu', 'dtype': 'float32',
        'default_instruction': TASKS[NEW_TASK].instruction,
        'control_period': 0.02, 'replan_steps': 1, 'max_observation_age': max_age,
        'episode_log': os.path.join(work, f'{name}_episodes.jsonl')})
    log_path = os.path.join(work, f'{name}.log')
    log = open(log_path, 'w', encoding='utf-8')
    proc = hosts.popen(POLICY, [sys.executable, '-m', 'retain_ros.cli', 'node', '--ros-args',
                                '--params-file', params],
                       env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, log_path


def run_probe(hosts: SplitHosts, env: Dict[str, str], fmt: str, args) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), 'probe', '--format', fmt,
            '--delay-ms', f'{hosts.delay_ms:g}', '--samples', str(args.samples),
            '--max-age', str(args.max_age), '--camera-rate', str(args.camera_rate),
            '--bandwidth-seconds', str(args.bandwidth_seconds)]
    proc = hosts.popen(ROBOT, argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, cwd=ROOT)
    out, _ = proc.communicate(timeout=600)
    lines = [ln for ln in out.splitlines() if ln.startswith('RESULT ')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'probe failed ({proc.returncode}):\n{out[-3000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def summarize(row: dict) -> dict:
    import numpy as np

    lat = np.array(row['latency_ms'])
    camera = row['camera_bytes_per_s'] - row['joints_only_bytes_per_s']
    return {'format': row['format'], 'delay_ms': row['delay_ms'], 'mode': row['mode'],
            'p50': float(np.percentile(lat, 50)), 'p99': float(np.percentile(lat, 99)),
            'image_kb': row['image_bytes'] / 1e3,
            'camera_mbit_s': camera * 8 / 1e6,
            'per_frame_kb': camera / row.get('camera_rate', 1.0) / 1e3,
            'samples': len(lat), 'lost': row.get('lost', 0)}


def format_table(rows: List[dict], camera_rate: float) -> str:
    lines = ['| camera stream | one-way delay | link | image-to-chunk p50 | p99 | message size | '
             f'bandwidth per camera at {camera_rate:g} Hz | link bytes per frame | '
             'samples without a chunk |',
             '|---|---:|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        name = 'raw rgb8 Image' if r['format'] == 'raw' else 'JPEG CompressedImage'
        lines.append(f"| {name} | {r['delay_ms']:g} ms | {r['mode']} | {r['p50']:.1f} ms | "
                     f"{r['p99']:.1f} ms | {r['image_kb']:.1f} kB | "
                     f"{r['camera_mbit_s']:.2f} Mbit/s | {r['per_frame_kb']:.1f} kB | "
                     f"{r['lost']} of {r['lost'] + r['samples']} |")
    return '\n'.join(lines)


def bench_main(args) -> int:
    from tqdm import tqdm

    reason = netns_unavailable_reason()
    if reason:
        print(f'network_split: cannot run: {reason}', file=sys.stderr)
        return 1
    configs = [(fmt, d) for fmt in args.formats for d in args.delays]
    rows = []
    with tempfile.TemporaryDirectory(prefix='network_split_') as work:
        pre, ft = write_random_pair(work)
        bar = tqdm(total=len(configs) + len(args.formats), desc='network split', unit='run')
        # baseline: the direct veth pair (no relay), no delay
        plan = [('direct', fmt, [0.0]) for fmt in args.formats]
        plan += [('delayed', fmt, list(args.delays)) for fmt in args.formats]
        for kind, fmt, delays in plan:
            relay = False if kind == 'direct' else None
            with SplitHosts(relay=relay) as hosts:
                if kind == 'direct' and hosts.delay_mode == 'netem':
                    continue  # netem measures 0 ms on the direct link already
                domain = random.randint(1, 200)
                env = hosts.ros_env(args.discovery, domain_id=domain,
                                    ros_home=os.path.join(work, 'ros_home'))
                proc, log = start_policy_node(hosts, work, fmt, pre, ft, env, args.max_age,
                                              f'node_{kind}_{fmt}')
                for delay in delays:
                    hosts.set_delay(delay)
                    try:
                        row = run_probe(hosts, env, fmt, args)
                    except RuntimeError as exc:
                        with open(log, encoding='utf-8', errors='replace') as f:
                            raise RuntimeError(f'{exc}\npolicy node log:\n{f.read()[-3000:]}')
                    row.update(mode=('veth' if kind == 'direct' else
                                     {'netem': 'veth + netem', 'relay': 'veth + relay'}
                                     [hosts.delay_mode]), camera_rate=args.camera_rate)
                    rows.append(summarize(row))
                    bar.update(1)
                    bar.set_postfix_str(f"{fmt} {delay:g} ms: p50 {rows[-1]['p50']:.1f} ms")
                hosts.stop(proc)
        bar.close()
    table = format_table(rows, args.camera_rate)
    print(table)
    if args.results:
        machine = (f'{platform.machine()}, {os.cpu_count()} CPU cores, Linux '
                   f'{platform.release()}')
        text = (f'{SECTION}\n\n`sudo .venv/bin/python benchmarks/network_split.py --results` '
                f'on {machine}: the retain_policy node (tiny pi0, CPU) in one network '
                'namespace, a robot-side probe in another, joined by a veth pair; DDS over UDP '
                f'(Fast DDS, `ROS_AUTOMATIC_DISCOVERY_RANGE={args.discovery}`); '
                f'{args.samples} latency samples per row; camera {IMAGE_SIDE}x{IMAGE_SIDE} '
                f'rgb8 (a rendered sim scene plus Gaussian sensor noise, std {NOISE:g} grey '
                'levels) or JPEG quality 90 of it. **Image-to-chunk**: '
                'robot publishes a stamped image + joint state -> first JointTrajectory back '
                'on the robot (JPEG encoding, the link both ways, decoding, inference, safety '
                'filter included). **Bandwidth per camera**: robot-veth tx bytes/s with the '
                f'camera streaming at {args.camera_rate:g} Hz minus with joint states alone '
                f'(50 Hz). Delay is one way (round trip twice it).\n\n{table}\n')
        write_section(text, SECTION)
        print(f'wrote the "{SECTION}" section of benchmarks/RESULTS.md')
    return 0


def _probe_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='network_split.py probe',
                                description='(internal) the robot-side probe')
    p.add_argument('--format', choices=('raw', 'jpeg'), default='raw')
    p.add_argument('--delay-ms', type=float, default=0.0)
    p.add_argument('--samples', type=int, default=30)
    p.add_argument('--max-age', type=float, default=0.25)
    p.add_argument('--camera-rate', type=float, default=10.0)
    p.add_argument('--joint-rate', type=float, default=50.0)
    p.add_argument('--bandwidth-seconds', type=float, default=4.0)
    p.add_argument('--jpeg-quality', type=int, default=90)
    p.add_argument('--noise', type=float, default=NOISE)
    p.add_argument('--timeout', type=float, default=180.0,
                   help='seconds to wait for the first chunk (node start-up, discovery)')
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='network_split.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--samples', type=int, default=30, help='latency samples per row')
    p.add_argument('--delays', type=float, nargs='+', default=list(DELAYS_MS),
                   help='one-way link delays in ms (default: %(default)s)')
    p.add_argument('--formats', nargs='+', choices=('raw', 'jpeg'), default=['raw', 'jpeg'])
    p.add_argument('--discovery', choices=('SUBNET', 'STATIC'), default='SUBNET')
    p.add_argument('--max-age', type=float, default=0.25,
                   help="the node's max_observation_age (s); samples are spaced past it")
    p.add_argument('--camera-rate', type=float, default=10.0, help='camera stream rate (Hz)')
    p.add_argument('--bandwidth-seconds', type=float, default=4.0)
    p.add_argument('--results', action='store_true',
                   help=f'write the table into the "{SECTION}" section of RESULTS.md')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['probe']:
        return probe_main(_probe_parser().parse_args(argv[1:]))
    return bench_main(_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
