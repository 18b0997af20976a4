"""`callkeeper serve`: build the pure core from the config, open transports and the API, run.

Shutdown on SIGTERM/SIGINT is clean: established calls' snapshots are written (they come back
at the next start), listeners close, connections are aborted, the API stops, and the process
exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from callkeeper.api.app import ApiServer, DnsCollector, MediaCollector, RtpengineCollector
from callkeeper.api.events import describe_event
from callkeeper.calls.manager import CallManager
from callkeeper.calls.media_setup import media_address
from callkeeper.calls.rtpengine_anchor import RtpengineAnchor
from callkeeper.config import Config, ConfigError, load_config
from callkeeper.directory import DirectoryError
from callkeeper.io.driver import Driver
from callkeeper.io.ng import NgClient, NgError
from callkeeper.io.persistence import BindingPersistence, CallPersistence
from callkeeper.io.relay import MediaRelay
from callkeeper.io.resolver import DnsResolver
from callkeeper.io.rtpengine import DtmfLog, RtpengineMedia
from callkeeper.io.stream import (
    StreamManager,
    StreamTimeouts,
    client_ssl_context,
    server_ssl_context,
)
from callkeeper.io.udp import open_udp
from callkeeper.io.voicemail import VoicemailService, VoicemailStore
from callkeeper.io.ws import WsManager
from callkeeper.sip.locate import Lookup
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.store import Store, open_store

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
    config_path: Path | None = None
    store: Store | None = None
    persistence: BindingPersistence | None = None
    call_persistence: CallPersistence | None = None
    sip_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    relay: MediaRelay | None = None
    rtpengine: RtpengineMedia | None = None
    dtmf_log: DtmfLog | None = None
    resolver: DnsResolver | None = None

    async def close(self) -> None:
        if self.resolver is not None:
            self.resolver.close()
        for transport in self.driver.udp.values():
            transport.close()
        if self.relay is not None:
            self.relay.close()
        if self.rtpengine is not None:
            self.rtpengine.close()
        if self.dtmf_log is not None:
            self.dtmf_log.close()
        for manager in self.driver.streams.values():
            await manager.close()
        if self.api is not None:
            await self.api.stop()
        self.driver.close()
        for writer in (self.persistence, self.call_persistence):
            if writer is not None:
                await writer.flush()
        if self.store is not None:
            await self.store.close()


async def start_server(
    config: Config, *, api: bool = True, config_path: Path | None = None
) -> RunningServer:
    # Tags, branches and Call-IDs: a random per-process prefix and a counter — unique, and not
    # guessable across restarts.
    core = CallManager.from_config(
        config, counter_ids(secrets.token_hex(4)), os.urandom, secret=secrets.token_bytes(32)
    )
    driver = Driver(core)
    media = await _start_media(config, core, driver)
    store = open_store(config.store.url)
    persistence = BindingPersistence(store, driver.loop)
    call_persistence = CallPersistence(store, driver.loop)
    driver.extra_sinks.extend((persistence, call_persistence))
    try:
        restored = core.restore_bindings(await persistence.load(), driver.loop.time())
        snapshots = await call_persistence.load()
    except Exception as error:
        await store.close()
        raise StartupError(
            f"store.url: cannot read registrations from {config.store.url}: {error}"
        ) from None
    log.info("registrations restored", count=restored)
    timeouts = StreamTimeouts(
        idle=config.sip.tcp_idle_timeout, message=config.sip.tcp_message_timeout
    )
    running = RunningServer(
        config, driver, core, None, config_path=config_path, store=store, persistence=persistence
    )
    running.call_persistence = call_persistence
    running.relay, running.rtpengine, running.dtmf_log = (
        media.relay,
        media.rtpengine,
        media.dtmf_log,
    )
    try:
        for index, address in enumerate(config.sip.listen):
            key = f"sip.listen.{index}"
            try:
                if address.transport == "udp":
                    udp = await open_udp(address.host, address.port, driver.on_datagram)
                    driver.udp[udp.local] = udp
                    running.sip_addresses.setdefault("udp", udp.local)
                    core.add_local_address("udp", udp.local)
                else:
                    manager = driver.streams.get(address.transport)
                    if manager is None:
                        manager = driver.streams[address.transport] = _connection_manager(
                            address.transport, config, driver, timeouts
                        )
                    local = await manager.listen(address.host, address.port)
                    running.sip_addresses.setdefault(address.transport, local)
                    core.add_local_address(address.transport, local)
            except OSError as error:
                raise StartupError(
                    f"{key}: cannot listen on {address}: {error.strerror or error}"
                ) from None
        # Names resolved before the API says healthy; one DNS does not answer for is retried
        # in the background (calls to it fail cleanly until then).
        running.resolver = _resolver(config, core, driver)
        await running.resolver.start(core.dns_lookups())
        if api:
            host, port = config.api.host_port
            running.api = ApiServer(
                core, driver, config.api.token, voicemail=media.voicemail, store=store
            )
            if media.relay is not None:
                running.api.registry.register(MediaCollector(media.relay))
            if media.rtpengine is not None:
                running.api.registry.register(RtpengineCollector(media.rtpengine))
            running.api.registry.register(DnsCollector(running.resolver))
            try:
                await running.api.start(host, port)
            except OSError as error:
                raise StartupError(
                    f"api.listen: cannot listen on {config.api.listen}: {error.strerror or error}"
                ) from None
    except BaseException:
        await running.close()
        raise
    if config.log.level in ("debug", "info"):  # describing every event costs: only when logged
        driver.event_sinks.append(log_event)
    core.start(driver.loop.time())
    # Once the listeners are open: a restored call's Via and Contact name them.
    calls = core.restore_calls(snapshots, driver.loop.time())
    log.info("calls restored", count=calls, stored=len(snapshots))
    driver.poke()
    return running


def _connection_manager(
    transport: str, config: Config, driver: Driver, timeouts: StreamTimeouts
) -> StreamManager | WsManager:
    """The manager of a reliable transport's listeners and connections (tcp, tls, ws, wss)."""
    server_ssl = client_ssl = None
    if transport in ("tls", "wss"):
        assert config.sip.tls_cert and config.sip.tls_key  # the config model checks
        server_ssl = server_ssl_context(str(config.sip.tls_cert), str(config.sip.tls_key))
    if transport in ("ws", "wss"):
        return WsManager(transport, driver, timeouts, server_ssl)
    if transport == "tls":
        client_ssl = client_ssl_context()
    return StreamManager(transport, driver, timeouts, server_ssl, client_ssl)


