"""JSON views of calls and endpoints, exactly as DESIGN.md's HTTP API names them.

Times in the core are on the driver's monotonic clock; `wall` converts them to Unix time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from callkeeper.calls.model import Call, Leg
from callkeeper.directory import Binding, StaticContact

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
