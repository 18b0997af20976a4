"""`callkeeper serve`: build the pure core from the config, open transports and the API, run.

Shutdown on SIGTERM/SIGINT is clean: listeners close first, connections are aborted, the API
stops, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from dataclasses import dataclass, field

import structlog

from callkeeper.api.app import ApiServer
from callkeeper.calls.manager import CallManager
from callkeeper.config import Config
from callkeeper.io.driver import Driver
from callkeeper.io.stream import (
    StreamManager,
    StreamTimeouts,
    client_ssl_context,
    server_ssl_context,
)
from callkeeper.io.udp import open_udp
from callkeeper.sip.transaction_messages import counter_ids

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The server could not start (a listen address in use, say): one line naming the key."""


@dataclass
class RunningServer:
    """Handles on a started server, for tests that run it in-process."""

    config: Config
    driver: Driver
    core: CallManager
    api: ApiServer | None
    sip_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)

    async def close(self) -> None:
        for transport in self.driver.udp.values():
            transport.close()
        for manager in self.driver.streams.values():
            await manager.close()
        if self.api is not None:
            await self.api.stop()
        self.driver.close()


async def start_server(config: Config, *, api: bool = True) -> RunningServer:
    # Tags, branches and Call-IDs: a random per-process prefix and a counter — unique, and not
    # guessable across restarts.
    core = CallManager.from_config(config, counter_ids(secrets.token_hex(4)))
    driver = Driver(core)
    timeouts = StreamTimeouts(idle=config.sip.tcp_idle_timeout, message=config.sip.tcp_message_timeout)
    running = RunningServer(config, driver, core, None)
    try:
        for index, address in enumerate(config.sip.listen):
            key = f"sip.listen.{index}"
            try:
                if address.transport == "udp":
                    udp = await open_udp(address.host, address.port, driver.on_datagram)
                    driver.udp[udp.local] = udp
                    running.sip_addresses.setdefault("udp", udp.local)
                    core.add_local_address("udp", udp.local)
                elif address.transport in ("tcp", "tls"):
                    manager = driver.streams.get(address.transport)
                    if manager is None:
                        server_ssl = client_ssl = None
                        if address.transport == "tls":
                            assert config.sip.tls_cert and config.sip.tls_key
                            server_ssl = server_ssl_context(str(config.sip.tls_cert), str(config.sip.tls_key))
                            client_ssl = client_ssl_context()
                        manager = StreamManager(address.transport, driver, timeouts, server_ssl, client_ssl)
                        driver.streams[address.transport] = manager
                    local = await manager.listen(address.host, address.port)
                    running.sip_addresses.setdefault(address.transport, local)
                    core.add_local_address(address.transport, local)
                else:
                    raise StartupError(f"{key}: {address}: the ws transport is not available yet")
            except OSError as error:
                raise StartupError(f"{key}: cannot listen on {address}: {error.strerror}") from None
        if api:
            host, port = config.api.host_port
            running.api = ApiServer(core, driver, config.api.token)
            try:
                await running.api.start(host, port)
            except OSError as error:
                raise StartupError(f"api.listen: cannot listen on {config.api.listen}: {error.strerror}") from None
    except BaseException:
        await running.close()
        raise
    driver.poke()
    return running


async def run_server(config: Config) -> None:
    running = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("callkeeper started", sip=[str(a) for a in config.sip.listen], api=config.api.listen)
    await stop.wait()
    log.info("shutting down")
    await running.close()
    log.info("stopped")
