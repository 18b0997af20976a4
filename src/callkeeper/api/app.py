"""The HTTP API (aiohttp): health, Prometheus metrics, and the JSON views of the core.

Metrics are collected at scrape time from the core's plain counters (see `sip.stats`), so
serving SIP never calls into prometheus_client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from callkeeper.api.events import describe_event
from callkeeper.api.ivr_watch import IvrSessionWatch
from callkeeper.calls.histogram import Histogram
from callkeeper.calls.manager import CallManager
from callkeeper.io.driver import Driver
from callkeeper.io.relay import MediaRelay
from callkeeper.io.resolver import DnsResolver
from callkeeper.io.rtpengine import RtpengineMedia
from callkeeper.io.voicemail import VoicemailStore
from callkeeper.ivr.envelope import CHECKPOINT_NAMESPACE, decode_envelope
from callkeeper.liveness.states import State
from callkeeper.store import Store, StoreError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CoreCollector(Collector):
    def __init__(self, core: CallManager, driver: Driver) -> None:
        self._core = core
        self._driver = driver

    def collect(self) -> Iterator[Metric]:
        stats = self._core.sip_stats
        messages = CounterMetricFamily(
            "callkeeper_sip_messages",
            "SIP messages by direction, kind and method",
            labels=["direction", "kind", "method"],
        )
        for (direction, kind, method), count in sorted(stats.messages.items()):
            messages.add_metric([direction, kind, method], count)
        yield messages
        responses = CounterMetricFamily(
            "callkeeper_sip_responses",
            "SIP responses by direction and status class",
            labels=["direction", "status_class"],
        )
        for (direction, status_class), count in sorted(stats.responses.items()):
            responses.add_metric([direction, status_class], count)
        yield responses
        dropped = CounterMetricFamily(
            "callkeeper_sip_dropped",
            "Input dropped without an answer, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(stats.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        rejected = CounterMetricFamily(
            "callkeeper_sip_rejected",
            "Malformed requests answered with an error",
            labels=["status"],
        )
        for status, count in sorted(stats.rejected.items()):
            rejected.add_metric([str(status)], count)
        yield rejected
        keepalives = CounterMetricFamily(
            "callkeeper_keepalives", "Keep-alives received, by kind", labels=["kind"]
        )
        for kind, count in sorted(stats.keepalives.items()):
            keepalives.add_metric([kind], count)
        yield keepalives
        yield GaugeMetricFamily(
            "callkeeper_sip_transactions",
            "SIP transactions in progress",
            value=self._core.transaction_count,
        )
        connections = GaugeMetricFamily(
            "callkeeper_sip_connections", "Open stream connections", labels=["transport"]
        )
        for name, manager in sorted(self._driver.streams.items()):
            connections.add_metric([name], len(manager))
        yield connections
        yield GaugeMetricFamily(
            "callkeeper_calls_active",
            "Calls in progress (any state but ended)",
            value=len(self._core.b2bua),
        )
        yield CounterMetricFamily(
            "callkeeper_calls_completed", "Calls that have ended", value=self._core.calls_completed
        )
        yield CounterMetricFamily(
            "callkeeper_dns_failovers",
            "INVITEs sent on to a host name's next address after 503, timeout or transport error",
            value=self._core.b2bua.dns_failovers,
        )
        yield GaugeMetricFamily(
            "callkeeper_mwi_subscriptions",
            "message-summary subscriptions held (phones watching their voicemail counts)",
            value=len(self._core.message_waiting.subscriptions),
        )
        audits = CounterMetricFamily(
            "callkeeper_dialog_audits",
            "In-dialog OPTIONS to call legs, by what they found (gone: 481)",
            labels=["result"],
        )
        for result, count in self._core.b2bua.audit.results.items():
            audits.add_metric([result], count)
        yield audits
        saver = self._core.saver
        snapshots = CounterMetricFamily(
            "callkeeper_call_snapshots",
            "Established calls written to or deleted from the store (to outlive a restart)",
            labels=["op"],
        )
        snapshots.add_metric(["write"], saver.writes)
        snapshots.add_metric(["delete"], saver.deletes)
        yield snapshots
        yield CounterMetricFamily(
            "callkeeper_calls_restored",
            "Calls taken back from the store at start-up",
            value=self._core.calls_restored,
        )
        endpoints = GaugeMetricFamily(
            "callkeeper_endpoints", "Endpoints by liveness state", labels=["state"]
        )
        for state, count in self._core.endpoint_counts().items():
            endpoints.add_metric([state], count)
        yield endpoints
        watch = self._core.watch
        yield CounterMetricFamily(
            "callkeeper_endpoint_failures", "Endpoints that went DOWN", value=watch.failures
        )
        yield _histogram(
            "callkeeper_detection_seconds", "Last sign of life to DOWN", watch.detection
        )
        recovery = self._core.recovery.stats
        recoveries = CounterMetricFamily(
            "callkeeper_recoveries", "Recoveries by how they ended", labels=["outcome"]
        )
        for outcome, count in recovery.outcomes.items():
            recoveries.add_metric([outcome], count)
        yield recoveries
        yield _histogram(
            "callkeeper_resume_seconds", "Endpoint back to call bridged again", recovery.resume
        )
        yield CounterMetricFamily(
            "callkeeper_core_errors",
            "Unexpected exceptions caught around the core (bugs)",
            value=self._driver.errors,
        )


class MediaCollector(Collector):
    """The built-in RTP relay's counters (`media.mode = "relay"`)."""

    def __init__(self, relay: MediaRelay) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Metric]:
        relay = self._relay
        yield GaugeMetricFamily(
            "callkeeper_media_sides", "Relay sides (one per leg) open", value=len(relay.sides)
        )
        yield GaugeMetricFamily(
            "callkeeper_media_players", "Sides hearing a prompt or music", value=relay.players
        )
        packets = CounterMetricFamily(
            "callkeeper_media_packets",
            "RTP/RTCP datagrams the relay received (in) and sent (out)",
            labels=["direction"],
        )
        packets.add_metric(["in"], relay.packets_in)
        packets.add_metric(["out"], relay.packets_out)
        yield packets
        yield CounterMetricFamily(
            "callkeeper_media_played_packets",
            "RTP packets of prompts and music sent",
            value=relay.packets_played,
        )
        dropped = CounterMetricFamily(
            "callkeeper_media_dropped",
            "Datagrams the relay did not forward, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(relay.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily(
            "callkeeper_media_bind_failures",
            "Relay ports that could not be bound",
            value=relay.bind_failures,
        )


