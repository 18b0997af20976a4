"""Free ports for tests that run side by side (bind to port 0, or probe UDP and TCP together)."""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A port that is free for both UDP and TCP on 127.0.0.1 right now.

    Never the same port twice in one test process: a port handed out but not bound yet would
    otherwise look free to the next caller.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                if port in _handed_out:
                    continue
                _handed_out.add(port)
                return port
    raise RuntimeError("no free UDP+TCP port found")


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
