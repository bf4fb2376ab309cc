"""Two hosts on one machine: the robot's and the policy's network namespaces, joined by a link.

Two Linux network namespaces stand for the two computers (the robot's and the GPU box), joined
by a veth pair (``10.213.0.1/30`` robot, ``10.213.0.2/30`` policy; only addresses this module
creates, inside its own namespaces). ROS processes started in them (:meth:`SplitHosts.popen`
with :meth:`SplitHosts.ros_env`) discover each other across the link with
``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` (multicast) or ``ROS_STATIC_PEERS`` (unicast), over UDP
only (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``: both namespaces share ``/dev/shm``, and Fast DDS'
shared-memory transport would otherwise carry the data around the link).

Link delay: ``tc netem`` on both veth ends when the kernel has it (one-way delay D, round trip
2 D). Kernels without ``sch_netem`` get the same one-way delay from the user-space relay of
:mod:`retain_ros.ros.tools.delay_relay` instead: the veth pair is cut in two by a third namespace
whose process copies every Ethernet frame from one side to the other after D.

Needs root and iproute2 (``ip netns``); :class:`NetnsUnavailable` says why not otherwise.
``benchmarks/network_split.py`` measures latency and bandwidth across the link with it.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict
from typing import List
from typing import Optional

ROBOT, POLICY, LINK = 'robot', 'policy', 'link'
ROBOT_ADDR, POLICY_ADDR = '10.213.0.1', '10.213.0.2'
#: veth names inside the namespaces (robot side, policy side; link-namespace ends for the relay)
ROBOT_IF, POLICY_IF = 'rr-robot', 'rr-policy'
LINK_ROBOT_IF, LINK_POLICY_IF = 'rr-lr', 'rr-lp'
#: the relay process runs ``python -m RELAY_MODULE`` from the directory above the package
RELAY_MODULE = 'retain_ros.ros.tools.delay_relay'
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


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
            self.relay = self.popen(LINK, [sys.executable, '-m', RELAY_MODULE,
                                           LINK_ROBOT_IF, LINK_POLICY_IF,
                                           '--delay-ms', f'{delay_ms:g}']
                                    + (['--drop-multicast'] if self.drop_multicast else []),
                                    env=dict(os.environ), stdout=subprocess.DEVNULL,
                                    cwd=PACKAGE_PARENT)
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
