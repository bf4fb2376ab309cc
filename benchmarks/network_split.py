"""Policy on one host, robot on another: the retain_policy node across a network link.

Two Linux network namespaces stand for the two computers (the robot's and the GPU box), joined
by a veth pair (``10.213.0.1/30`` robot, ``10.213.0.2/30`` policy; only addresses this script
creates, inside its own namespaces). DDS discovers across the link with
``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` (multicast) or ``ROS_STATIC_PEERS`` (unicast), over UDP
only (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``: both namespaces share ``/dev/shm``, and Fast DDS'
shared-memory transport would otherwise carry the data around the link).

Link delay: ``tc netem`` on both veth ends when the kernel has it (one-way delay D, round trip
2 D). Kernels without ``sch_netem`` (this machine's) get the same one-way delay from a small
user-space relay instead: the veth pair is cut in two by a third namespace whose process copies
every Ethernet frame from one side to the other after D (AF_PACKET sockets, no IP there).

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
benchmarks/RESULTS.md. ``test/test_netns.py`` uses :class:`SplitHosts` for its closed-loop
episode across the link.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import select
import shutil
import signal
import socket
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
from retain_ros.sim.tasks import NEW_TASK  # noqa: E402
from retain_ros.sim.tasks import TASKS  # noqa: E402

SECTION = '## Policy and robot on two hosts'
ROBOT, POLICY, LINK = 'robot', 'policy', 'link'
ROBOT_ADDR, POLICY_ADDR = '10.213.0.1', '10.213.0.2'
#: veth names inside the namespaces (robot side, policy side; link-namespace ends for the relay)
ROBOT_IF, POLICY_IF = 'rr-robot', 'rr-policy'
LINK_ROBOT_IF, LINK_POLICY_IF = 'rr-lr', 'rr-lp'
JOINTS = ('j0', 'j1', 'j2', 'j3')
CAMERA_TOPIC = 'camera/image_raw'
IMAGE_SIDE = 224
DELAYS_MS = (0, 20, 50)
#: std of the Gaussian sensor noise added to the rendered camera image (grey levels)
NOISE = 4.0


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, no permission)."""


