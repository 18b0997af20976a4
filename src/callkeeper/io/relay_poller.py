"""The relay's socket reader: its UDP sockets in one `epoll`, served in batches.

One job: get datagrams off the relay's sockets cheaply. io/relay.py decides what to do with each
one; this module only owns the epoll, registers the loop's one reader on it, and hands every
datagram to the socket's callback with the side it belongs to.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable
from typing import Generic, TypeVar

Address = tuple[str, int]
SideT = TypeVar("SideT")

MAX_DATAGRAM = 65535  # what one read takes: any UDP datagram, whole
# Datagrams served per wake-up at most (a few ms), then the loop's other callbacks (SIP) run.
BUDGET = 256


class RelaySocket(Generic[SideT]):
    """One bound, non-blocking UDP socket (a side's RTP or RTCP port), read by `RelayPoller`."""

    __slots__ = ("on_datagram", "recvfrom", "sendto", "side", "sock")

    def __init__(
        self, sock: socket.socket, side: SideT, on_datagram: Callable[[SideT, bytes, Address], None]
    ) -> None:
        self.sock = sock
        self.side = side
        self.on_datagram = on_datagram  # the relay's receive_rtp or receive_rtcp
        # bound once: the per-packet paths call them without an attribute lookup on the socket
        self.recvfrom = sock.recvfrom
        self.sendto = sock.sendto


class RelayPoller(Generic[SideT]):
    """Reads the relay's sockets: one `epoll` of its own, itself one reader of the event loop.

    When any socket is readable the loop runs `_readable`, which takes one datagram from every
    ready socket (level-triggered: a socket with more queued is ready again at the next look)
    and hands it to the relay, then looks again for what arrived meanwhile, until a look finds
    nothing or `BUDGET` datagrams were served. Under load a wake-up serves many datagrams: the
    loop's per-datagram costs (a callback, a second `recvmsg` that finds the socket empty, the
    address objects of a datagram transport) and the sleep and wake-up between datagrams are
    paid once per batch, not once per datagram.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_error: Callable[[], None]) -> None:
        self._loop = loop
        self._on_error = on_error
        self._epoll = select.epoll()
        self._poll = self._epoll.poll
        self._sockets: dict[int, RelaySocket[SideT]] = {}
        loop.add_reader(self._epoll.fileno(), self._readable)

    def add(self, endpoint: RelaySocket[SideT]) -> None:
        fd = endpoint.sock.fileno()
        self._sockets[fd] = endpoint
        self._epoll.register(fd, select.EPOLLIN)

    def remove(self, endpoint: RelaySocket[SideT]) -> None:
        fd = endpoint.sock.fileno()
        if self._sockets.pop(fd, None) is endpoint:
            self._epoll.unregister(fd)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def _readable(self) -> None:
        # What arrived while a batch was being served is served straight away: a look at the
        # epoll costs less than going back to the loop and being woken for it.
        budget = BUDGET
        while budget > 0:
            served = self._serve(budget)
            if not served:
                return
            budget -= served

    def _serve(self, most: int) -> int:
        """One datagram from every ready socket (`most` of them) to the relay; how many."""
        sockets = self._sockets
        ready = self._poll(0, most)
        for fd, _ in ready:
            endpoint = sockets.get(fd)
            if endpoint is None:
                continue  # closed by an earlier datagram of this batch
            try:
                data, source = endpoint.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # an ICMP error queued on the socket: a phone that went away
                self._on_error()
                continue
            if len(source) != 2:  # IPv6: (host, port, flowinfo, scope id)
                source = source[:2]
            endpoint.on_datagram(endpoint.side, data, source)
        return len(ready)
