"""The UDP transport: one datagram endpoint per `udp:` listen address."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import cast

import structlog

from callkeeper.sip.transport import Flow

log = structlog.get_logger(__name__)

DatagramHandler = Callable[[bytes, Flow], None]

# Flows by the peer's socket address, so a datagram from a known peer costs a dict look-up
# instead of a new Flow (a frozen dataclass: slow to build) — and the transactions and calls
# that keep the flow share one object. Bounded: cleared when full.
FLOW_CACHE_SIZE = 4096


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: DatagramHandler) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.send_errors = 0
        self._flows: dict[object, Flow] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but behaves as one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        flow = self._flows.get(addr)
        if flow is None:
            remote = (str(addr[0]), int(addr[1]))  # type: ignore[arg-type]
            flow = Flow("udp", remote, self.local)
            if len(self._flows) >= FLOW_CACHE_SIZE:
                self._flows.clear()
            self._flows[addr] = flow
        self._on_datagram(data, flow)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable arrives here on Linux; the peer is gone, nothing to do now.
        self.send_errors += 1

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.sendto(data, remote)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_udp(host: str, port: int, on_datagram: DatagramHandler) -> UdpTransport:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpTransport(on_datagram), local_addr=(host, port)
    )
    # Bigger socket buffers absorb bursts (a SIPp load, a mass re-REGISTER after an outage).
    sock = protocol._transport.get_extra_info("socket") if protocol._transport else None
    if sock is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # capped by net.core.rmem_max: fine
                sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
    log.info("listening", transport="udp", address=f"{protocol.local[0]}:{protocol.local[1]}")
    return protocol
