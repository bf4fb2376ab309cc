"""A user-space link delay: copies Ethernet frames between two interfaces after a delay.

For kernels without ``tc netem`` (:mod:`retain_ros.ros.tools.split_hosts` starts it in the link
namespace between the robot's and the policy's veth ends). AF_PACKET sockets, no IP addresses in
that namespace: the kernel does nothing else with the frames. Needs root::

    python -m retain_ros.ros.tools.delay_relay IF_A IF_B --delay-ms 20 [--drop-multicast]
"""
from __future__ import annotations

import argparse
import heapq
import select
import signal
import socket
import sys
import time
from typing import List
from typing import Optional


def _no_udp_checksum(frame: bytes) -> bytes:
    """Return the frame with its IPv4 UDP checksum set to 0 ("none", valid in IPv4).

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


def main(argv: Optional[List[str]] = None) -> int:
    """Run the relay until SIGINT / SIGTERM (see the module docstring)."""
    parser = argparse.ArgumentParser(prog='python -m retain_ros.ros.tools.delay_relay',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('if_a')
    parser.add_argument('if_b')
    parser.add_argument('--delay-ms', type=float, default=0.0)
    parser.add_argument('--drop-multicast', action='store_true')
    args = parser.parse_args(argv)
    return relay_main(args.if_a, args.if_b, args.delay_ms, args.drop_multicast)


if __name__ == '__main__':
    sys.exit(main())