def _run(argv: List[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f'{" ".join(argv)} failed ({result.returncode}): '
                           f'{(result.stderr or result.stdout).strip()}')
    return result


def netns_unavailable_reason() -> Optional[str]:
    """Why network namespaces cannot be made here, or None when they can."""
    if not hasattr(os, 'geteuid') or os.geteuid() != 0:
        return 'network namespaces need root (CI runs as root)'
    if shutil.which('ip') is None:
        return 'iproute2 (the ip command) is not installed'
    name = f'rrprobe{os.getpid()}'
    result = subprocess.run(['ip', 'netns', 'add', name], capture_output=True, text=True)
    if result.returncode != 0:
        return f'ip netns add failed: {result.stderr.strip()}'
    subprocess.run(['ip', 'netns', 'del', name], capture_output=True)
    return None


class SplitHosts:
    """Two network namespaces joined by a veth pair: the robot's host and the policy's host.

    Use as a context manager: everything made (namespaces, links, processes started in them)
    is removed on exit, whatever happened.

    :param relay: put a user-space delay relay between the two (a third namespace), for kernels
        without ``tc netem``; None = only when netem is missing and a delay is asked for.
    :param delay_ms: initial one-way delay of the link.
    :param drop_multicast: the relay drops multicast frames (broadcast still passes, for ARP),
        as Wi-Fi access points often do: DDS multicast discovery then fails. Implies a relay.
    """

    def __init__(self, relay: Optional[bool] = False, delay_ms: float = 0.0,
                 drop_multicast: bool = False):
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        tag = f'{os.getpid() % 100000}{random.randrange(16 ** 3):03x}'
        self.ns = {ROBOT: f'rr{tag}-robot', POLICY: f'rr{tag}-policy', LINK: f'rr{tag}-link'}
        self._relay_wanted = True if drop_multicast else relay
        self.drop_multicast = drop_multicast
        self.relay = None               # the relay process, when one runs
        self.delay_mode = 'none'        # 'none' | 'netem' | 'relay'
        self.delay_ms = 0.0
        self._procs: List[subprocess.Popen] = []
        self._made: List[str] = []
        try:
            self._build()
            self.set_delay(delay_ms)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------ plumbing
    def _ip(self, *args: str) -> None:
        _run(['ip', *args])

    def _add_ns(self, host: str) -> None:
        self._ip('netns', 'add', self.ns[host])
        self._made.append(self.ns[host])
        self._ip('-n', self.ns[host], 'link', 'set', 'lo', 'up')

    def _address(self, host: str, ifname: str, addr: str) -> None:
        ns = self.ns[host]
        self._ip('-n', ns, 'addr', 'add', f'{addr}/30', 'dev', ifname)
        self._ip('-n', ns, 'link', 'set', ifname, 'up')
        # multicast (DDS discovery with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET) leaves by the link
        self._ip('-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', ifname)

    def _build(self) -> None:
        self._add_ns(ROBOT)
        self._add_ns(POLICY)
        self.netem = self._relay_wanted is not True and self._netem_available()
        use_relay = self._relay_wanted is True or (self._relay_wanted is None and not self.netem)
        if use_relay:
            self._add_ns(LINK)
            link = self.ns[LINK]
            self._ip('link', 'add', ROBOT_IF, 'netns', self.ns[ROBOT], 'type', 'veth',
                     'peer', 'name', LINK_ROBOT_IF, 'netns', link)
            self._ip('link', 'add', POLICY_IF, 'netns', self.ns[POLICY], 'type', 'veth',
                     'peer', 'name', LINK_POLICY_IF, 'netns', link)
            for ifname in (LINK_ROBOT_IF, LINK_POLICY_IF):
                self._ip('-n', link, 'link', 'set', ifname, 'up')
            self.delay_mode = 'relay'
        else:
            self._ip('link', 'add', ROBOT_IF, 'netns', self.ns[ROBOT], 'type', 'veth',
                     'peer', 'name', POLICY_IF, 'netns', self.ns[POLICY])
            self.delay_mode = 'netem' if self.netem else 'none'
        self._address(ROBOT, ROBOT_IF, ROBOT_ADDR)
        self._address(POLICY, POLICY_IF, POLICY_ADDR)

    def _netem_available(self) -> bool:
        """Whether this kernel has the netem qdisc (tried on the robot namespace's loopback)."""
        ns = self.ns[ROBOT]
        ok = _run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root',
                   'netem', 'delay', '1ms'], check=False).returncode == 0
        if ok:
            _run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', 'lo', 'root'],
                 check=False)
        return ok and shutil.which('tc') is not None

    def set_delay(self, delay_ms: float) -> None:
        """One-way delay of the link in both directions (round trip ``2 * delay_ms``)."""
        delay_ms = float(delay_ms)
        if self.delay_mode == 'relay':
            self._stop(self.relay)
            self.relay = self.popen(LINK, [sys.executable, os.path.abspath(__file__), 'relay',
                                           LINK_ROBOT_IF, LINK_POLICY_IF,
                                           '--delay-ms', f'{delay_ms:g}']
                                    + (['--drop-multicast'] if self.drop_multicast else []),
                                    env=dict(os.environ), stdout=subprocess.DEVNULL)
            time.sleep(0.3)
            if self.relay.poll() is not None:
                raise RuntimeError(f'the delay relay exited with status {self.relay.returncode}')
        elif self.delay_mode == 'netem':
            for host, ifname in ((ROBOT, ROBOT_IF), (POLICY, POLICY_IF)):
                _run(['ip', 'netns', 'exec', self.ns[host], 'tc', 'qdisc', 'replace', 'dev',
                      ifname, 'root', 'netem', 'delay', f'{delay_ms:g}ms'])
        elif delay_ms > 0:
            raise RuntimeError('this kernel has no netem: make SplitHosts(relay=None) to get '
                               'a delay from the user-space relay')
        self.delay_ms = delay_ms

    def link_bytes(self) -> Dict[str, int]:
        """Bytes the robot's veth has sent (``robot_tx``, to the policy) and received."""
        out = _run(['ip', '-n', self.ns[ROBOT], '-j', '-s', 'link', 'show', 'dev', ROBOT_IF])
        stats = json.loads(out.stdout)[0]['stats64']
        return {'robot_tx': int(stats['tx']['bytes']), 'robot_rx': int(stats['rx']['bytes'])}

    # ------------------------------------------------------------------------ processes
    def argv(self, host: str, argv: List[str]) -> List[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ['ip', 'netns', 'exec', self.ns[host], *argv]

    def popen(self, host: str, argv: List[str], env: Dict[str, str], **kwargs):
        """Start ``argv`` in ``host``'s namespace (stopped on :meth:`close`)."""
        proc = subprocess.Popen(self.argv(host, argv), env=env, **kwargs)
        self._procs.append(proc)
        return proc

    def ros_env(self, discovery: str = 'SUBNET', domain_id: Optional[int] = None,
                ros_home: Optional[str] = None) -> Dict[str, str]:
        """Environment of a ROS process on either host.

        :param discovery: ``SUBNET`` (multicast discovery) or ``STATIC`` (no multicast needed:
            ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` plus the other host in
            ``ROS_STATIC_PEERS``; ROS 2 Jazzy and later).
        """
        env = dict(os.environ)
        for key in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                    'FASTDDS_DEFAULT_PROFILES_FILE', 'ROS_DISCOVERY_SERVER'):
            env.pop(key, None)
        venv = os.path.dirname(os.path.dirname(sys.executable))
        env.update(RMW_IMPLEMENTATION=env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp'),
                   FASTDDS_BUILTIN_TRANSPORTS='UDPv4', PYTHONUNBUFFERED='1',
                   ROS_DOMAIN_ID=str(domain_id if domain_id is not None
                                     else env.get('ROS_DOMAIN_ID', '0')))
        if os.path.isdir(os.path.join(venv, 'share', 'ament_index')):
            env['AMENT_PREFIX_PATH'] = venv
        if ros_home:
            env['ROS_HOME'] = ros_home
        if discovery == 'SUBNET':
            env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SUBNET'
        elif discovery == 'STATIC':
            env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
            env['ROS_STATIC_PEERS'] = f'{ROBOT_ADDR};{POLICY_ADDR}'
        else:
            raise ValueError(f'discovery must be SUBNET or STATIC, not {discovery!r}')
        return env

    @staticmethod
    def _stop(proc: Optional[subprocess.Popen], sig=signal.SIGINT) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, proc: subprocess.Popen) -> None:
        """Stop one process started with :meth:`popen` (SIGINT, then SIGKILL after 10 s)."""
        self._stop(proc)

    def close(self) -> None:
        """Stop every process started here and delete the namespaces (idempotent)."""
        for proc in reversed(self._procs):
            self._stop(proc, signal.SIGTERM if proc is self.relay else signal.SIGINT)
        self._procs.clear()
        for ns in reversed(self._made):
            # anything still inside (a child of a child) goes with the namespace: by pid
            pids = _run(['ip', 'netns', 'pids', ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run(['ip', 'netns', 'del', ns], check=False)
        self._made.clear()

    def __enter__(self) -> 'SplitHosts':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- delay relay
def _no_udp_checksum(frame: bytes) -> bytes:
    """The frame with its IPv4 UDP checksum set to 0 ("none", valid in IPv4).

    veth offloads checksums: a frame read from it with AF_PACKET carries a partial UDP checksum
    that the receiving stack, once the frame leaves through another veth, would reject.
    """
    if len(frame) < 42 or frame[12:14] != b'\x08\x00' or frame[23] != 17:
        return frame
    if (int.from_bytes(frame[20:22], 'big') & 0x1fff) != 0:
        return frame   # a later fragment: no UDP header in it
    udp = 14 + (frame[14] & 0x0f) * 4
    return frame[:udp + 6] + b'\x00\x00' + frame[udp + 8:]


def relay_main(if_a: str, if_b: str, delay_ms: float, drop_multicast: bool = False) -> int:
    """Copy every Ethernet frame between ``if_a`` and ``if_b`` after ``delay_ms`` (both ways).

    With ``drop_multicast``, frames to a multicast MAC address are dropped (not broadcast).

    Runs in the link namespace (no IP addresses there: the kernel does nothing else with the
    frames). Frames keep their order per direction.
    """
    eth_p_all = 0x0003
    socks = {}
    for name in (if_a, if_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_all))
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)   # SO_RCVBUFFORCE (root)
            s.setsockopt(socket.SOL_SOCKET, 32, 32 << 20)   # SO_SNDBUFFORCE
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((name, eth_p_all))   # (Python converts the protocol to network order)
        s.setblocking(False)
        socks[name] = s
    peer = {socks[if_a]: socks[if_b], socks[if_b]: socks[if_a]}
    bound = {socks[if_a]: if_a, socks[if_b]: if_b}
    delay = max(0.0, float(delay_ms)) / 1e3
    queue: list = []
    seq = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
        readable, _, _ = select.select(list(peer), [], [], timeout)
        now = time.monotonic()
        for s in readable:
            while True:
                try:
                    data, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING or addr[0] != bound[s]:
                    continue   # our own copy of a frame we sent, or another interface's
                if drop_multicast and data[0] & 1 and data[:6] != b'\xff' * 6:
                    continue
                seq += 1
                heapq.heappush(queue, (now + delay, seq, peer[s], _no_udp_checksum(data)))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, data = heapq.heappop(queue)
            try:
                out.send(data)
            except OSError:
                pass  # a frame the link cannot carry is lost, as on a real link


