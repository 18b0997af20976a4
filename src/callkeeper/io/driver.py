"""The driver: the one place that reads the clock and runs the pure core's commands.

Transports hand it bytes; it passes them to the core with `now`, then carries out every command
the core queued (send, close) and re-arms a single loop timer at the core's next deadline. The
core never sees a socket and never reads a clock, so tests run it with a fake clock instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from callkeeper.io.stream import StreamHandler
from callkeeper.io.udp import UdpTransport
from callkeeper.sip.parser import StreamItem
from callkeeper.sip.transport import CloseFlow, Flow, Transmit

log = structlog.get_logger(__name__)


class ConnectionManager(Protocol):
    """The connections of one reliable transport: a `StreamManager` (tcp, tls) or a
    `WsManager` (ws, wss)."""

    def __len__(self) -> int: ...
    async def listen(self, host: str, port: int) -> tuple[str, int]: ...
    def send(self, flow: Flow, data: bytes) -> None: ...
    def close_flow(self, flow: Flow) -> None: ...
    async def close(self) -> None: ...


class PureCore(Protocol):
    def receive_datagram(self, data: bytes, flow: Flow, now: float) -> None: ...
    def receive_stream_item(self, item: StreamItem, flow: Flow, now: float) -> None: ...
    def connection_lost(self, flow: Flow, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def next_command(self) -> object | None: ...
    def next_event(self) -> object | None: ...


# Somebody else (store, API events, logs) who carries out a command or hears an event.
CommandSink = Callable[[object], None]

# The loop timer fires this long after the core's next deadline, so the deadlines that fall in
# that window are handled in one go. A busy server has thousands of timers a second, nearly all
# of them transactions ending their 64*T1 linger; one wake-up, core.handle_timer() and deadline
# look-up each cost more than what the timer itself does. 10 ms is 2 % of T1 (the shortest
# retransmission interval), well inside what RFC 3261's timers mean.
TIMER_WINDOW = 0.01


class Driver(StreamHandler):
    def __init__(self, core: PureCore) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.udp: dict[tuple[str, int], UdpTransport] = {}
        self.streams: dict[str, ConnectionManager] = {}
        self.extra_sinks: list[CommandSink] = []
        # Who hears about calls, registrations and endpoint states (API events, logs).
        self.event_sinks: list[CommandSink] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.errors = 0

    # --- inputs ---------------------------------------------------------------------------
    def on_datagram(self, data: bytes, flow: Flow) -> None:
        try:
            self.core.receive_datagram(data, flow, self.loop.time())
        except Exception:
            self._core_failed("datagram")
        self._run_commands()

    def on_stream_item(self, item: StreamItem, flow: Flow) -> None:
        try:
            self.core.receive_stream_item(item, flow, self.loop.time())
        except Exception:
            self._core_failed("stream item")
        self._run_commands()

    def on_connection_lost(self, flow: Flow, error: Exception | None) -> None:
        try:
            self.core.connection_lost(flow, self.loop.time())
        except Exception:
            self._core_failed("connection lost")
        self._run_commands()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.core.handle_timer(self.loop.time())
        except Exception:
            self._core_failed("timer")
        self._run_commands()

    def on_input(self, what: str, deliver: Callable[[float], None]) -> None:
        """Another input (a DNS answer): `deliver(now)` feeds the core, guarded like the rest."""
        try:
            deliver(self.loop.time())
        except Exception:
            self._core_failed(what)
        self._run_commands()

    def poke(self) -> None:
        """Run queued commands after an input that came from elsewhere (the API, say)."""
        self._run_commands()

    def _core_failed(self, what: str) -> None:
        # A bug, never the network's fault (the core turns bad input into responses). Log it
        # loudly and keep serving every other call.
        self.errors += 1
        log.exception("core raised while handling input", input=what)

    # --- outputs --------------------------------------------------------------------------
    def _run_commands(self) -> None:
        core = self.core
        while (command := core.next_command()) is not None:
            if type(command) is Transmit:
                self.transmit(command.flow, command.data)
            elif type(command) is CloseFlow:
                manager = self.streams.get(command.flow.transport)
                if manager is not None:
                    manager.close_flow(command.flow)
            else:
                for sink in self.extra_sinks:
                    sink(command)
        while (event := core.next_event()) is not None:
            for sink in self.event_sinks:
                sink(event)
        deadline = core.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                self._timer = self.loop.call_at(deadline + TIMER_WINDOW, self._on_timer)

    def transmit(self, flow: Flow, data: bytes) -> None:
        if flow.transport == "udp":
            transport = self.udp.get(flow.local) or next(iter(self.udp.values()), None)
            if transport is not None:
                transport.send(data, flow.remote)
            return
        manager = self.streams.get(flow.transport)
        if manager is None:
            log.warning("no transport for flow", flow=str(flow))
            return
        manager.send(flow, data)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
