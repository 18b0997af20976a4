"""The registrar (RFC 3261 §10.3, RFC 5626 §6): who is reachable where, and until when.

It is fed REGISTERs that `AuthPolicy` already authenticated (steps 1–5 of §10.3: domain, Require,
authentication, authorization, AOR — the call manager and the policy did those) and does the
rest: reads the Contacts (`register_request`), checks Call-ID/CSeq ordering against the stored
bindings (step 7: a binding may only be changed by a REGISTER of another Call-ID, or of the same
Call-ID with a higher CSeq — otherwise the whole request fails with 500 and nothing changes),
applies every update at once and answers 200 with all current bindings and their remaining
lifetimes (step 8).

Pure and cheap: `now` comes in; changes go out as events (`next_event`, for the liveness monitor
and the API) and persistence commands (`next_command`, for the store). Per REGISTER the work is
a few dict operations and one O(log n) timer-heap push, bounded by the per-user contact limit —
10,000 phones re-registering cost 10,000 times that, never a sweep. Expiry runs on a
`TimerHeap`: `get_timer()` says when the next binding runs out, `handle_timer(now)` removes the
ones that did.

Bindings live here, not in `Directory`: a SIGHUP reload builds a new `Directory` and leaves this
table alone, so no phone has to register again (and a restart gets them back via `restore`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import msgspec

from callkeeper.directory.bindings import Binding, behind_nat, uri_key
from callkeeper.directory.commands import DeleteBinding, RegistrarCommand, SaveBinding
from callkeeper.directory.events import (
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    RegistrarEvent,
    RemovalReason,
)
from callkeeper.directory.register_request import (
    ContactUpdate,
    RegisterPlan,
    Rejection,
    read_register,
)
from callkeeper.directory.settings import RegistrarSettings
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerHeap
from callkeeper.sip.transport import RELIABLE_TRANSPORTS, Flow

BindingId = tuple[str, str]  # (user, binding key)

_OUT_OF_ORDER = Rejection(500, "Server Internal Error: CSeq out of order for this Call-ID")


class Registrar:
    """The bindings table with its REGISTER processing and expiry (see the module docstring)."""

    def __init__(self, settings: RegistrarSettings | None = None) -> None:
        self.settings = settings or RegistrarSettings()
        self._users: dict[str, dict[str, Binding]] = {}
        self._by_flow: dict[Flow, dict[BindingId, None]] = {}
        self._timers: TimerHeap[BindingId] = TimerHeap()
        self._events: deque[RegistrarEvent] = deque()
        self._commands: deque[RegistrarCommand] = deque()

    # --- outputs --------------------------------------------------------------------------------
    def next_event(self) -> RegistrarEvent | None:
        return self._events.popleft() if self._events else None

    def next_command(self) -> RegistrarCommand | None:
        return self._commands.popleft() if self._commands else None

    def get_timer(self) -> float | None:
        """When the next binding expires (call `handle_timer` then), or None."""
        return self._timers.next_deadline()

    # --- inputs ---------------------------------------------------------------------------------
    def handle_register(
        self, request: Request, flow: Flow, user: str, now: float, *, to_tag: str | None = None
    ) -> Response:
        """Process an authenticated REGISTER for `user` that arrived over `flow`.

        Returns the response to send (200, or 400/423/439/500); the table changes only on 200.
        `to_tag` is the To tag of the response (RFC 3261 §8.2.6.2; the endpoint makes them).
        """
        if request.method != "REGISTER":
            raise ValueError(f"handle_register got a {request.method}")
        plan = read_register(request, self.settings)
        if isinstance(plan, Rejection):
            return plan.response(request, to_tag)
        current = self._users.get(user, {})
        if plan.wildcard:
            targets = list(current.values())
        else:
            found = [self._find(current, update) for update in plan.updates]
            targets = [binding for binding in found if binding is not None]
        if any(b.call_id == plan.call_id and b.cseq >= plan.cseq for b in targets):
            return _OUT_OF_ORDER.response(request, to_tag)
        if plan.wildcard:
            for binding in targets:
                self._remove(binding, "unregistered", now)
        else:
            for update, existing in zip(plan.updates, found, strict=True):
                self._apply(user, update, existing, plan, flow, now)
            self._enforce_limit(user, {u.key for u in plan.updates}, now)
        return self._ok(request, user, plan, now, to_tag)

    def handle_timer(self, now: float) -> None:
        """Remove every binding whose time is up."""
        for user, key in self._timers.pop_due(now):
            self._remove(self._users[user][key], "expired", now)  # a timer per linked binding

    def restore(self, bindings: Iterable[Binding], now: float) -> int:
        """Rebuild the table from stored bindings after a restart; returns how many came back.

        Expired ones are deleted from the store. Stream connections did not survive the restart,
        so their connection ids are dropped (`Binding.next_hop` then opens a new connection).
        Of several copies of one binding the most recently updated wins, and a binding already
        in the table (registered since the restart) beats any stored copy. Each restored binding
        is announced once with `BindingAdded(restored=True)`, so the liveness monitor starts
        watching it as if it had just registered.
        """
        newest: dict[BindingId, Binding] = {}
        for binding in bindings:
            if not binding.is_live(now):
                self._commands.append(DeleteBinding(binding.user, binding.key))
                continue
            ident = (binding.user, binding.key)
            seen = newest.get(ident)
            if seen is None or binding.updated_at > seen.updated_at:
                newest[ident] = binding
        restored = 0
        for (user, key), binding in newest.items():
            if self.binding(user, key) is not None:
                continue
            if binding.connection is not None and binding.transport in RELIABLE_TRANSPORTS:
                binding = msgspec.structs.replace(binding, connection=None)
            self._link(binding)
            self._events.append(BindingAdded(binding, now, restored=True))
            restored += 1
        return restored

    def connection_closed(self, flow: Flow) -> list[Binding]:
        """Forget the connection id of the bindings registered over a closed stream `flow`.

        The bindings stay (the phone may reconnect and refresh, and the liveness monitor decides
        what a closed connection means); requests to them stop aiming at a dead connection.
        Returns the updated bindings.
        """
        if flow.connection is None:
            return []
        changed = []
        for binding in self.bindings_by_flow(flow):
            self._unlink(binding)
            binding = msgspec.structs.replace(binding, connection=None)
            self._link(binding)
            changed.append(binding)
        return changed

    # --- queries --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._timers)

    def binding(self, user: str, key: str) -> Binding | None:
        return self._users.get(user, {}).get(key)

    def contacts_of(self, user: str, now: float) -> list[Binding]:
        """The user's live bindings, highest q first, then the most recently registered."""
        live = [b for b in self._users.get(user, {}).values() if b.is_live(now)]
        live.sort(key=lambda b: (-b.q, -b.registered_at))
        return live

    def bindings_by_flow(self, flow: Flow) -> list[Binding]:
        ids = self._by_flow.get(flow)
        if not ids:
            return []
        return [self._users[user][key] for user, key in ids]

    def binding_by_flow(self, flow: Flow) -> Binding | None:
        """The binding most recently linked to `flow` (a phone with several lines has several)."""
        ids = self._by_flow.get(flow)
        if not ids:
            return None
        user, key = next(reversed(ids))
        return self._users[user][key]

    def all_bindings(self) -> Iterator[Binding]:
        for bindings in self._users.values():
            yield from bindings.values()

    def users(self) -> list[str]:
        return list(self._users)

    # --- applying a plan ------------------------------------------------------------------------
    def _find(self, current: dict[str, Binding], update: ContactUpdate) -> Binding | None:
        binding = current.get(update.key)
        if binding is not None or update.expires or update.instance is not None:
            return binding
        # A de-registration without +sip.instance of a binding made with one: match it by
        # Contact URI, as RFC 3261 would (bounded by max_contacts).
        for candidate in current.values():
            if candidate.instance is not None and uri_key(candidate.request_uri) == update.key:
                return candidate
        return None

    def _apply(
        self,
        user: str,
        update: ContactUpdate,
        existing: Binding | None,
        plan: RegisterPlan,
        flow: Flow,
        now: float,
    ) -> None:
        if existing is not None and self.binding(user, existing.key) is not existing:
            existing = None  # already handled by another Contact of this same REGISTER
        if update.expires == 0:
            if existing is not None:
                self._remove(existing, "unregistered", now)
            return
        refresh = existing is not None and existing.call_id == plan.call_id
        binding = Binding(
            user=user,
            key=update.key,
            contact=update.contact,
            uri=str(update.uri),
            expires_at=now + update.expires,
            registered_at=existing.registered_at if existing is not None and refresh else now,
            updated_at=now,
            call_id=plan.call_id,
            cseq=plan.cseq,
            transport=flow.transport,
            remote_host=flow.remote[0],
            remote_port=flow.remote[1],
            local_host=flow.local[0],
            local_port=flow.local[1],
            connection=flow.connection,
            instance=update.instance,
            reg_id=update.reg_id,
            outbound=update.outbound,
            nat=behind_nat(update.uri, flow),
            q=update.q,
            user_agent=plan.user_agent,
            path=plan.path,
        )
        if existing is None:
            self._link(binding)
            self._events.append(BindingAdded(binding, now))
        else:
            self._unlink(existing)
            self._link(binding)
            if refresh:
                self._events.append(BindingRefreshed(binding, existing, now))
            else:
                self._events.append(BindingRemoved(existing, "replaced", now))
                self._events.append(BindingAdded(binding, now, replaced=existing))
        self._commands.append(SaveBinding(binding))

    def _enforce_limit(self, user: str, keep: set[str], now: float) -> None:
        bindings = self._users.get(user)
        if bindings is None or len(bindings) <= self.settings.max_contacts:
            return
        others = sorted(
            (b for b in bindings.values() if b.key not in keep),
            key=lambda b: (b.updated_at, b.registered_at),
        )
        for binding in others[: len(bindings) - self.settings.max_contacts]:
            self._remove(binding, "evicted", now)

    def _ok(
        self, request: Request, user: str, plan: RegisterPlan, now: float, to_tag: str | None
    ) -> Response:
        response = request.create_response(200, to_tag=to_tag)
        headers = response.headers
        for binding in self.contacts_of(user, now):
            headers.add("Contact", f"{binding.contact};expires={binding.remaining(now)}")
        if plan.outbound:
            headers.add("Require", "outbound")
            headers.add("Flow-Timer", str(self.settings.flow_timer))
        if plan.echo_path:
            for value in plan.path:
                headers.add("Path", value)
        return response

    # --- table maintenance ----------------------------------------------------------------------
    def _link(self, binding: Binding) -> None:
        ident = (binding.user, binding.key)
        self._users.setdefault(binding.user, {})[binding.key] = binding
        self._by_flow.setdefault(binding.flow, {})[ident] = None
        self._timers.schedule(binding.expires_at, ident)

    def _unlink(self, binding: Binding) -> None:
        # Only ever called for a binding that is in the table, so every index has it.
        ident = (binding.user, binding.key)
        bindings = self._users[binding.user]
        del bindings[binding.key]
        if not bindings:
            del self._users[binding.user]
        flow = binding.flow
        on_flow = self._by_flow[flow]
        del on_flow[ident]
        if not on_flow:
            del self._by_flow[flow]
        self._timers.cancel(ident)

    def _remove(self, binding: Binding, reason: RemovalReason, now: float) -> None:
        self._unlink(binding)
        self._events.append(BindingRemoved(binding, reason, now))
        self._commands.append(DeleteBinding(binding.user, binding.key))