class DnsCollector(Collector):
    """Host names in the configuration and how their look-ups go (io/resolver.py)."""

    def __init__(self, resolver: DnsResolver) -> None:
        self._resolver = resolver

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "callkeeper_dns_failures",
            "DNS look-ups of configured host names that failed (the last answer stays in use)",
            value=self._resolver.failures,
        )
        yield GaugeMetricFamily(
            "callkeeper_dns_unresolved",
            "Configured host names with no address yet (calls to them fail)",
            value=self._resolver.unresolved,
        )


class RtpengineCollector(Collector):
    """The rtpengine backend's health (`media.mode = "rtpengine"`)."""

    def __init__(self, rtpengine: RtpengineMedia) -> None:
        self._rtpengine = rtpengine

    def collect(self) -> Iterator[Metric]:
        rtpengine = self._rtpengine
        yield GaugeMetricFamily(
            "callkeeper_media_rtpengine_slots",
            "rtpengine calls set up in advance, ready for new calls",
            value=rtpengine.anchor.free_slots,
        )
        yield CounterMetricFamily(
            "callkeeper_media_rtpengine_failures",
            "NG commands to rtpengine that failed or got no answer",
            value=rtpengine.failures,
        )
        yield CounterMetricFamily(
            "callkeeper_media_unanchored",
            "Calls whose media went phone to phone because no rtpengine slot was ready",
            value=rtpengine.anchor.exhausted,
        )


