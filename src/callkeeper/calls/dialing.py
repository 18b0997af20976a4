"""Requests callkeeper originates outside any dialog: a new leg's INVITE, the reboot NOTIFY.

Both the B2BUA (forking a call to the callee's contacts) and the recovery engine (ringing the
returning phone, another device, a mobile through a trunk) start legs the same way, so the
INVITE is built in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from callkeeper.calls.locals import LocalAddresses
from callkeeper.sip.address import Address
from callkeeper.sip.capabilities import ALLOW, SUPPORTED
from callkeeper.sip.dialog import Dialog
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import Request, new_cseq
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI
from callkeeper.sip.via import MAGIC_COOKIE

# Asks a phone to answer at once (the de-facto headers of Polycom/Yealink/Snom/baresip and
# RFC 7462's Alert-Info URN); used when re-attaching a call to the device that just lost it.
AUTO_ANSWER_HEADERS = (
    ("Call-Info", "<sip:callkeeper>;answer-after=0"),
    ("Alert-Info", "<http://localhost>;info=alert-autoanswer"),
)


# An IVR node names its session in its 2xx; a call moved to another node carries it in the
# INVITE, so that node resumes the session from its checkpoint instead of starting over.
SESSION_HEADER = "X-Callkeeper-Session"


def answering_dialog(local: LocalAddresses, ids: IdSource, request: Request, flow: Flow) -> Dialog:
    """The dialog a request received over `flow` creates with us as its UAS: our Contact for
    that flow, and `sips` only over TLS. Raises DialogError as `Dialog.create_uas` does."""
    return Dialog.create_uas(
        request, ids, local_contact=local.contact(flow), over_tls=flow.transport == "tls"
    )


def new_call_id(ids: IdSource) -> str:
    return f"{ids()}-{ids()}@callkeeper"


def build_invite(
    local: LocalAddresses,
    ids: IdSource,
    *,
    uri: URI,
    flow: Flow,
    from_address: Address,
    to_uri: URI,
    call_id: str,
    user_agent: str,
    body: bytes = b"",
    content_type: str = "application/sdp",
    max_forwards: int = 70,
    headers: Iterable[tuple[str, str]] = (),
) -> Request:
    """An initial INVITE for a new UAC leg; `from_address` carries our local tag already."""
    out = Headers()
    via = local.via(flow).with_params(branch=MAGIC_COOKIE + ids())
    via_text = str(via)
    out.add("Via", via_text)
    out.add("Max-Forwards", str(max_forwards))
    out.add("From", str(from_address))
    out.add("To", str(Address(to_uri)))
    out.add("Call-ID", call_id)
    out.add("CSeq", _INVITE_CSEQ_TEXT)
    out.add("Contact", str(local.contact(flow)))
    out.add("Allow", ALLOW)
    out.add("Supported", SUPPORTED)
    out.add("User-Agent", user_agent)
    for name, value in headers:
        out.add(name, value)
    if body:
        out.add("Content-Type", content_type)
    invite = Request("INVITE", uri, out, body)
    invite.remember_view("top-via", via_text, via)
    invite.remember_view("cseq", _INVITE_CSEQ_TEXT, _INVITE_CSEQ)
    return invite


_INVITE_CSEQ_TEXT = "1 INVITE"
_INVITE_CSEQ = new_cseq(1, "INVITE")


def retarget_invite(local: LocalAddresses, ids: IdSource, invite: Request, flow: Flow) -> Request:
    """`invite` for the next address of its host (RFC 3263 §4.3): "identical to the previous,
    but [with] a different value of the Via branch ID", so a new client transaction. Call-ID,
    tags, CSeq and Request-URI stay: the next server is the same logical destination."""
    headers = invite.headers.copy()
    via = local.via(flow).with_params(branch=MAGIC_COOKIE + ids())
    via_text = str(via)
    headers.set("Via", via_text)
    retry = Request("INVITE", invite.uri, headers, invite.body)
    retry.remember_view("top-via", via_text, via)
    return retry


def build_reboot_notify(
    local: LocalAddresses, ids: IdSource, *, uri: URI, flow: Flow, user_agent: str
) -> Request:
    """`NOTIFY Event: check-sync;reboot=true` (the de-facto resync request of Polycom, Cisco,
    Yealink, Snom and Asterisk's `pjsip send notify`): out of dialog, to the phone's contact."""
    return build_notify(
        local, ids, uri=uri, flow=flow, user_agent=user_agent, event="check-sync;reboot=true"
    )


def build_notify(
    local: LocalAddresses,
    ids: IdSource,
    *,
    uri: URI,
    flow: Flow,
    user_agent: str,
    event: str,
    body: bytes = b"",
    content_type: str = "",
    to_uri: URI | None = None,
) -> Request:
    """An out-of-dialog NOTIFY (an unsolicited one: the phone never subscribed)."""
    out = Headers()
    via = local.via(flow).with_params(branch=MAGIC_COOKIE + ids())
    out.add("Via", str(via))
    out.add("Max-Forwards", "70")
    host, port = local.sent_by(flow)
    host = f"[{host}]" if ":" in host else host
    out.add(
        "From", str(Address(URI("sip", user="callkeeper", host=host, port=port)).with_tag(ids()))
    )
    out.add("To", str(Address(to_uri or uri)))
    out.add("Call-ID", f"{ids()}-notify@callkeeper")
    out.add("CSeq", "1 NOTIFY")
    out.add("Contact", str(local.contact(flow)))
    out.add("Event", event)
    out.add("Subscription-State", "terminated;reason=noresource")
    out.add("User-Agent", user_agent)
    if body:
        out.add("Content-Type", content_type)
    return Request("NOTIFY", uri, out, body)