# ---------------------------------------------------------------------------- node set-up
def write_checkpoints(out_dir: str):
    """A randomly initialised tiny pi0 pair (one camera, 4 joints)."""
    from retain_ros.policies.pi0 import load_tokenizer
    from retain_ros.policies.pi0 import NormStats
    from retain_ros.policies.pi0 import Pi0Policy
    from retain_ros.policies.pi0 import pi0_config_from_dict
    from retain_ros.policies.pi0 import save_byte_tokenizer
    from retain_ros.policies.pi0 import save_pi0_checkpoint
    from retain_ros.policies.pi0 import tiny_pi0_config

    paths = []
    for seed, name in ((1, 'pre'), (2, 'ft')):
        root = os.path.join(out_dir, name)
        dim = len(JOINTS)
        spec = pi0_config_from_dict(tiny_pi0_config(state_dim=dim, action_dim=dim,
                                                    camera_names=('base',)))
        tokenizer = load_tokenizer(save_byte_tokenizer(os.path.join(root, 'tokenizer')))
        policy = Pi0Policy.from_spec(spec, tokenizer, NormStats.identity(dim, dim),
                                     init_weights=True, init_seed=seed)
        paths.append(save_pi0_checkpoint(policy, root))
    return paths


def write_params(path: str, node: str, params: Dict[str, object]) -> str:
    import yaml

    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump({node: {'ros__parameters': params}}, f, sort_keys=True)
    return path


