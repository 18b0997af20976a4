"""What this server supports, and the answers that follow from it (RFC 3261 §8.2.1–§8.2.2, §11).

One place decides the Allow / Supported / Accept / Allow-Events lists, so OPTIONS, 405 and 420
responses can never disagree with each other.
"""

from __future__ import annotations

from callkeeper.sip.message import Request, Response

# Methods the call manager handles (the registrar and B2BUA implement them).
ALLOWED_METHODS = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "PRACK",
    "MESSAGE",
)
# Methods defined by some RFC that we deliberately do not serve: 405 rather than 501.
KNOWN_UNSUPPORTED_METHODS = frozenset({"PUBLISH"})
SUPPORTED_EXTENSIONS = ("outbound", "path", "timer", "replaces", "norefersub")
ACCEPTED_BODIES = ("application/sdp", "application/dtmf-relay", "message/sipfrag")
# Event packages a SUBSCRIBE may ask for (RFC 6665 §8.2.2): voicemail counts (RFC 3842).
EVENT_PACKAGES = ("message-summary",)

ALLOW = ", ".join(ALLOWED_METHODS)
SUPPORTED = ", ".join(SUPPORTED_EXTENSIONS)
ACCEPT = ", ".join(ACCEPTED_BODIES)
ALLOW_EVENTS = ", ".join(EVENT_PACKAGES)


def method_response(request: Request, to_tag: str) -> Response | None:
    """405 or 501 for a method we do not serve; None when the method is fine."""
    if request.method in ALLOWED_METHODS:
        return None
    if request.method in KNOWN_UNSUPPORTED_METHODS:
        response = request.create_response(405, to_tag=to_tag)
        response.headers.add("Allow", ALLOW)
        return response
    response = request.create_response(501, to_tag=to_tag)
    response.headers.add("Allow", ALLOW)
    return response


def unsupported_extensions(request: Request) -> list[str]:
    """Option tags in Require (and Proxy-Require: we are the UAS) that we do not support."""
    if request.method in ("ACK", "CANCEL"):
        return []  # §8.2.2.3: never reject these for Require
    required = request.headers.get_list("require") + request.headers.get_list("proxy-require")
    return [tag for tag in required if tag.lower() not in SUPPORTED_EXTENSIONS]


def extension_response(request: Request, to_tag: str) -> Response | None:
    """420 Bad Extension listing what we do not support; None when everything is supported."""
    missing = unsupported_extensions(request)
    if not missing:
        return None
    response = request.create_response(420, to_tag=to_tag)
    response.headers.add("Unsupported", ", ".join(missing))
    return response


def options_response(request: Request, to_tag: str, user_agent: str) -> Response:
    """200 to an out-of-dialog OPTIONS, advertising our capabilities (§11.2)."""
    response = request.create_response(200, to_tag=to_tag)
    headers = response.headers
    headers.add("Allow", ALLOW)
    headers.add("Accept", ACCEPT)
    headers.add("Supported", SUPPORTED)
    headers.add("Allow-Events", ALLOW_EVENTS)
    headers.add("Server", user_agent)
    return response
