"""Core events as named, JSON-ready records: for `GET /api/v1/events` (SSE) and the log.

Names are `call.*`, `registration.*` and `endpoint.*`; times are on the core's monotonic clock
and converted to Unix time by the caller where a client will read them.
"""

from __future__ import annotations

from typing import Any

from callkeeper.calls.events import (
    CallAnswered,
    CallEnded,
    CallHeld,
    CallLost,
    CallRecovered,
    CallResuming,
    CallStarted,
    CallTransferring,
    RebootRequested,
)
from callkeeper.directory import BindingAdded, BindingRefreshed, BindingRemoved
from callkeeper.liveness import EndpointAlive, EndpointDown, EndpointSuspect


def describe_event(event: object) -> tuple[str, dict[str, Any]]:
    """(event name, fields) for any event the core emits; `at` is when it happened."""
    name, fields = _describe(event)
    at = getattr(event, "at", None)
    if at is not None:
        fields["at"] = at
    return name, fields


def _describe(event: object) -> tuple[str, dict[str, Any]]:
    recovery = _describe_recovery(event)
    if recovery is not None:
        return recovery
    if isinstance(event, CallStarted):
        return "call.started", {
            "call": event.call_id,
            "caller": event.caller,
            "callee": event.callee,
        }
    if isinstance(event, CallAnswered):
        return "call.answered", {"call": event.call_id, "endpoint": event.endpoint}
    if isinstance(event, CallEnded):
        return "call.ended", {
            "call": event.call_id,
            "reason": event.reason,
            "answered": event.answered,
        }
    if isinstance(event, BindingAdded):
        binding = event.binding
        fields = {
            "endpoint": binding.endpoint_id,
            "user": binding.user,
            "contact": binding.uri,
            "transport": binding.transport,
            "restored": event.restored,
        }
        return "registration.added", fields
    if isinstance(event, BindingRefreshed):
        return "registration.refreshed", {
            "endpoint": event.binding.endpoint_id,
            "user": event.binding.user,
        }
    if isinstance(event, BindingRemoved):
        binding = event.binding
        return "registration.removed", {
            "endpoint": binding.endpoint_id,
            "user": binding.user,
            "reason": event.reason,
        }
    if isinstance(event, EndpointDown):
        return "endpoint.down", {
            "endpoint": event.endpoint_id,
            "kind": event.kind.value,
            "reason": event.reason,
            "detection_seconds": round(event.detection_latency, 3),
        }
    if isinstance(event, EndpointSuspect):
        return "endpoint.suspect", {
            "endpoint": event.endpoint_id,
            "kind": event.kind.value,
            "reason": event.reason,
        }
    if isinstance(event, EndpointAlive):
        return "endpoint.alive", {
            "endpoint": event.endpoint_id,
            "kind": event.kind.value,
            "was": event.was.value,
        }
    return type(event).__name__, {}


def _describe_recovery(event: object) -> tuple[str, dict[str, Any]] | None:
    if isinstance(event, CallHeld):
        return "call.held", {
            "call": event.call_id,
            "endpoint": event.endpoint,
            "reason": event.reason,
        }
    if isinstance(event, CallResuming):
        return "call.resuming", {
            "call": event.call_id,
            "endpoint": event.endpoint,
            "held_seconds": round(event.held_seconds, 3),
        }
    if isinstance(event, CallTransferring):
        return "call.transferring", {
            "call": event.call_id,
            "step": event.step,
            "targets": list(event.targets),
        }
    if isinstance(event, CallRecovered):
        name = "call.resumed" if event.outcome == "resumed" else "call.transferred"
        fields: dict[str, Any] = {
            "call": event.call_id,
            "outcome": event.outcome,
            "endpoint": event.endpoint,
            "new_dialog": event.new_dialog,
            "recovery_seconds": round(event.recovery_seconds, 3),
        }
        if event.resume_seconds is not None:
            fields["resume_seconds"] = round(event.resume_seconds, 4)
        return name, fields
    if isinstance(event, CallLost):
        return "call.lost", {"call": event.call_id, "reason": event.reason}
    if isinstance(event, RebootRequested):
        return "endpoint.reboot_requested", {"endpoint": event.endpoint}
    return None
