"""What happened to registrations: events for the liveness monitor, the API and the logs.

The liveness monitor is the main reader: `BindingAdded` starts watching an endpoint,
`BindingRemoved` stops it — and a removal whose reason is `"unregistered"` or `"replaced"` while
the endpoint is in a call means the phone was reset or handed the call back (DESIGN.md: "DOWN
... the endpoint de-registered / pressed reset"). `"replaced"` is a REGISTER for the same binding
(same instance and reg-id, or the same Contact URI) with a new Call-ID: RFC 3261 §10.2 has a UA
keep its Call-ID for a whole boot cycle, so a new one means the phone restarted. Phones that
break that SHOULD exist; `Binding.instance` tells a reader how much to trust the signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from callkeeper.directory.bindings import Binding

RemovalReason = Literal["expired", "unregistered", "replaced", "evicted"]


@dataclass(frozen=True, slots=True)
class BindingAdded:
    """A new binding. `replaced` is the one it took over from (a rebooted phone), if any;
    `restored` marks bindings rebuilt from the store after a restart."""

    binding: Binding
    at: float
    replaced: Binding | None = None
    restored: bool = False


@dataclass(frozen=True, slots=True)
class BindingRefreshed:
    """A re-REGISTER of a binding (same Call-ID, higher CSeq). Compare `previous.flow` with
    `binding.flow` to see a NAT rebinding or a new connection."""

    binding: Binding
    previous: Binding
    at: float


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """A binding is gone: it `expired`, was `unregistered` (expires=0 or `*`), was `replaced`
    by a re-registration with a new Call-ID, or was `evicted` to make room under the per-user
    contact limit."""

    binding: Binding
    reason: RemovalReason
    at: float


RegistrarEvent = BindingAdded | BindingRefreshed | BindingRemoved
