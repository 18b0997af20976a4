"""The call manager: the pure core that the io driver feeds.

It owns the SIP endpoint, the registrar and the B2BUA, and decides what every request gets:
the element-wide policy of RFC 3261 §8.2 first (420 for an unsupported Require, 405/501 for
methods we do not serve, 483 when Max-Forwards ran out, 482 for a call that looped back to us),
then authentication (digest, or a trusted source), then the registrar for REGISTER and the
B2BUA for INVITE and everything inside a call. OPTIONS keep-alive probes are answered
statelessly. Outputs are the endpoint's wire commands, then the registrar's persistence
commands; `next_event()` yields what the API and metrics want to know.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from callkeeper.calls import handover, mwi
from callkeeper.calls.anchors import Anchor
from callkeeper.calls.b2bua import B2BUA, CallTarget, Contact
from callkeeper.calls.dialing import build_notify
from callkeeper.calls.events import CallAnswered, CallEnded, CallEvent, RecoveryEvent
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.media_anchor import MediaAnchor, MediaCommand, PortPool
from callkeeper.calls.model import Call, LegState
from callkeeper.calls.recovery import RecoveryEngine
from callkeeper.calls.rtpengine_anchor import Recorder, RtpengineAnchor, RtpengineCommand
from callkeeper.calls.views import Wall, binding_view, call_view, static_view
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
    NotFound,
    NumberTarget,
    Registrar,
    RegistrarCommand,
    RegistrarEvent,
    RegistrarSettings,
    StaticContact,
    UserTarget,
)
from callkeeper.liveness import EndpointAlive, EndpointDown, LivenessEvent
from callkeeper.liveness.states import State
from callkeeper.sdp import validate_sdp
from callkeeper.sip import capabilities
from callkeeper.sip.digest import DigestAuthenticator
from callkeeper.sip.endpoint import (
    ConnectionClosed,
    KeepaliveReceived,
    SipEndpoint,
    StatelessRequestReceived,
    WireCommand,
)
from callkeeper.sip.errors import ParseError
from callkeeper.sip.locate import DEFAULT_PORTS, Lookup, lookup_for, uri_transport
from callkeeper.sip.message import Request, Response, has_to_tag
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
from callkeeper.sip.uri import URI, parse_uri

RandomBytes = Callable[[int], bytes]
# Out-of-dialog requests of these methods only make sense inside a dialog we do not have.
_DIALOG_ONLY = frozenset({"BYE", "INFO", "UPDATE", "PRACK", "NOTIFY", "REFER"})

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
        self.media: Anchor | None = None
        self.rtpengine: RtpengineAnchor | None = None  # its slots come from io/rtpengine.py
        if config.media.mode == "relay":
            self.media = MediaAnchor(
                media_address(config), PortPool.from_range(config.media.rtp_ports)
            )
        elif config.media.mode == "rtpengine":
            # The built-in relay still records voicemail, on ports from media.rtp_ports.
            recorder = Recorder(media_address(config), PortPool.from_range(config.media.rtp_ports))
            self.media = self.rtpengine = RtpengineAnchor(recorder)
        self.b2bua.media = self.media
        self._now = 0.0  # the latest input's time, for the recovery engine's questions
        self._waiting: dict[str, int] = {}  # voicemail messages per user, for MWI
        self._ivr_turn = 0
        self._watched_statics = False
        self._in_call: dict[str, int] = {}  # endpoint id → calls it is in
        # Host names of configured URIs → their addresses, best first (io/resolver.py fills it).
        self._resolved: dict[Lookup, tuple[tuple[str, int], ...]] = {}
        self.calls_completed = 0
        self._commands: deque[RegistrarCommand] = deque()
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
        wanted = self.dns_lookups()
        self._resolved = {lookup: v for lookup, v in self._resolved.items() if lookup in wanted}

    # --- host names (resolved ahead of time by io/resolver.py) ----------------------------------
    def dns_lookups(self) -> set[Lookup]:
        """The DNS look-ups the configured URIs need: static contacts, trunks, voicemail_uri.
        (A `mobile` is reached through the trunk that serves its host or its number.)"""
        uris = [static.uri for static in self.directory.all_static_contacts()]
        uris += [trunk.uri for trunk in self.directory.trunks.trunks if trunk.uri.is_sip]
        if self.config.recovery.voicemail_uri is not None:
            uris.append(parse_uri(self.config.recovery.voicemail_uri))
        return {lookup for lookup in map(lookup_for, uris) if lookup is not None}

    def set_resolved(
        self, lookup: Lookup, addresses: Iterable[tuple[str, int]], now: float
    ) -> None:
        """The addresses `lookup` resolved to, best first; calls use the first from now on.
        Static contacts behind the name are probed at the new address."""
        addresses = tuple(addresses)
        previous = self._resolved.get(lookup, ())
        if addresses:
            self._resolved[lookup] = addresses
        else:
            self._resolved.pop(lookup, None)
        if previous[:1] == addresses[:1] or not self._watched_statics:
            return
        self._now = now
        for static in self.directory.all_static_contacts():
            if lookup_for(static.uri) == lookup:
                self._watch_static(static, now)
        self._process(now)

    def resolved(self, lookup: Lookup) -> tuple[tuple[str, int], ...]:
        return self._resolved.get(lookup, ())

    def restore_bindings(self, bindings: list[Binding], now: float) -> int:
        restored = self.registrar.restore(bindings, now)
        self._drain_registrar(now)
        return restored

    # --- views ------------------------------------------------------------------------------
    def calls_view(self, wall: Wall) -> list[dict[str, Any]]:
        return [self._call_view(call, wall) for call in self.b2bua.calls.values()]

    def call_view(self, call_id: str, wall: Wall) -> dict[str, Any] | None:
        call = self.b2bua.calls.get(call_id)
        return self._call_view(call, wall) if call is not None else None

    def _call_view(self, call: Call, wall: Wall) -> dict[str, Any]:
        view = call_view(call, wall)
        recovery = self.recovery.recoveries.get(call.id)
        if recovery is not None:
            view["recovery"] = {
                "failed_endpoint": recovery.failed.endpoint,
                "reason": recovery.reason,
                "since": wall(recovery.started),
                "step": recovery.step or None,
                "grace_until": wall(recovery.grace_deadline),
            }
        return view

    def _calls_by_endpoint(self) -> dict[str, list[str]]:
        by_endpoint: dict[str, list[str]] = {}
        for call in self.b2bua.calls.values():
            for leg in call.legs():
                if leg.endpoint is not None and leg.state is not LegState.TERMINATED:
                    by_endpoint.setdefault(leg.endpoint, []).append(call.id)
        return by_endpoint

    def endpoints_view(
        self, now: float, wall: Wall, user: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Registered and static contacts, with the liveness monitor's state and last sign of
        life; only `user`'s, only those in `state`, when given."""
        calls = self._calls_by_endpoint()
        monitor = self.watch.monitor
        views = []
        for binding in self.registrar.all_bindings():
            if not binding.is_live(now) or (user is not None and binding.user != user):
                continue
            seen = monitor.view(binding.endpoint_id)
            endpoint_state = seen.state.value if seen is not None else "alive"
            if state is not None and endpoint_state != state:
                continue
            view = binding_view(binding, endpoint_state, calls.get(binding.endpoint_id, []), wall)
            if seen is not None:
                view["last_seen"] = wall(seen.last_seen)
            views.append(view)
        for static in self.directory.all_static_contacts():
            if user is not None and static.user != user:
                continue
            seen = monitor.view(static.endpoint_id)
            endpoint_state = seen.state.value if seen is not None else "alive"
            if state is not None and endpoint_state != state:
                continue
            last_seen = seen.last_seen if seen is not None else None
            views.append(
                static_view(
                    static, endpoint_state, last_seen, calls.get(static.endpoint_id, []), wall
                )
            )
        return views

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
        if self._watched_statics:
            return
        self._watched_statics = True
        for static in self.directory.all_static_contacts():
            self._watch_static(static, now)
        self._process(now)

    def _watch_static(self, static: StaticContact, now: float) -> None:
        """Probe `static` at its address; one whose name has none yet is not watched until it
        does (`set_resolved`)."""
        flow = self._flow_for_uri(static.uri)
        if flow is None:
            self.watch.unwatch(static.endpoint_id)
        else:
            self.watch.watch_static(static, flow, now)

    # --- inputs (from the driver) -----------------------------------------------------------
    def receive_datagram(self, data: bytes, flow: Flow, now: float) -> None:
        self._now = now
        self.endpoint.receive_datagram(data, flow, now)
        self._process(now)

    def receive_stream_item(self, item: StreamItem, flow: Flow, now: float) -> None:
        self._now = now
        self.endpoint.receive_stream_item(item, flow, now)
        self._process(now)

    def connection_lost(self, flow: Flow, now: float) -> None:
        self._now = now
        self.endpoint.connection_lost(flow, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.endpoint.handle_timer(now)
        self.registrar.handle_timer(now)
        self.b2bua.handle_timer(now)
        self.recovery.handle_timer(now)
        self.watch.handle_timer(now)
        self._process(now)

    def get_timer(self) -> float | None:
        return earliest(
            self.endpoint.get_timer(),
            self.registrar.get_timer(),
            self.b2bua.get_timer(),
            self.recovery.get_timer(),
            self.watch.get_timer(),
        )

    def next_command(
        self,
    ) -> WireCommand | RegistrarCommand | MediaCommand | RtpengineCommand | None:
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
        while (event := endpoint.next_event()) is not None:
            kind = type(event)
            if kind is StatelessRequestReceived:
                assert isinstance(event, StatelessRequestReceived)
                watch.heard_from(event.flow, now)
                endpoint.send_stateless_response(self._options_response(event.request), event.flow)
            elif kind is RequestReceived:
                assert isinstance(event, RequestReceived)
                watch.heard_from(event.flow, now)
                if event.request.method == "ACK":
                    b2bua.receive_ack(event.request, now)
                elif event.transaction_id is not None:
                    self._request(event.request, event.transaction_id, event.flow, now)
            elif kind is ResponseReceived:
                assert isinstance(event, ResponseReceived)
                watch.heard_from(event.flow, now)
                transaction_id = event.transaction_id
                if not (
                    watch.probe_response(transaction_id, now)
                    or b2bua.receive_response(transaction_id, event.response, now)
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
            elif kind is TransportFailed:
                assert isinstance(event, TransportFailed)
                watch.probe_transport_failed(event.transaction_id, now)
            elif kind is TransactionTerminated:
                assert isinstance(event, TransactionTerminated)
                b2bua.transaction_terminated(event.transaction_id)
                recovery.transaction_terminated(event.transaction_id)
                watch.probe_finished(event.transaction_id)
            elif kind is ConnectionClosed:
                assert isinstance(event, ConnectionClosed)
                watch.connection_closed(event.flow, now)
                self.registrar.connection_closed(event.flow)
        self._drain_registrar(now)
        self._drain_calls(now)
        self._drain_watch(now)
        self._drain_calls(now)  # what the recovery engine did about failures
        while (recovery_event := recovery.next_event()) is not None:
            self._events.append(recovery_event)

    def _drain_calls(self, now: float) -> None:
        b2bua = self.b2bua
        while (call_event := b2bua.next_event()) is not None:
            if isinstance(call_event, CallAnswered):
                for endpoint_id in (call_event.caller_endpoint, call_event.endpoint):
                    self._call_started_on(endpoint_id, now)
                self.recovery.call_answered(call_event.call_id)
            elif isinstance(call_event, CallEnded):
                self.calls_completed += 1
                for endpoint_id in call_event.endpoints:
                    self._call_ended_on(endpoint_id, now)
                self.recovery.call_ended(call_event.call_id, call_event.endpoints, now)
            self._events.append(call_event)

    def _drain_watch(self, now: float) -> None:
        """Liveness events, in order, to the recovery engine as well as to the API."""
        while (event := self.watch.next_event()) is not None:
            if isinstance(event, EndpointDown):
                self.recovery.endpoint_down(event.endpoint_id, event.reason, now)
            elif isinstance(event, EndpointAlive):
                self.recovery.endpoint_back(event.endpoint_id, now)
            self._events.append(event)

    def _call_started_on(self, endpoint_id: str | None, now: float) -> None:
        if endpoint_id is None:
            return
        self._in_call[endpoint_id] = self._in_call.get(endpoint_id, 0) + 1
        self.watch.set_in_call(endpoint_id, True, now)

    def _call_ended_on(self, endpoint_id: str, now: float) -> None:
        count = self._in_call.get(endpoint_id, 0) - 1
        if count > 0:
            self._in_call[endpoint_id] = count
            return
        self._in_call.pop(endpoint_id, None)
        self.watch.set_in_call(endpoint_id, False, now)

    def _drain_registrar(self, now: float) -> None:
        registrar = self.registrar
        while (command := registrar.next_command()) is not None:
            self._commands.append(command)
        while (event := registrar.next_event()) is not None:
            endpoint_id = event.binding.endpoint_id
            if isinstance(event, BindingRemoved) and event.reason == "unregistered":
                self.recovery.endpoint_left(endpoint_id, now)  # before the watch calls it DOWN
            self.watch.registrar_event(event, self._in_call.keys(), now)
            self._drain_watch(now)
            if isinstance(event, BindingAdded) and self._waiting.get(event.binding.user):
                binding = event.binding
                flow = self.local.complete(binding.next_hop())
                self._notify_waiting(binding.user, binding.request_uri, flow, now)
            if isinstance(event, BindingAdded | BindingRefreshed):
                if endpoint_id in self._in_call:
                    self.watch.set_in_call(endpoint_id, True, now)
                self.recovery.endpoint_back(endpoint_id, now)  # a REGISTER is a sign of life
            self._events.append(event)

    # --- requests ---------------------------------------------------------------------------------
    def _request(self, request: Request, transaction_id: int, flow: Flow, now: float) -> None:
        endpoint = self.endpoint
        if has_to_tag(request):
            if self.b2bua.knows_dialog(request):
                self.b2bua.receive_in_dialog(request, transaction_id, flow, now)
            else:
                self._reply(request, transaction_id, 481, now, tag=False)
            return
        response = self._element_policy(request)
        if response is not None:
            endpoint.send_response(response, now, transaction_id)
            return
        method = request.method
        if method in _DIALOG_ONLY:
            self._reply(request, transaction_id, 481, now)
            return
        if method not in ("REGISTER", "INVITE"):
            # SUBSCRIBE (message-summary arrives with voicemail), MESSAGE: not served yet.
            self._reply(request, transaction_id, 489 if method == "SUBSCRIBE" else 405, now)
            return
        decision = self.auth.check(request, flow, now, self.random_bytes(16))
        if decision.response is not None:
            endpoint.send_response(decision.response, now, transaction_id)
            return
        if method == "REGISTER":
            assert decision.user is not None
            reply = self.registrar.handle_register(
                request, flow, decision.user, now, to_tag=endpoint.new_tag()
            )
            endpoint.send_response(reply, now, transaction_id)
            return
        self._invite(request, transaction_id, flow, decision.user, now)

    def _invite(
        self, request: Request, transaction_id: int, flow: Flow, caller: str | None, now: float
    ) -> None:
        binding = self.registrar.binding_by_flow(flow)
        caller_endpoint = binding.endpoint_id if binding is not None else None
        if caller is not None and request.uri.user == self.config.recovery.feature_code:
            status = handover.pick_up(
                self.recovery, request, transaction_id, flow, caller, caller_endpoint, now
            )
            if status is not None:
                self._reply(request, transaction_id, status, now)
            return
        target = self.directory.resolve(request.uri)
        if isinstance(target, NotFound):
            self._reply(request, transaction_id, target.status, now)
            return
        if isinstance(target, UserTarget):
            name = target.user.name
            contacts = self._user_contacts(name, now)
            if name == self.config.ivr.user and contacts:
                contacts = [self._next_ivr_node(contacts)]
            to_uri = URI("sip", user=name, host=self.local.domain)
            call_target = CallTarget(name, to_uri, tuple(contacts))
        else:
            assert isinstance(target, NumberTarget)
            contact = self._trunk_contact(target)
            if contact is None:
                self._unresolved(request, transaction_id, target.trunk.uri, now)
                return
            call_target = CallTarget(target.number, contact.uri, (contact,))
        self.b2bua.start_call(
            request, transaction_id, flow, caller, call_target, now, caller_endpoint=caller_endpoint
        )

    # --- what the recovery engine asks (calls.recovery.Routes) -----------------------------------
    def current_contact(self, endpoint_id: str) -> Contact | None:
        target = self.watch.target(endpoint_id)
        if target is None:
            return None
        uri, flow = target
        return Contact(uri, flow, endpoint=endpoint_id)

    def step_contacts(self, user: str, step: str, exclude: Collection[str]) -> list[Contact]:
        if step == "devices":
            return [
                contact
                for contact in self._user_contacts(user, self._now)
                if contact.endpoint not in exclude and not self._is_down(contact.endpoint)
            ]
        if step == "mobile":
            target = self.directory.mobile_target(user)
            contact = self._trunk_contact(target) if isinstance(target, NumberTarget) else None
            return [contact] if contact is not None else []
        if step == "voicemail":
            uri_text = self.config.recovery.voicemail_uri
            if uri_text is None or not self.directory.voicemail(user):
                return []
            uri = parse_uri(uri_text)
            if uri.user is None:
                uri = uri.replace(user=user)
            flow = self._flow_for_uri(uri)
            return [Contact(uri, flow, endpoint="voicemail", user=user)] if flow is not None else []
        return []

    def target_contacts(self, target: str) -> list[Contact]:
        """A user's live devices, a number through its trunk, or a SIP URI as it is."""
        resolved = self.directory.resolve(target)
        if isinstance(resolved, UserTarget):
            return self.step_contacts(resolved.user.name, "devices", ())
        if isinstance(resolved, NumberTarget):
            contact = self._trunk_contact(resolved)
            return [contact] if contact is not None else []
        try:
            uri = parse_uri(target)
        except ParseError:
            return []
        if not uri.is_sip or uri.user is None or self.local.is_ours(uri.host, uri.port):
            return []
        flow = self._flow_for_uri(uri)  # a name outside the configuration has no address
        return [Contact(uri, flow)] if flow is not None else []

    def has_voicemail(self, user: str) -> bool:
        return self.directory.voicemail(user)

    def leg_moved(self, old_endpoint: str | None, new_endpoint: str | None, now: float) -> None:
        if old_endpoint is not None:
            self._call_ended_on(old_endpoint, now)
        self._call_started_on(new_endpoint, now)

    def _next_ivr_node(self, contacts: list[Contact]) -> Contact:
        """IVR nodes share the calls round-robin (a call goes to one node, not all of them),
        skipping nodes the liveness monitor has DOWN."""
        live = [c for c in contacts if not self._is_down(c.endpoint)] or contacts
        self._ivr_turn += 1
        return live[self._ivr_turn % len(live)]

    def _is_down(self, endpoint_id: str | None) -> bool:
        if endpoint_id is None:
            return False
        view = self.watch.monitor.view(endpoint_id)
        return view is not None and view.state is State.DOWN

    def _trunk_contact(self, target: NumberTarget) -> Contact | None:
        """The number at its trunk; None while the trunk's host name has no address."""
        uri = target.trunk.uri.replace(user=target.number)
        flow = self._flow_for_uri(uri)
        if flow is None:
            return None
        return Contact(uri, flow, endpoint=f"trunk:{target.trunk.name}")

    # --- voicemail (the io relay reports) --------------------------------------------------------
    def voicemail_recorded(self, user: str, waiting: int, now: float) -> None:
        """A message was stored for `user` (`waiting` in the mailbox now): tell their phones
        (unsolicited NOTIFY message-summary, RFC 3842), and again when one registers."""
        self._now = now
        self._waiting[user] = waiting
        for contact in self._user_contacts(user, now):
            self._notify_waiting(user, contact.uri, contact.flow, now)
        self._process(now)

    def restore_voicemail(self, waiting: dict[str, int]) -> None:
        self._waiting.update(waiting)

    def media_digit(self, side: str, key: str, now: float) -> None:
        """The relay saw an RFC 4733 key from a leg's phone (`side` is the leg's id)."""
        self._now = now
        for call in self.b2bua.calls.values():
            for leg in (call.a, call.b):
                if leg is not None and leg.id == side:
                    handover.key_pressed(self.recovery, call, leg, key, now)
                    self._process(now)
                    return

    def recording_stopped(self, call_id: str, now: float) -> None:
        """The relay stopped a voicemail recording by itself (silence, maximum length)."""
        self._now = now
        call = self.b2bua.calls.get(call_id)
        if call is not None:
            self.b2bua.end_call(call, "voicemail: message recorded", now)
        self._process(now)

    def _notify_waiting(self, user: str, uri: URI, flow: Flow, now: float) -> None:
        account = f"sip:{user}@{self.local.domain}"
        body = mwi.message_summary(account, self._waiting.get(user, 0))
        notify = build_notify(
            self.local,
            self.ids,
            uri=uri,
            flow=flow,
            user_agent=self.config.sip.user_agent,
            event="message-summary",
            body=body,
            content_type=mwi.CONTENT_TYPE,
            to_uri=URI("sip", user=user, host=self.local.domain),
        )
        self.endpoint.send_request(notify, flow, now)

    # --- asked-for recovery (the HTTP API) ------------------------------------------------------
    def recover_call(self, call_id: str, target: str, now: float) -> tuple[int, str]:
        """`POST /api/v1/calls/{id}/recover`: (HTTP status, reason)."""
        self._now = now
        result = handover.recover(self.recovery, call_id, target, now)
        self._process(now)
        return result

    def reboot_endpoint(self, endpoint_id: str, now: float) -> bool:
        """`POST /api/v1/endpoints/{id}/reboot`: NOTIFY it, then treat it as DOWN until it
        returns (its calls are held for grace, then resumed or moved)."""
        self._now = now
        if not self.recovery.request_reboot(endpoint_id, now):
            return False
        self.watch.reset(endpoint_id, now)
        self._process(now)
        return True

    def _user_contacts(self, user: str, now: float) -> list[Contact]:
        contacts = [
            Contact(
                binding.request_uri,
                self.local.complete(binding.next_hop()),
                endpoint=binding.endpoint_id,
                user=user,
            )
            for binding in self.registrar.contacts_of(user, now)
        ]
        for static in self.directory.static_contacts(user):
            flow = self._flow_for_uri(static.uri)
            if flow is None:
                continue  # its host name has no address (yet): the user's other devices ring
            contacts.append(Contact(static.uri, flow, endpoint=static.endpoint_id, user=user))
        return contacts

    def _flow_for_uri(self, uri: URI) -> Flow | None:
        """The flow to a URI's host and port: an IP literal as it is, a host name at the first
        address io/resolver.py found for it (RFC 3263), None while it has none."""
        transport = uri_transport(uri)
        lookup = lookup_for(uri)
        if lookup is None:
            host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
            address = (host, uri.port or DEFAULT_PORTS[transport])
        else:
            addresses = self._resolved.get(lookup)
            if not addresses:
                return None
            address = addresses[0]
        return Flow(transport, address, self.local.local_for(transport))

    def _unresolved(self, request: Request, transaction_id: int, uri: URI, now: float) -> None:
        """503 for a call whose next hop's host name has no address yet (DNS is down or the
        name does not exist): our failure, so the caller may try again after a DNS retry."""
        response = request.create_response(503, to_tag=self.endpoint.new_tag())
        response.headers.add("Retry-After", str(math.ceil(self.config.dns.min_ttl)))
        response.headers.add(
            "Warning", f'399 {self.config.sip.user_agent} "no address for {uri.host} yet"'
        )
        self.endpoint.send_response(response, now, transaction_id)

    def _element_policy(self, request: Request) -> Response | None:
        """RFC 3261 §8.2 checks every out-of-dialog request passes before anything else."""
        tag = self.endpoint.new_tag()
        response = capabilities.extension_response(request, tag) or capabilities.method_response(
            request, tag
        )
        if response is not None:
            return response
        if request.method == "INVITE":
            if request.headers.get("max-forwards", "70") == "0":
                return request.create_response(483, to_tag=tag)
            if self.b2bua.is_own_call_id(request.call_id):
                return request.create_response(482, to_tag=tag)
        return None

    def _options_response(self, request: Request) -> Response:
        tag = self.endpoint.new_tag()
        return capabilities.extension_response(request, tag) or capabilities.options_response(
            request, tag, self.endpoint.user_agent
        )

    def _reply(
        self, request: Request, transaction_id: int, status: int, now: float, *, tag: bool = True
    ) -> None:
        to_tag = self.endpoint.new_tag() if tag else None
        self.endpoint.send_response(
            request.create_response(status, to_tag=to_tag), now, transaction_id
        )


def media_address(config: Config) -> str:
    """The address phones send RTP to: `media.address`, else the first SIP listen address that
    is not a wildcard, else loopback."""
    if config.media.address is not None:
        return config.media.address
    for listen in config.sip.listen:
        host = listen.host.strip("[]")
        if host not in ("0.0.0.0", "::", ""):
            return host
    return "127.0.0.1"
