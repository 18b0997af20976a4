"""The call manager: the pure core that the io driver feeds.

One job: tying the parts together. It builds the SIP endpoint, the registrar, the B2BUA, the
liveness watch, the recovery engine and the media anchor (and the directory again on SIGHUP),
takes the driver's inputs, and runs the event loop that hands each part's events to the others:
requests to request_dispatch.py; answers to the watch, the B2BUA or the recovery engine; call
events to the recovery engine and the watch (which endpoints are in a call); liveness and
registrar events to the recovery engine. Outputs are the endpoint's wire commands, then the
persistence commands (the registrar's bindings, the CallSaver's call snapshots), then the media
anchor's; `next_event()` yields what the API and metrics want to know.

The rest is elsewhere, one job a module: where calls go (routing.py, which also answers the
recovery engine's `Routes` questions), host names' addresses (resolved_targets.py), the API's
views (views.py), voicemail waiting indication (mwi.py, and mwi_subscriptions.py for the phones
that subscribe to it), the media anchor's choice (media_setup.py), calls taken back after a
restart (call_restore.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from callkeeper.calls import call_restore, handover, media_setup, request_dispatch, routing, views
from callkeeper.calls.anchors import Anchor
from callkeeper.calls.b2bua import B2BUA, Contact
from callkeeper.calls.call_saver import CallSaver
from callkeeper.calls.call_snapshots import CallSnapshot, DeleteCall, SaveCall
from callkeeper.calls.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRecovered,
    RecoveryEvent,
)
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.media_anchor import MediaCommand
from callkeeper.calls.model import Leg
from callkeeper.calls.mwi import MessageWaiting
from callkeeper.calls.recovery import RecoveryEngine
from callkeeper.calls.resolved_targets import ResolvedTargets, needed_lookups
from callkeeper.calls.rtpengine_anchor import RtpengineAnchor, RtpengineCommand
from callkeeper.calls.views import Wall
from callkeeper.calls.watch import EndpointWatch
from callkeeper.config import Config
from callkeeper.directory import (
    AuthPolicy,
    AuthSettings,
    Binding,
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    Directory,
    Registrar,
    RegistrarCommand,
    RegistrarEvent,
    RegistrarSettings,
    StaticContact,
)
from callkeeper.liveness import EndpointAlive, EndpointDown, LivenessEvent
from callkeeper.sdp import validate_sdp
from callkeeper.sip.digest_server import DigestAuthenticator
from callkeeper.sip.endpoint import (
    ConnectionClosed,
    KeepaliveReceived,
    SipEndpoint,
    StatelessRequestReceived,
    WireCommand,
)
from callkeeper.sip.locate import Lookup, lookup_for
from callkeeper.sip.parser import StreamItem
from callkeeper.sip.stats import SipStats
from callkeeper.sip.timers import TimerSettings, earliest
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow

RandomBytes = Callable[[int], bytes]

ManagerEvent = CallEvent | RecoveryEvent | RegistrarEvent | LivenessEvent


class CallManager:
    def __init__(
        self, config: Config, ids: IdSource, random_bytes: RandomBytes, secret: bytes
    ) -> None:
        self.config = config
        self.ids = ids
        self.random_bytes = random_bytes
        self.timer_settings = TimerSettings(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4)
        self.endpoint = SipEndpoint(
            self.timer_settings,
            ids,
            user_agent=config.sip.user_agent,
            stateless_methods=frozenset({"OPTIONS"}),
        )
        self.local = LocalAddresses(config.sip.domain)
        listen_hosts = [address.host for address in config.sip.listen]
        self.directory = Directory.from_config(config, local_hosts=listen_hosts)
        self.registrar = Registrar(RegistrarSettings.from_config(config))
        auth_settings = AuthSettings.from_config(config)
        authenticator = DigestAuthenticator(
            secret, config.sip.domain, auth_settings.nonce_ttl, algorithms=config.auth.algorithms
        )
        self.auth = AuthPolicy.from_settings(self.directory, authenticator, auth_settings)
        self.b2bua = B2BUA(
            self.endpoint,
            self.local,
            ids,
            self.timer_settings,
            user_agent=config.sip.user_agent,
            validate_sdp=validate_sdp,
            audit_interval=config.keepalive.dialog_interval,
        )
        self.watch = EndpointWatch(config, self.endpoint, self.local, ids)
        self.b2bua.audit.is_watched = lambda endpoint_id: self.watch.target(endpoint_id) is not None
        recovery = config.recovery
        self.recovery = RecoveryEngine(
            self.b2bua,
            self.endpoint,
            self.local,
            ids,
            self.timer_settings,
            self,
            grace=recovery.grace,
            fallback=recovery.fallback,
            ring_timeout=recovery.ring_timeout,
            announce=recovery.announce,
            ivr_user=config.ivr.user,
            feature_code=recovery.feature_code,
            user_agent=config.sip.user_agent,
        )
        self.media: Anchor | None = media_setup.anchor_for(config)
        self.rtpengine: RtpengineAnchor | None = None  # its slots come from io/rtpengine.py
        if isinstance(self.media, RtpengineAnchor):
            self.rtpengine = self.media
        self.b2bua.media = self.media
        self.saver = CallSaver(self._media_port)
        self.now = 0.0  # the latest input's time, for the recovery engine's questions
        self.ivr_turn = 0  # the IVR node the last call went to (routing.next_ivr_node)
        # The static contacts being watched (endpoint ids); None until `start`.
        self._watched_statics: set[str] | None = None
        # Host names of configured URIs → their addresses (io/resolver.py fills it).
        self.resolved_targets = ResolvedTargets(self.local)
        self.b2bua.rest_target = self.resolved_targets.rest
        self.message_waiting = MessageWaiting(self.endpoint, self.local, ids, config.sip.user_agent)
        self.calls_completed = 0
        self.calls_restored = 0  # taken back from the store at start-up
        self._commands: deque[RegistrarCommand | SaveCall | DeleteCall] = deque()
        self._events: deque[ManagerEvent] = deque()

    @classmethod
    def from_config(
        cls, config: Config, ids: IdSource, random_bytes: RandomBytes, secret: bytes
    ) -> CallManager:
        return cls(config, ids, random_bytes, secret)

    def add_local_address(self, transport: str, address: tuple[str, int]) -> None:
        self.local.add(transport, address)

    def reload(self, config: Config) -> None:
        """SIGHUP: a new directory (users, trunks, trusted sources); calls and bindings stay."""
        listen_hosts = [address.host for address in config.sip.listen]
        self.directory = Directory.from_config(config, local_hosts=listen_hosts)
        self.auth.directory = self.directory
        self.config = config
        recovery = config.recovery
        self.recovery.configure(
            grace=recovery.grace,
            fallback=recovery.fallback,
            ring_timeout=recovery.ring_timeout,
            announce=recovery.announce,
        )
        self.message_waiting.user_agent = config.sip.user_agent
        self.resolved_targets.keep_only(self.dns_lookups())

    # --- host names (resolved ahead of time by io/resolver.py) ----------------------------------
    def dns_lookups(self) -> set[Lookup]:
        """The DNS look-ups the configured URIs need: static contacts, trunks, voicemail_uri."""
        return needed_lookups(self.directory, self.config.recovery.voicemail_uri)

    def set_resolved(
        self, lookup: Lookup, addresses: Iterable[tuple[str, int]], now: float
    ) -> None:
        """The addresses `lookup` resolved to, best first; calls go to the first from now on
        and fail over to the others. Static contacts behind the name are probed at the new
        first address."""
        moved = self.resolved_targets.set(lookup, tuple(addresses))
        if not moved or self._watched_statics is None:
            return
        self.now = now
        for static in self.directory.all_static_contacts():
            if lookup_for(static.uri) == lookup:
                self._watch_static(static, now)
        self._process(now)

    def resolved(self, lookup: Lookup) -> tuple[tuple[str, int], ...]:
        return self.resolved_targets.get(lookup)

    def restore_bindings(self, bindings: list[Binding], now: float) -> int:
        restored = self.registrar.restore(bindings, now)
        self._drain_registrar(now)
        return restored

    def restore_calls(self, snapshots: Iterable[CallSnapshot], now: float) -> int:
        """Take back the calls a previous run kept in the store (call_restore.py)."""
        restored = call_restore.restore_calls(self, snapshots, now)
        self.calls_restored += restored
        self._process(now)
        return restored

    def persist(self, command: SaveCall | DeleteCall) -> None:
        """Queue a call persistence command for the io layer."""
        self._commands.append(command)

    def save_pending(self, now: float) -> None:
        """Shutting down (SIGTERM): write every call change not written yet, so that the
        calls come back when callkeeper starts again."""
        self._commands.extend(self.saver.pending(self.b2bua.calls, now))

    def _media_port(self, leg: Leg) -> int | None:
        return self.media.side_port(leg) if self.media is not None else None

    # --- views (views.py) ----------------------------------------------------------------------
    def calls_view(self, wall: Wall) -> list[dict[str, Any]]:
        return views.calls_view(self, wall)

    def call_view(self, call_id: str, wall: Wall) -> dict[str, Any] | None:
        return views.call_by_id_view(self, call_id, wall)

    def endpoints_view(
        self, now: float, wall: Wall, user: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Registered and static contacts, with the liveness monitor's state and last sign of
        life; only `user`'s, only those in `state`, when given."""
        return views.endpoints_view(self, now, wall, user, state)

    def endpoint_counts(self) -> dict[str, int]:
        return self.watch.monitor.counts()

    @property
    def sip_stats(self) -> SipStats:
        return self.endpoint.stats

    @property
    def transaction_count(self) -> int:
        return self.endpoint.transaction_count

    def start(self, now: float) -> None:
        """Begin watching the static contacts (once the listen addresses are known)."""
        if self._watched_statics is None:
            self.watch_static_contacts(now)

    def watch_static_contacts(self, now: float) -> None:
        """Watch the directory's static contacts: at start, and after a SIGHUP `reload` (a
        contact added there is probed from now on, a removed one let go; the others keep their
        liveness state — watching them anew would count as a sign of life)."""
        self.now = now
        watched = self._watched_statics or set()
        current = {static.endpoint_id: static for static in self.directory.all_static_contacts()}
        for endpoint_id in watched - current.keys():
            self.watch.unwatch(endpoint_id)
        for endpoint_id, static in current.items():
            if endpoint_id not in watched:
                self._watch_static(static, now)
        self._watched_statics = set(current)
        self._process(now)

    def _watch_static(self, static: StaticContact, now: float) -> None:
        """Probe `static` at its address; one whose name has none yet is not watched until it
        does (`set_resolved`)."""
        flow = self.resolved_targets.flow_for(static.uri)
        if flow is None:
            self.watch.unwatch(static.endpoint_id)
        else:
            self.watch.watch_static(static, flow, now)

    # --- inputs (from the driver) -----------------------------------------------------------
    def receive_datagram(self, data: bytes, flow: Flow, now: float) -> None:
        self.now = now
        self.endpoint.receive_datagram(data, flow, now)
        self._process(now)

    def receive_stream_item(self, item: StreamItem, flow: Flow, now: float) -> None:
        self.now = now
        self.endpoint.receive_stream_item(item, flow, now)
        self._process(now)

    def connection_lost(self, flow: Flow, now: float) -> None:
        self.now = now
        self.endpoint.connection_lost(flow, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self.now = now
        self.endpoint.handle_timer(now)
        self.registrar.handle_timer(now)
        self.b2bua.handle_timer(now)
        self.recovery.handle_timer(now)
        self.watch.handle_timer(now)
        self._commands.extend(self.saver.due(self.b2bua.calls, now))
        self.message_waiting.subscriptions.handle_timer(now)
        self._process(now)

    def get_timer(self) -> float | None:
        return earliest(
            self.endpoint.get_timer(),
            self.registrar.get_timer(),
            self.b2bua.get_timer(),
            self.recovery.get_timer(),
            self.watch.get_timer(),
            self.saver.next_deadline(),
            self.message_waiting.subscriptions.get_timer(),
        )

    def next_command(
        self,
    ) -> (
        WireCommand
        | RegistrarCommand
        | SaveCall
        | DeleteCall
        | MediaCommand
        | RtpengineCommand
        | None
    ):
        command = self.endpoint.next_command()
        if command is not None:
            return command
        if self._commands:
            return self._commands.popleft()
        return self.media.next_command() if self.media is not None else None

    def next_event(self) -> ManagerEvent | None:
        return self._events.popleft() if self._events else None

    # --- event handling ---------------------------------------------------------------------
    def _process(self, now: float) -> None:
        endpoint = self.endpoint
        b2bua = self.b2bua
        watch = self.watch
        recovery = self.recovery
        subscriptions = self.message_waiting.subscriptions
        while (event := endpoint.next_event()) is not None:
            kind = type(event)
            if kind is StatelessRequestReceived:
                assert isinstance(event, StatelessRequestReceived)
                watch.heard_from(event.flow, now)
                endpoint.send_stateless_response(
                    request_dispatch.options_response(self, event.request), event.flow
                )
            elif kind is RequestReceived:
                assert isinstance(event, RequestReceived)
                watch.heard_from(event.flow, now)
                if event.request.method == "ACK":
                    b2bua.receive_ack(event.request, now)
                elif event.transaction_id is not None:
                    request_dispatch.dispatch(
                        self, event.request, event.transaction_id, event.flow, now
                    )
            elif kind is ResponseReceived:
                assert isinstance(event, ResponseReceived)
                watch.heard_from(event.flow, now)
                transaction_id = event.transaction_id
                if not (
                    watch.probe_response(transaction_id, now)
                    or b2bua.receive_response(transaction_id, event.response, now)
                    or subscriptions.receive_response(transaction_id, event.response)
                ):
                    recovery.receive_response(transaction_id, event.response, now)
            elif kind is KeepaliveReceived:
                assert isinstance(event, KeepaliveReceived)
                watch.heard_from(event.flow, now)
            elif kind is CancelReceived:
                assert isinstance(event, CancelReceived)
                b2bua.receive_cancel(
                    event.transaction_id, event.cancelled_transaction_id, event.request, now
                )
            elif kind is TransactionTimedOut:
                assert isinstance(event, TransactionTimedOut)
                # A probe's silence is judged by the monitor's own, shorter deadline.
                b2bua.transaction_timed_out(event.transaction_id, now)
                recovery.transaction_timed_out(event.transaction_id, now)
                subscriptions.notify_failed(event.transaction_id)
            elif kind is TransportFailed:
                assert isinstance(event, TransportFailed)
                watch.probe_transport_failed(event.transaction_id, now)
                b2bua.transport_failed(event.transaction_id, now)
                subscriptions.notify_failed(event.transaction_id)
            elif kind is TransactionTerminated:
                assert isinstance(event, TransactionTerminated)
                b2bua.transaction_terminated(event.transaction_id)
                recovery.transaction_terminated(event.transaction_id)
                watch.probe_finished(event.transaction_id)
                subscriptions.transaction_terminated(event.transaction_id)
            elif kind is ConnectionClosed:
                assert isinstance(event, ConnectionClosed)
                watch.connection_closed(event.flow, now)
                b2bua.connection_closed(event.flow, now)
                self.registrar.connection_closed(event.flow)
        self._drain_registrar(now)
        self._drain_calls(now)
        self._drain_watch(now)
        self._drain_calls(now)  # what the recovery engine did about failures
        while (recovery_event := recovery.next_event()) is not None:
            if isinstance(recovery_event, CallRecovered):
                self.saver.changed(recovery_event.call_id, now)  # new legs, or resumed ones
            self._events.append(recovery_event)

    def _drain_calls(self, now: float) -> None:
        b2bua = self.b2bua
        while (call_event := b2bua.next_event()) is not None:
            if isinstance(call_event, CallAnswered):
                for endpoint_id in (call_event.caller_endpoint, call_event.endpoint):
                    self.watch.call_started_on(endpoint_id, now)
                self.recovery.call_answered(call_event.call_id)
                self.saver.changed(call_event.call_id, now)
            elif isinstance(call_event, CallEnded):
                self.calls_completed += 1
                for endpoint_id in call_event.endpoints:
                    self.watch.call_ended_on(endpoint_id, now)
                self.recovery.call_ended(call_event.call_id, call_event.endpoints, now)
                delete = self.saver.ended(call_event.call_id)
                if delete is not None:
                    self._commands.append(delete)
            self._events.append(call_event)
        changed = b2bua.changed_calls
        while changed:
            self.saver.changed(changed.popleft(), now)

    def _drain_watch(self, now: float) -> None:
        """Liveness events, in order, to the recovery engine as well as to the API."""
        while (event := self.watch.next_event()) is not None:
            if isinstance(event, EndpointDown):
                self.recovery.endpoint_down(event.endpoint_id, event.reason, now)
            elif isinstance(event, EndpointAlive):
                self.recovery.endpoint_back(event.endpoint_id, now)
            self._events.append(event)

    def _drain_registrar(self, now: float) -> None:
        registrar = self.registrar
        while (command := registrar.next_command()) is not None:
            self._commands.append(command)
        while (event := registrar.next_event()) is not None:
            endpoint_id = event.binding.endpoint_id
            if isinstance(event, BindingRemoved) and event.reason == "unregistered":
                self.recovery.endpoint_left(endpoint_id, now)  # before the watch calls it DOWN
            self.watch.registrar_event(event, now)
            self._drain_watch(now)
            if isinstance(event, BindingAdded):
                self.message_waiting.registered(event.binding, now)
            if isinstance(event, BindingAdded | BindingRefreshed):
                self.watch.registered_again(endpoint_id, now)
                self.recovery.endpoint_back(endpoint_id, now)  # a REGISTER is a sign of life
            self._events.append(event)

    # --- what the recovery engine asks (calls.recovery.Routes; routing.py answers) --------------
    def current_contact(self, endpoint_id: str) -> Contact | None:
        return routing.current_contact(self, endpoint_id)

    def step_contacts(self, user: str, step: str, exclude: Collection[str]) -> list[Contact]:
        return routing.step_contacts(self, user, step, exclude)

    def target_contacts(self, target: str) -> list[Contact]:
        """A user's live devices, a number through its trunk, or a SIP URI as it is."""
        return routing.target_contacts(self, target)

    def has_voicemail(self, user: str) -> bool:
        return self.directory.voicemail(user)

    def leg_moved(self, old_endpoint: str | None, new_endpoint: str | None, now: float) -> None:
        if old_endpoint is not None:
            self.watch.call_ended_on(old_endpoint, now)
        self.watch.call_started_on(new_endpoint, now)

    # --- voicemail (the io relay reports) --------------------------------------------------------
    def voicemail_recorded(self, user: str, waiting: int, now: float) -> None:
        """A message was stored for `user` (`waiting` in the mailbox now): tell their phones
        (unsolicited NOTIFY message-summary, RFC 3842), and again when one registers."""
        self.now = now
        contacts = routing.user_contacts(self, user, now)
        self.message_waiting.recorded(user, waiting, contacts, now)
        self._process(now)

    def restore_voicemail(self, waiting: dict[str, int]) -> None:
        self.message_waiting.restore(waiting)

    def media_digit(self, side: str, key: str, now: float) -> None:
        """The relay saw an RFC 4733 key from a leg's phone (`side` is the leg's id)."""
        self.now = now
        for call in self.b2bua.calls.values():
            for leg in (call.a, call.b):
                if leg is not None and leg.id == side:
                    handover.key_pressed(self.recovery, call, leg, key, now)
                    self._process(now)
                    return

    def recording_stopped(self, call_id: str, now: float) -> None:
        """The relay stopped a voicemail recording by itself (silence, maximum length)."""
        self.now = now
        call = self.b2bua.calls.get(call_id)
        if call is not None:
            self.b2bua.end_call(call, "voicemail: message recorded", now)
        self._process(now)

    # --- asked-for recovery (the HTTP API) ------------------------------------------------------
    def recover_call(self, call_id: str, target: str, now: float) -> tuple[int, str]:
        """`POST /api/v1/calls/{id}/recover`: (HTTP status, reason)."""
        self.now = now
        result = handover.recover(self.recovery, call_id, target, now)
        self._process(now)
        return result

    def reboot_endpoint(self, endpoint_id: str, now: float) -> bool:
        """`POST /api/v1/endpoints/{id}/reboot`: NOTIFY it, then treat it as DOWN until it
        returns (its calls are held for grace, then resumed or moved)."""
        self.now = now
        if not self.recovery.request_reboot(endpoint_id, now):
            return False
        self.watch.reset(endpoint_id, now)
        self._process(now)
        return True
