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


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: DatagramHandler) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but behaves as one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        remote = (str(addr[0]), int(addr[1]))  # type: ignore[arg-type]
        self._on_datagram(data, Flow("udp", remote, self.local))

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
