"""Free ports for tests that run side by side: probed for UDP and TCP, picked at random."""

from __future__ import annotations

import random
import socket

# Ports are picked below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up
# by default), never from it: a test that polls a server not listening yet could otherwise be
# given the very same port as its own source port, connect to itself (TCP self-connect) and
# read back its own request ("BadStatusLine: GET /healthz"). Above this area are baresip's port
# blocks (11000-19984), callkeeper's default media range (20000-29999) and the relay tests' RTP
# ranges (30000-32000); the top is kept 300 below 11000 for tests that use port..port+199.
_PORT_AREA = (2000, 10700)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port that is free for both UDP and TCP on 127.0.0.1 right now.

    Never the same port twice in one test process: a port handed out but not bound yet would
    otherwise look free to the next caller. Other test runs on the machine are avoided by
    probing and by picking at random.
    """
    for _ in range(500):
        port = random.randrange(*_PORT_AREA)
        if port in _handed_out or not port_free(port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free UDP+TCP port found")


def free_port_block(size: int) -> int:
    """The first of `size` consecutive ports, all free for UDP and TCP right now (SIPp's media
    port `-mp` P also binds P+1 to P+3: RTCP, video RTP and video RTCP)."""
    for _ in range(500):
        base = random.randrange(_PORT_AREA[0], _PORT_AREA[1] - size)
        block = range(base, base + size)
        if any(port in _handed_out or not port_free(port) for port in block):
            continue
        _handed_out.update(block)
        return base
    raise RuntimeError(f"no free block of {size} UDP+TCP ports found")


def port_free(port: int) -> bool:
    """Nothing holds `port` on 127.0.0.1 for UDP or TCP right now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def udp_port_free(port: int) -> bool:
    """Nothing holds UDP `port` on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