def _resolver(config: Config, core: CallManager, driver: Driver) -> DnsResolver:
    def deliver(lookup: Lookup, addresses: tuple[tuple[str, int], ...]) -> None:
        driver.on_input("dns answer", lambda now: core.set_resolved(lookup, addresses, now))

    return DnsResolver(config.dns, deliver)


@dataclass
class _Media:
    relay: MediaRelay | None = None
    voicemail: VoicemailStore | None = None
    rtpengine: RtpengineMedia | None = None
    dtmf_log: DtmfLog | None = None


async def _start_media(config: Config, core: CallManager, driver: Driver) -> _Media:
    """The relay (with rtpengine it records voicemail only), rtpengine and its DTMF log."""
    media = _Media()
    if config.media.mode == "off":
        return media
    relay = media.relay = MediaRelay(media_address(config), driver.loop)
    relay.preload()
    driver.extra_sinks.append(relay)
    voicemail = media.voicemail = VoicemailStore(config.media.voicemail_dir)
    service = VoicemailService(voicemail, core, driver.poke)
    service.restore([user.name for user in config.users if user.voicemail])
    relay.on_recorded = service.on_recorded

    def on_digit(side: str, key: str) -> None:
        core.media_digit(side, key, driver.loop.time())
        driver.poke()

    relay.on_digit = on_digit
    if core.rtpengine is None:
        return media
    rtpengine = media.rtpengine = await _start_rtpengine(config, core.rtpengine, driver)
    address = config.media.rtpengine_dtmf_address
    if address is not None:
        try:
            rtpengine_host = config.media.rtpengine_address[0]
            media.dtmf_log = await DtmfLog.listen(address, core.rtpengine, on_digit, rtpengine_host)
        except OSError as error:
            rtpengine.close()
            raise StartupError(
                f"media.rtpengine_dtmf: cannot listen on {config.media.rtpengine_dtmf}: "
                f"{error.strerror or error}"
            ) from None
    return media


async def _start_rtpengine(
    config: Config, anchor: RtpengineAnchor, driver: Driver
) -> RtpengineMedia:
    """Reach rtpengine and set up the first media slots, or refuse to start (naming the key)."""
    client = await NgClient.open(config.media.rtpengine_address)
    rtpengine = RtpengineMedia(client, anchor, driver.loop)
    try:
        await rtpengine.start()
    except NgError as error:
        rtpengine.close()
        raise StartupError(f"media.rtpengine: {config.media.rtpengine}: {error}") from None
    driver.extra_sinks.append(rtpengine)
    return rtpengine


def log_event(event: object) -> None:
    """Every call, registration and endpoint transition in the structured log, with timings."""
    name, fields = describe_event(event)
    log.info(name, **fields)


def _reload(running: RunningServer) -> None:
    """SIGHUP: re-read the config file; users, trunks, trusted sources and static contacts
    change, calls stay."""
    path = running.config_path
    try:
        config = load_config(path)
        running.core.reload(config)
    except (ConfigError, DirectoryError) as error:
        log.error("reload failed, keeping the running configuration", error=str(error))
        return
    running.driver.on_input("reload", running.core.watch_static_contacts)
    if running.resolver is not None:
        running.resolver.reconfigure(config.dns, running.core.dns_lookups())
    log.info("configuration reloaded", users=len(config.users), trunks=len(config.trunks))


# Thresholds of the cyclic garbage collector once the server runs. The core allocates a few
# thousand small objects per call, nearly all freed by reference counting within the call; at
# CPython's default (700, 10, 10) those alive at a young collection are promoted, and every
# few seconds a full collection walks all of them plus the tens of thousands of transactions
# lingering in Completed/Accepted — 0.4-0.9 s pauses (SIPp retransmits after 0.5 s) that
# found no garbage. With 10,000 allocations between young collections an object must outlive
# about a hundred calls' worth of allocations to reach the old generation, a middle collection
# (at most 10 x 10,000 young objects) takes tens of milliseconds, and full collections come
# after ten times as many middle ones. They still run: reference cycles are still freed.
GC_THRESHOLDS = (10_000, 10, 100)


def tune_gc() -> None:
    """Freeze what start-up allocated (modules, config, the directory: it lives as long as the
    process) so no collection walks it again, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_server(config: Config, config_path: Path | None = None) -> None:
    running = await start_server(config, config_path=config_path)
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(running))
    log.info("callkeeper started", sip=[str(a) for a in config.sip.listen], api=config.api.listen)
    await stop.wait()
    log.info("shutting down")
    # Calls are not hung up: their snapshots stay in the store and they come back at the next
    # start (an upgrade, a restart). Write the changes not written yet.
    running.driver.on_input("shutdown", running.core.save_pending)
    await running.close()
    log.info("stopped")
