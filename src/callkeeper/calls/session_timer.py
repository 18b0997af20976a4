"""RFC 4028 session timers, per leg: what was negotiated and when to act.

A call whose far end vanished without a BYE would otherwise stay up forever. Each leg of a call
negotiates its own session interval: on the A leg we are the UAS (we honour the caller's
Session-Expires and say who refreshes), on the B leg the UAC (we offer the caller's interval and
accept the callee's choice). When we are the refresher we send an UPDATE (or a re-INVITE with the
same SDP) at half the interval; when the peer is, a leg that has seen no refresh by
`interval - min(32, interval / 3)` is dead and the call ends with BYEs (§10).
"""

from __future__ import annotations

from dataclasses import dataclass

from callkeeper.sip.message import Message, Request

MIN_SE = 90  # RFC 4028 §5: the smallest interval anyone may ask for


@dataclass(slots=True)
class SessionTimer:
    interval: float
    we_refresh: bool

    def refresh_after(self) -> float:
        return self.interval / 2

    def expire_after(self) -> float:
        return self.interval - min(32.0, self.interval / 3)


def parse_session_expires(message: Message) -> tuple[int, str | None] | None:
    """(delta-seconds, refresher or None) from Session-Expires; None when absent or garbled."""
    value = message.headers.get("session-expires")
    if value is None:
        return None
    delta_text, *params = (part.strip() for part in value.split(";"))
    if not delta_text.isdigit():
        return None
    refresher = None
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "refresher" and param_value.strip().lower() in ("uac", "uas"):
            refresher = param_value.strip().lower()
    return int(delta_text), refresher


def min_se(message: Message) -> int:
    value = (message.headers.get("min-se") or "").split(";")[0].strip()
    return max(MIN_SE, int(value)) if value.isdigit() else MIN_SE


def supports_timer(message: Message) -> bool:
    tags = message.headers.get_list("supported") + message.headers.get_list("require")
    return any(tag.lower() == "timer" for tag in tags)


def too_small(invite: Request) -> bool:
    """An interval below our minimum: answer 422 with Min-SE (§6)."""
    asked = parse_session_expires(invite)
    return asked is not None and asked[0] < MIN_SE


def negotiate_as_uas(invite: Request) -> tuple[SessionTimer, str] | None:
    """The A leg's timer and the Session-Expires value for our 2xx; None without a request."""
    asked = parse_session_expires(invite)
    if asked is None:
        return None
    interval, refresher = asked
    if refresher is None:
        refresher = "uac" if supports_timer(invite) else "uas"
    return SessionTimer(
        float(interval), we_refresh=refresher == "uas"
    ), f"{interval};refresher={refresher}"


def negotiate_as_uac(response: Message) -> SessionTimer | None:
    """The B leg's timer from the callee's 2xx (we are its UAC): None when it declined."""
    answered = parse_session_expires(response)
    if answered is None:
        return None
    interval, refresher = answered
    return SessionTimer(float(interval), we_refresh=refresher != "uas")