# ---------------------------------------------------------------------------- the probe
def probe_main(args) -> int:
    """Robot-side probe: latency samples and bandwidth phases; prints one JSON line."""
    import cv2
    import numpy as np
    import rclpy
    from rclpy.qos import HistoryPolicy
    from rclpy.qos import QoSProfile
    from rclpy.qos import ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage
    from sensor_msgs.msg import Image
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from retain_ros.ros.node_main import spin_in_background
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
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = spin_in_background(executor)

    def image_msg():
        stamp = node.get_clock().now().to_msg()
        if jpeg:
            msg = CompressedImage(format='rgb8; jpeg compressed bgr8')
            msg.data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality])[1].tobytes()
        else:
            msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                        step=rgb.shape[1] * 3)
            msg.data = rgb.tobytes()
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


# ---------------------------------------------------------------------------- one episode
def episode_main(args) -> int:
    """Operator side: one evaluation episode through the sim's and the node's services.

    The same calls as ``retain-ros demo`` (:class:`retain_ros.ros.demo.DemoRunner`): set alpha,
    set the scene, reset, start the episode; the sim ends it by calling the node's
    ``~/end_episode``. Prints ``RESULT {outcome JSON}``.
    """
    import rclpy

    from retain_ros.ros.demo import DemoRunner
    from retain_ros.ros.demo import EpisodePlan

    rclpy.init()
    runner = DemoRunner()
    try:
        runner.wait_ready(args.startup_timeout, {})
        outcome = runner.run_episode(
            EpisodePlan({'alpha': args.alpha}, args.split, args.task, args.seed), args.timeout)
        print('RESULT ' + json.dumps(outcome), flush=True)
        return 0
    finally:
        runner.destroy_node()
        rclpy.try_shutdown()


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
        pre, ft = write_checkpoints(work)
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
    if argv[:1] == ['relay']:   # (internal) network_split.py relay IF_A IF_B --delay-ms D
        relay = argparse.ArgumentParser(prog='network_split.py relay')
        relay.add_argument('if_a')
        relay.add_argument('if_b')
        relay.add_argument('--delay-ms', type=float, default=0.0)
        relay.add_argument('--drop-multicast', action='store_true')
        args = relay.parse_args(argv[1:])
        return relay_main(args.if_a, args.if_b, args.delay_ms, args.drop_multicast)
    if argv[:1] == ['episode']:
        ep = argparse.ArgumentParser(prog='network_split.py episode')
        ep.add_argument('--task', default='reach_yellow')
        ep.add_argument('--split', default='new_id')
        ep.add_argument('--seed', type=int, default=0)
        ep.add_argument('--alpha', type=float, default=1.0)
        ep.add_argument('--timeout', type=float, default=10.0)
        ep.add_argument('--startup-timeout', type=float, default=120.0)
        return episode_main(ep.parse_args(argv[1:]))
    if argv[:1] == ['probe']:
        return probe_main(_probe_parser().parse_args(argv[1:]))
    return bench_main(_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