ENDPOINT_STATES = tuple(state.value for state in State)


def _bad_query(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


def _count(text: str | None) -> int | None:
    """A query parameter that must be a whole number ≥ 0 (ValueError otherwise), or absent."""
    if text is None:
        return None
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [
        (str(bound), count) for bound, count in zip(histogram.bounds, histogram.counts, strict=True)
    ]
    buckets.append(("+Inf", histogram.count))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


class ApiServer:
    def __init__(
        self,
        core: CallManager,
        driver: Driver,
        token: str | None,
        voicemail: VoicemailStore | None = None,
        store: Store | None = None,
    ) -> None:
        self.core = core
        self.voicemail = voicemail
        self.store = store  # where IVR nodes checkpoint their sessions
        self.ivr_watch: IvrSessionWatch | None = None
        if store is not None:
            self.ivr_watch = IvrSessionWatch(core, store, self._publish_named)
            self.ivr_watch.listening = lambda: bool(self._subscribers)
        self.driver = driver
        self.token = token
        self.registry = CollectorRegistry()
        self.registry.register(CoreCollector(core, driver))
        self.app = web.Application(middlewares=[self._auth])
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/api/v1/calls", self.list_calls)
        self.app.router.add_get("/api/v1/calls/{id}", self.get_call)
        self.app.router.add_post("/api/v1/calls/{id}/recover", self.recover_call)
        self.app.router.add_get("/api/v1/endpoints", self.list_endpoints)
        self.app.router.add_post("/api/v1/endpoints/{id}/reboot", self.reboot_endpoint)
        self.app.router.add_get("/api/v1/events", self.events)
        self.app.router.add_get("/api/v1/voicemail/{user}", self.list_voicemail)
        self.app.router.add_get("/api/v1/voicemail/{user}/{id}.wav", self.get_voicemail)
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        driver.event_sinks.append(self._publish)
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # /healthz stays open for load balancers and probes; everything else needs the token.
        if self.token and request.path != "/healthz":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given, f"Bearer {self.token}"):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(
            body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    def _wall(self, monotonic: float) -> float:
        # The core keeps the loop's monotonic clock; clients want Unix time.
        return round(time.time() - self.driver.loop.time() + monotonic, 3)

    async def list_calls(self, request: web.Request) -> web.Response:
        views = self.core.calls_view(self._wall)
        for view in views:
            await self._add_ivr_sessions(view)
        return web.json_response(views)

    async def get_call(self, request: web.Request) -> web.Response:
        view = self.core.call_view(request.match_info["id"], self._wall)
        if view is None:
            return web.json_response({"error": "no such call"}, status=404)
        await self._add_ivr_sessions(view)
        return web.json_response(view)

    async def _add_ivr_sessions(self, view: dict[str, Any]) -> None:
        """A leg answered by an IVR node shows the session's step and node, from the
        checkpoint the node keeps in the shared store."""
        if self.store is None:
            return
        for leg in view["legs"]:
            session = leg.get("session")
            if session is None:
                continue
            try:
                data = await self.store.get(CHECKPOINT_NAMESPACE, session)
                envelope = decode_envelope(data) if data is not None else None
            except (StoreError, ValueError):
                envelope = None
            if envelope is not None:
                leg["ivr"] = {"session": session, "step": envelope.step, "node": envelope.node}

    async def recover_call(self, request: web.Request) -> web.Response:
        """Move a call: `{"target": "USER" | "sip:..." | "NUMBER"}`; 202 while it rings."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target:
            return web.json_response({"error": 'expected {"target": USER or URI}'}, status=400)
        call_id = request.match_info["id"]
        status, reason = self.core.recover_call(call_id, target, self.driver.loop.time())
        self.driver.poke()
        if status >= 400:
            return web.json_response({"error": reason}, status=status)
        return web.json_response(
            {"status": reason, "call": self.core.call_view(call_id, self._wall)}, status=status
        )

    async def reboot_endpoint(self, request: web.Request) -> web.Response:
        """Send the endpoint a reboot NOTIFY and hold its calls until it returns (or grace ends)."""
        endpoint_id = request.match_info["id"]
        if not self.core.reboot_endpoint(endpoint_id, self.driver.loop.time()):
            return web.json_response({"error": "no such endpoint"}, status=404)
        self.driver.poke()
        return web.json_response(
            {"status": "reboot requested", "endpoint": endpoint_id}, status=202
        )

    async def list_voicemail(self, request: web.Request) -> web.Response:
        """A user's voicemail messages, oldest first, each with the URL of its WAV."""
        user = request.match_info["user"]
        if self.core.directory.user(user) is None:
            return web.json_response({"error": "no such user"}, status=404)
        messages = self.voicemail.messages(user) if self.voicemail is not None else []
        for message in messages:
            message["wav"] = f"/api/v1/voicemail/{user}/{message['id']}.wav"
        return web.json_response(messages)

    async def get_voicemail(self, request: web.Request) -> web.StreamResponse:
        user, message_id = request.match_info["user"], request.match_info["id"]
        path = self.voicemail.wav_path(user, message_id) if self.voicemail is not None else None
        if path is None:
            return web.json_response({"error": "no such message"}, status=404)
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def list_endpoints(self, request: web.Request) -> web.Response:
        """All endpoints, or `?user=` / `?state=` only; `?limit=N&offset=M` pages through them
        (in a stable order: by id). `X-Total-Count` is the number before paging."""
        query = request.query
        state = query.get("state")
        if state is not None and state not in ENDPOINT_STATES:
            return _bad_query(f"state must be one of {', '.join(ENDPOINT_STATES)}")
        try:
            limit = _count(query.get("limit"))
            offset = _count(query.get("offset")) or 0
        except ValueError:
            return _bad_query("limit and offset must be whole numbers")
        views = self.core.endpoints_view(
            self.driver.loop.time(), self._wall, user=query.get("user"), state=state
        )
        total = len(views)
        if limit is not None or offset:
            views.sort(key=lambda view: str(view["id"]))
            views = views[offset : None if limit is None else offset + limit]
        return web.json_response(views, headers={"X-Total-Count": str(total)})

    def _publish(self, event: object) -> None:
        """Fan a core event out to every SSE client; a client too slow to keep up loses events
        rather than growing our memory (its queue is bounded)."""
        if not self._subscribers:
            return
        name, fields = describe_event(event)
        for key in ("at", "detected_at"):
            if key in fields:
                fields[key] = self._wall(fields[key])
        self._publish_named(name, fields)

    def _publish_named(self, name: str, fields: dict[str, Any]) -> None:
        fields.setdefault("at", round(time.time(), 3))
        payload = f"event: {name}\ndata: {json.dumps(fields)}\n\n"
        for queue in self._subscribers:
            if queue.qsize() < 1000:
                queue.put_nowait(payload)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: call.*, registration.* and endpoint.* as they happen."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            await response.write(b": callkeeper events\n\n")
            while True:
                try:
                    payload = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    payload = ": keep-alive\n\n"  # keeps proxies from closing an idle stream
                if payload is None:  # the server is stopping: end the stream
                    break
                await response.write(payload.encode())
        except ConnectionResetError:
            pass
        finally:
            self._subscribers.discard(queue)
        return response

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            sock = sockets[0].getsockname()
            self.address = (sock[0], sock[1])
        else:
            self.address = (host, port)
        if self.ivr_watch is not None:
            self.ivr_watch.start()

    async def stop(self) -> None:
        if self.ivr_watch is not None:
            await self.ivr_watch.stop()
        # Event streams never end on their own: tell each one to, or shutdown waits for ever.
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
