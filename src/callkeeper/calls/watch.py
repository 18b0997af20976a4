"""Which endpoints the liveness monitor watches, and how the call manager feeds it.

The registrar says which contacts exist (a binding added, refreshed, removed), the directory
which static contacts exist, and the SIP endpoint what arrives from where; this module turns
those into the monitor's inputs and carries out its OPTIONS probes. RFC 5626 outbound phones
ping us (`keepalive` mode, every `flow_timer`); everything else is probed with OPTIONS. It also
counts the calls each endpoint is in: one in a call is probed faster, and judged DOWN at once
when it de-registers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callkeeper.calls.histogram import Histogram
from callkeeper.calls.locals import LocalAddresses
from callkeeper.config import Config
from callkeeper.directory import (
    Binding,
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    RegistrarEvent,
    StaticContact,
)
from callkeeper.liveness import (
    EndpointDown,
    EndpointKind,
    LivenessEvent,
    LivenessMonitor,
    LivenessSettings,
    Mode,
    SendProbe,
)
from callkeeper.sip.address import Address
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import Request
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI
from callkeeper.sip.via import MAGIC_COOKIE

# Upper bounds of `callkeeper_detection_seconds` (last sign of life → DOWN).
DETECTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


FlowKey = tuple[str, tuple[str, int], int | None]


@dataclass(frozen=True, slots=True)
class _Target:
    uri: URI
    flow: Flow  # where probes go
    key: FlowKey  # where its signs of life come from (`_by_flow`)


class EndpointWatch:
    def __init__(
        self, config: Config, endpoint: SipEndpoint, local: LocalAddresses, ids: IdSource
    ) -> None:
        keepalive = config.keepalive
        self.monitor = LivenessMonitor(
            LivenessSettings(
                flow_timer=float(keepalive.flow_timer),
                options_interval=keepalive.options_interval,
                in_call_interval=keepalive.in_call_interval,
                misses=keepalive.misses,
            )
        )
        self.endpoint = endpoint
        self.local = local
        self.ids = ids
        self.failures = 0
        self.detection = Histogram.with_bounds(DETECTION_BUCKETS)
        self._targets: dict[str, _Target] = {}  # endpoint id → where probes go
        self._by_flow: dict[FlowKey, set[str]] = {}
        self._probes: dict[int, tuple[str, int]] = {}  # OPTIONS transaction → (endpoint, probe)
        self._in_call: dict[str, int] = {}  # endpoint id → calls it is in
        self._events: deque[LivenessEvent] = deque()

    # --- what is watched ------------------------------------------------------------------------
    def watch_binding(self, binding: Binding, now: float) -> None:
        mode = Mode.KEEPALIVE if binding.outbound else Mode.PROBE
        flow = self.local.complete(binding.next_hop())
        self._forget_flow(binding.endpoint_id)
        # Signs of life arrive over the flow it registered on, probes go to its next hop.
        key = _flow_key(binding.flow)
        self._targets[binding.endpoint_id] = _Target(binding.request_uri, flow, key)
        self._by_flow.setdefault(key, set()).add(binding.endpoint_id)
        self.monitor.add(binding.endpoint_id, EndpointKind.CONTACT, flow, mode, now)

    def watch_static(self, contact: StaticContact, flow: Flow, now: float) -> None:
        """Probe `contact` at `flow`; again with a new flow when its host name moves."""
        key = _flow_key(flow)
        self._forget_flow(contact.endpoint_id)
        self._targets[contact.endpoint_id] = _Target(contact.uri, flow, key)
        self._by_flow.setdefault(key, set()).add(contact.endpoint_id)
        self.monitor.add(contact.endpoint_id, EndpointKind.STATIC, flow, Mode.PROBE, now)

    def registrar_event(self, event: RegistrarEvent, now: float) -> None:
        if isinstance(event, BindingAdded | BindingRefreshed):
            self.watch_binding(event.binding, now)
        elif isinstance(event, BindingRemoved):
            endpoint_id = event.binding.endpoint_id
            if endpoint_id in self._in_call:
                # A phone that de-registers or re-registers as a new instance mid-call was reset
                # by its user; an expired registration means it is gone. Either way: DOWN now.
                if event.reason == "expired":
                    self.monitor.registration_expired(endpoint_id, now)
                else:
                    self.monitor.reset(endpoint_id, now)
                self._drain(now)
            self._forget(endpoint_id)

    def unwatch(self, endpoint_id: str) -> None:
        """Stop watching (a static contact whose host name lost its address)."""
        self._forget(endpoint_id)

    def _forget(self, endpoint_id: str) -> None:
        self.monitor.remove(endpoint_id)
        self._forget_flow(endpoint_id)
        self._targets.pop(endpoint_id, None)

    def _forget_flow(self, endpoint_id: str) -> None:
        target = self._targets.get(endpoint_id)
        if target is None:
            return
        ids = self._by_flow.get(target.key)
        if ids is not None:
            ids.discard(endpoint_id)
            if not ids:
                del self._by_flow[target.key]

    def target(self, endpoint_id: str) -> tuple[URI, Flow] | None:
        """Where a watched endpoint is reached now: its contact URI and next-hop flow."""
        target = self._targets.get(endpoint_id)
        return (target.uri, target.flow) if target is not None else None

    # --- signs of life and failures ---------------------------------------------------------------
    def heard_from(self, flow: Flow, now: float) -> None:
        """Anything arrived over `flow` (a keep-alive, a request, a response): O(1)."""
        ids = self._by_flow.get(_flow_key(flow))
        if ids:
            for endpoint_id in ids:
                self.monitor.sign_of_life(endpoint_id, now)
            self._drain(now)

    def connection_closed(self, flow: Flow, now: float) -> None:
        ids = self._by_flow.get(_flow_key(flow))
        for endpoint_id in list(ids or ()):
            self.monitor.connection_lost(endpoint_id, now)
        self._drain(now)

    def reset(self, endpoint_id: str, now: float) -> None:
        """Someone reset the endpoint (the reboot API): DOWN now, whatever it last said."""
        self.monitor.reset(endpoint_id, now)
        self._drain(now)

    # --- calls the endpoints are in ---------------------------------------------------------------
    def call_started_on(self, endpoint_id: str | None, now: float) -> None:
        if endpoint_id is None:
            return
        self._in_call[endpoint_id] = self._in_call.get(endpoint_id, 0) + 1
        self.set_in_call(endpoint_id, True, now)

    def call_ended_on(self, endpoint_id: str, now: float) -> None:
        count = self._in_call.get(endpoint_id, 0) - 1
        if count > 0:
            self._in_call[endpoint_id] = count
            return
        self._in_call.pop(endpoint_id, None)
        self.set_in_call(endpoint_id, False, now)

    def registered_again(self, endpoint_id: str, now: float) -> None:
        """A binding was added or refreshed: the monitor's new entry for it is in its calls."""
        if endpoint_id in self._in_call:
            self.set_in_call(endpoint_id, True, now)

    def set_in_call(self, endpoint_id: str | None, in_call: bool, now: float) -> None:
        if endpoint_id is not None:
            self.monitor.set_in_call(endpoint_id, in_call, now)
            self._drain(now)

    # --- probes ----------------------------------------------------------------------------------
    def probe_response(self, transaction_id: int, now: float) -> bool:
        probe = self._probes.pop(transaction_id, None)
        if probe is None:
            return False
        self.monitor.probe_answered(probe[0], now)
        self._drain(now)
        return True

    def probe_transport_failed(self, transaction_id: int, now: float) -> bool:
        probe = self._probes.get(transaction_id)
        if probe is None:
            return False
        self.monitor.probe_failed(probe[0], probe[1], now)
        self._drain(now)
        return True

    def probe_finished(self, transaction_id: int) -> None:
        self._probes.pop(transaction_id, None)

    def _send_probe(self, command: SendProbe, now: float) -> None:
        target = self._targets.get(command.endpoint_id)
        if target is None:
            return
        flow = command.flow
        headers = Headers()
        via = self.local.via(flow).with_params(branch=MAGIC_COOKIE + self.ids())
        headers.add("Via", str(via))
        headers.add("Max-Forwards", "70")
        sent_by = self.local.sent_by(flow)
        headers.add(
            "From",
            str(
                Address(URI("sip", user="callkeeper", host=sent_by[0], port=sent_by[1])).with_tag(
                    self.ids()
                )
            ),
        )
        headers.add("To", str(Address(target.uri)))
        headers.add("Call-ID", f"{self.ids()}-probe@callkeeper")
        headers.add("CSeq", "1 OPTIONS")
        transaction_id = self.endpoint.send_request(
            Request("OPTIONS", target.uri, headers), flow, now
        )
        self._probes[transaction_id] = (command.endpoint_id, command.probe_id)

    # --- the monitor's clock and outputs ---------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        self.monitor.handle_timer(now)
        self._drain(now)

    def get_timer(self) -> float | None:
        return self.monitor.get_timer()

    def _drain(self, now: float) -> None:
        monitor = self.monitor
        while (event := monitor.next_event()) is not None:
            if isinstance(event, EndpointDown):
                self.failures += 1
                self.detection.observe(event.detection_latency)
            self._events.append(event)
        while (command := monitor.next_command()) is not None:
            self._send_probe(command, now)

    def next_event(self) -> LivenessEvent | None:
        return self._events.popleft() if self._events else None


def _flow_key(flow: Flow) -> FlowKey:
    # The local address is left out: the same phone is the same phone on any of our sockets.
    return (flow.transport, flow.remote, flow.connection)
