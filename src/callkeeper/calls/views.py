"""JSON views of calls and endpoints, exactly as DESIGN.md's HTTP API names them.

One job: what the API shows. A call with its legs and, while one runs, its recovery; an
endpoint (registered or static) with the liveness monitor's state and the calls it is in.
Times in the core are on the driver's monotonic clock; `wall` converts them to Unix time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from callkeeper.calls.model import Call, Leg, LegState
from callkeeper.directory import Binding, StaticContact

if TYPE_CHECKING:
    from callkeeper.calls.manager import CallManager

Wall = Callable[[float], float]


def leg_view(leg: Leg, role: str) -> dict[str, Any]:
    view = {
        "user": leg.user,
        "endpoint": leg.endpoint,
        "state": leg.state.value,
        "role": role,
    }
    if leg.session is not None:
        view["session"] = leg.session  # an IVR node's session: see `ivr` in the API
    return view


def call_view(call: Call, wall: Wall) -> dict[str, Any]:
    legs = [call.a] + (
        [call.b] if call.b is not None else [f for f in call.forks if f.state.value != "terminated"]
    )
    return {
        "id": call.id,
        "state": call.state.value,
        "legs": [leg_view(leg, "caller" if leg is call.a else "callee") for leg in legs],
        "created": wall(call.created),
        "answered": wall(call.answered) if call.answered is not None else None,
        "recoveries": call.recoveries,
        "callee": call.callee,
    }


def binding_view(binding: Binding, state: str, calls: list[str], wall: Wall) -> dict[str, Any]:
    return {
        "id": binding.endpoint_id,
        "user": binding.user,
        "contact": binding.uri,
        "transport": binding.transport,
        "state": state,
        "last_seen": wall(binding.updated_at),
        "calls": calls,
        "source": f"{binding.remote_host}:{binding.remote_port}",
        "user_agent": binding.user_agent,
        "expires": wall(binding.expires_at),
    }


def static_view(
    contact: StaticContact, state: str, last_seen: float | None, calls: list[str], wall: Wall
) -> dict[str, Any]:
    return {
        "id": contact.endpoint_id,
        "user": contact.user,
        "contact": str(contact.uri),
        "transport": contact.uri.transport,
        "state": state,
        "last_seen": wall(last_seen) if last_seen is not None else None,
        "calls": calls,
        "static": True,
    }


def calls_view(core: CallManager, wall: Wall) -> list[dict[str, Any]]:
    return [call_with_recovery_view(core, call, wall) for call in core.b2bua.calls.values()]


def call_by_id_view(core: CallManager, call_id: str, wall: Wall) -> dict[str, Any] | None:
    call = core.b2bua.calls.get(call_id)
    return call_with_recovery_view(core, call, wall) if call is not None else None


def call_with_recovery_view(core: CallManager, call: Call, wall: Wall) -> dict[str, Any]:
    view = call_view(call, wall)
    recovery = core.recovery.recoveries.get(call.id)
    if recovery is not None:
        view["recovery"] = {
            "failed_endpoint": recovery.failed.endpoint,
            "reason": recovery.reason,
            "since": wall(recovery.started),
            "step": recovery.step or None,
            "grace_until": wall(recovery.grace_deadline),
        }
    return view


def endpoints_view(
    core: CallManager, now: float, wall: Wall, user: str | None, state: str | None
) -> list[dict[str, Any]]:
    """Registered and static contacts, with the liveness monitor's state and last sign of
    life; only `user`'s, only those in `state`, when given."""
    calls = _calls_by_endpoint(core)
    monitor = core.watch.monitor
    views = []
    for binding in core.registrar.all_bindings():
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
    for static in core.directory.all_static_contacts():
        if user is not None and static.user != user:
            continue
        seen = monitor.view(static.endpoint_id)
        # Unwatched: its host name has no address (yet), so nothing can reach it.
        endpoint_state = seen.state.value if seen is not None else "down"
        if state is not None and endpoint_state != state:
            continue
        last_seen = seen.last_seen if seen is not None else None
        views.append(
            static_view(static, endpoint_state, last_seen, calls.get(static.endpoint_id, []), wall)
        )
    return views


def _calls_by_endpoint(core: CallManager) -> dict[str, list[str]]:
    by_endpoint: dict[str, list[str]] = {}
    for call in core.b2bua.calls.values():
        for leg in call.legs():
            if leg.endpoint is not None and leg.state is not LegState.TERMINATED:
                by_endpoint.setdefault(leg.endpoint, []).append(call.id)
    return by_endpoint
