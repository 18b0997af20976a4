"""Read a REGISTER into what it asks for, or the error response it deserves.

This is RFC 3261 §10.3 steps 6 (Contact and expiry checks) plus the RFC 5626 §6 outbound rules,
done before anything in the bindings table is touched: the registrar then applies a validated
`RegisterPlan` all at once, which is how §10.3's "all binding updates or none" falls out.

Expiry (§10.2.1.1, §10.3 step 6): a Contact's `expires` parameter, else the Expires header, else
the default; a malformed value counts as the default (§20.19 says "as 3600", our default) and a
huge one as 2**32-1. A non-zero interval below `min_expires` is refused with 423 and
Min-Expires; one above `max_expires` is shortened.

Outbound (RFC 5626 §6): a Contact with both `+sip.instance` and `reg-id`, in a REGISTER whose
Supported (or Require) lists `outbound`, gets outbound processing: its binding is keyed by
(instance, reg-id), its flow becomes mandatory for requests to it, and the 200 carries
`Require: outbound` and `Flow-Timer`. A `reg-id` without an instance, or without the option tag,
is ignored. A registration that did not come straight from the phone (more than one Via) must
have passed an edge proxy that supports outbound (`ob` in its Path URI), else 439. A REGISTER
that registers an outbound flow may carry no other Contact (one flow per registration), else 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from callkeeper.directory.bindings import instance_key, uri_key
from callkeeper.directory.settings import RegistrarSettings
from callkeeper.sip.address import Address, parse_address
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.uri import URI

MAX_DELTA_SECONDS = 2**32 - 1
_MAX_REG_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    """One Contact of a REGISTER: which binding it names and what to do with it."""

    key: str
    uri: URI
    contact: str  # the Contact value without its `expires` parameter
    expires: int  # seconds; 0 removes the binding
    instance: str | None = None
    reg_id: int | None = None  # set only when outbound processing applies
    q: float = 1.0

    @property
    def outbound(self) -> bool:
        return self.reg_id is not None


@dataclass(frozen=True, slots=True)
class RegisterPlan:
    """A REGISTER that passed every check: a query (no contacts), `*`, or contact updates."""

    call_id: str
    cseq: int
    updates: tuple[ContactUpdate, ...] = ()
    wildcard: bool = False
    outbound: bool = False  # answer with Require: outbound and Flow-Timer
    path: tuple[str, ...] = ()
    echo_path: bool = False  # the UA said Supported: path, so the 200 repeats Path (RFC 3327)
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Rejection:
    """An error response to a REGISTER, with any header it needs (Min-Expires for 423)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = field(default=())

    def response(self, request: Request, to_tag: str | None) -> Response:
        response = request.create_response(self.status, self.reason, to_tag=to_tag)
        for name, value in self.headers:
            response.headers.add(name, value)
        return response


def delta_seconds(text: str | None) -> int | None:
    """An expires value (RFC 3261 delta-seconds); None when absent or malformed."""
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    if len(text) > 10:  # bounded before int(): anything this long is past 2**32-1 anyway
        return MAX_DELTA_SECONDS
    return min(int(text), MAX_DELTA_SECONDS)


def option_tags(request: Request, *names: str) -> frozenset[str]:
    """The option tags listed in the given headers (Supported, Require ...), lower case."""
    return frozenset(
        tag.strip().lower() for name in names for tag in request.headers.get_list(name)
    )


def read_register(request: Request, settings: RegistrarSettings) -> RegisterPlan | Rejection:
    """Check a REGISTER (see the module docstring); never raises for bad input."""
    try:
        return _read(request, settings)
    except ParseError as error:
        return Rejection(400, _reason(error.reason))


def _reason(text: str) -> str:
    # A reason phrase may not hold CR/LF; parse errors quote the input, so keep them short.
    return "Bad Request: " + "".join(ch if ch.isprintable() else "?" for ch in text[:80])


def _read(request: Request, settings: RegistrarSettings) -> RegisterPlan | Rejection:
    call_id = request.call_id
    cseq = request.cseq.number
    header_expires = delta_seconds(request.headers.get("expires"))
    user_agent = (request.headers.get("user-agent") or "")[:200]
    values = request.headers.get_list("contact")
    if "*" in values:
        # §10.3 step 6: `*` only alone and only with Expires: 0.
        if len(values) != 1 or header_expires != 0:
            return Rejection(400, "Bad Request: Contact * needs Expires: 0 and no other Contact")
        return RegisterPlan(call_id, cseq, wildcard=True, user_agent=user_agent)
    supported = option_tags(request, "supported", "require")
    wants_outbound = "outbound" in supported
    default = header_expires if header_expires is not None else settings.default_expires
    updates: dict[str, ContactUpdate] = {}
    for address in request.contacts:
        update = _contact_update(address, default, wants_outbound)
        if isinstance(update, Rejection):
            return update
        if 0 < update.expires < settings.min_expires:
            return Rejection(
                423, "Interval Too Brief", (("Min-Expires", str(settings.min_expires)),)
            )
        if update.expires > settings.max_expires:
            update = replace(update, expires=settings.max_expires)
        updates.pop(update.key, None)  # the same binding twice: the last one counts
        updates[update.key] = update
    outbound = any(update.outbound for update in updates.values())
    path = tuple(request.headers.get_list("path"))
    if outbound:
        if len(values) > 1 and any(u.outbound and u.expires for u in updates.values()):
            return Rejection(400, "Bad Request: an outbound flow is registered on its own")
        if len(request.headers.get_list("via")) > 1 and not (
            path and parse_address(path[0]).uri.has_param("ob")
        ):
            return Rejection(439, "First Hop Lacks Outbound Support")
    return RegisterPlan(
        call_id,
        cseq,
        tuple(updates.values()),
        outbound=outbound,
        path=path,
        echo_path=bool(path) and "path" in option_tags(request, "supported"),
        user_agent=user_agent,
    )


def _contact_update(
    address: Address, default: int, wants_outbound: bool
) -> ContactUpdate | Rejection:
    uri = address.uri
    if not uri.is_sip:
        return Rejection(400, "Bad Request: Contact must be a sip: or sips: URI")
    expires = delta_seconds(address.param("expires"))
    if expires is None:
        expires = default
    q = _qvalue(address.param("q"))
    if q is None:
        return Rejection(400, "Bad Request: bad q value in Contact")
    instance = address.param("+sip.instance")
    reg_id: int | None = None
    if instance is not None and wants_outbound and address.has_param("reg-id"):
        reg_id = _reg_id(address.param("reg-id"))
        if reg_id is None:
            return Rejection(400, "Bad Request: bad reg-id in Contact")
    if instance:
        key = instance_key(instance, reg_id)
    else:
        instance = None
        key = uri_key(uri)
    if address.has_param("expires"):
        address = address.replace(
            params=tuple(p for p in address.params if p[0].lower() != "expires")
        )
    return ContactUpdate(key, uri, str(address), expires, instance, reg_id, q)


def _qvalue(text: str | None) -> float | None:
    """RFC 3261 qvalue: "0" ["." 0*3DIGIT] or "1" ["." 0*3("0")]; absent means 1.0."""
    if text is None:
        return 1.0
    whole, _, fraction = text.partition(".")
    if whole not in ("0", "1") or len(fraction) > 3 or not (fraction.isdigit() or not fraction):
        return None
    value = float(text)
    return value if value <= 1.0 else None


def _reg_id(text: str | None) -> int | None:
    if text is None or not text.isdigit() or not text.isascii() or len(text) > 10:
        return None
    value = int(text)
    return value if 1 <= value <= _MAX_REG_ID else None
