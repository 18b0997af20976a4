"""RFC 3261 §12 dialogs: creation (UAC/UAS, early/confirmed), CSeq rules, target refresh,
route sets (loose and strict), in-dialog requests, and the state table."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.sip.address import parse_address
from callkeeper.sip.dialog import (
    TRANSITIONS,
    Dialog,
    DialogError,
    DialogEvent,
    DialogId,
    DialogState,
    IdGenerator,
    Role,
    next_state,
)
from callkeeper.sip.message import MAX_CSEQ, Request, Response
from callkeeper.sip.parser import parse_message
from callkeeper.sip.uri import parse_uri
from callkeeper.sip.via import Via

VIA = Via("UDP", "192.0.2.10", 5060, (("rport", None),))


def ids(prefix: str = "id") -> IdGenerator:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def state(dialog: Dialog) -> DialogState:
    """The state, read through a call so mypy does not narrow it across mutations."""
    return dialog.state


def _parse(text: str) -> Request | Response:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request | Response)
    return message


def _req(text: str) -> Request:
    message = _parse(text)
    assert isinstance(message, Request)
    return message


def _resp(text: str) -> Response:
    message = _parse(text)
    assert isinstance(message, Response)
    return message


INVITE = """\
INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1
Max-Forwards: 70
From: "Alice" <sip:alice@example.com>;tag=alice-tag
To: <sip:bob@example.com>
Call-ID: call-1@192.0.2.10
CSeq: 10 INVITE
Contact: <sip:alice@192.0.2.10:5060>
Content-Length: 0

"""


def _response(
    status: int,
    *,
    to_tag: str | None = "bob-tag",
    contact: str | None = "<sip:bob@198.51.100.20:5062>",
    record_route: tuple[str, ...] = (),
    cseq: str = "10 INVITE",
    from_tag: str = "alice-tag",
    call_id: str = "call-1@192.0.2.10",
) -> Response:
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1",
        *(f"Record-Route: {value}" for value in record_route),
        f'From: "Alice" <sip:alice@example.com>;tag={from_tag}',
        "To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
        *([f"Contact: {contact}"] if contact else []),
        "Content-Length: 0",
        "",
        "",
    ]
    return _resp("\n".join(lines))


RR = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")  # as the callee's response shows it


def _uac(status: int = 200, **kw: object) -> Dialog:
    return Dialog.create_uac(_req(INVITE), _response(status, **kw), ids("br"))  # type: ignore[arg-type]


# --- the state table ----------------------------------------------------------------------------

E, C, T = DialogState.EARLY, DialogState.CONFIRMED, DialogState.TERMINATED
EXPECTED = {
    E: {"provisional": E, "success": C, "failure": T, "terminate": T},
    C: {"provisional": C, "success": C, "failure": C, "terminate": T},
    T: {"provisional": T, "success": T, "failure": T, "terminate": T},
}


def test_transition_table_is_complete() -> None:
    assert set(TRANSITIONS) == set(itertools.product(DialogState, DialogEvent))


@pytest.mark.parametrize(("state", "event"), list(itertools.product(DialogState, DialogEvent)))
def test_every_transition(state: DialogState, event: DialogEvent) -> None:
    assert next_state(state, event) is EXPECTED[state][event.value]


# --- UAC ---------------------------------------------------------------------------------------


def test_uac_early_dialog_from_180_with_tag() -> None:
    dialog = _uac(180, record_route=RR)
    assert dialog.role is Role.UAC
    assert state(dialog) is DialogState.EARLY
    assert dialog.id == DialogId("call-1@192.0.2.10", "alice-tag", "bob-tag")
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert str(dialog.remote_target) == "sip:bob@198.51.100.20:5062"
    assert (dialog.local_seq, dialog.remote_seq, dialog.invite_seq) == (10, None, 10)
    assert dialog.local_contact is not None
    assert str(dialog.local_contact.uri) == "sip:alice@192.0.2.10:5060"
    assert not dialog.secure
    assert "uac" in repr(dialog) and "early" in repr(dialog)


def test_uac_early_dialog_without_contact_targets_the_request_uri() -> None:
    dialog = _uac(183, contact=None)
    assert str(dialog.remote_target) == "sip:bob@example.com"


def test_uac_confirmed_dialog_from_200() -> None:
    dialog = _uac(200, record_route=RR)
    assert state(dialog) is DialogState.CONFIRMED
    assert dialog.route_set[0].uri.host == "p1.example.com"


def test_uac_200_without_to_tag_has_empty_remote_tag() -> None:
    # RFC 2543 peers send no tag; §12.1.2 makes the remote tag null.
    dialog = _uac(200, to_tag=None)
    assert dialog.id.remote_tag == ""


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (_response(100), "does not create a dialog"),
        (_response(300), "does not create a dialog"),
        (_response(180, to_tag=None), "without To tag"),
        (_response(200, contact=None), "must carry a Contact"),
        (_response(200, contact="<tel:+15551234>"), "must carry a Contact"),
        (_response(200, cseq="11 INVITE"), "does not answer"),
        (_response(200, call_id="other"), "does not answer"),
    ],
)
def test_uac_creation_errors(response: Response, message: str) -> None:
    with pytest.raises(DialogError, match=message):
        Dialog.create_uac(_req(INVITE), response, ids())


def _garbled(message: Request | Response, name: str, value: str) -> None:
    """Put a header value the parser might refuse: the dialog must not rely on the parser."""
    message.headers.set(name, value)


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("Contact", "<sip:bad host>", "must carry a Contact"),
        ("Record-Route", "<sip:p1.example.com;lr", "bad Record-Route"),
    ],
)
def test_uac_creation_with_garbled_headers(header: str, value: str, message: str) -> None:
    response = _response(200)
    _garbled(response, header, value)
    with pytest.raises(DialogError, match=message):
        Dialog.create_uac(_req(INVITE), response, ids())


def test_uac_2xx_confirms_early_dialog_and_recomputes_route_set_and_target() -> None:
    dialog = _uac(180, record_route=RR)
    assert dialog.receive_response(_response(180, contact="<sip:bob@10.0.0.1>"))
    assert state(dialog) is DialogState.EARLY
    assert str(dialog.remote_target) == "sip:bob@198.51.100.20:5062"  # 1xx: no target change
    ok = _response(200, record_route=("<sip:p3.example.com;lr>",), contact="<sip:bob@203.0.113.9>")
    assert dialog.receive_response(ok)
    assert state(dialog) is DialogState.CONFIRMED
    assert [r.uri.host for r in dialog.route_set] == ["p3.example.com"]
    assert str(dialog.remote_target) == "sip:bob@203.0.113.9"
    # a retransmitted 2xx changes nothing more
    assert dialog.receive_response(_response(200, record_route=RR))
    assert [r.uri.host for r in dialog.route_set] == ["p3.example.com"]


def test_uac_2xx_with_garbled_record_route_keeps_the_early_route_set() -> None:
    dialog = _uac(180, record_route=RR)
    ok = _response(200, contact=None)
    _garbled(ok, "Record-Route", "<sip:broken")
    dialog.receive_response(ok)
    assert state(dialog) is DialogState.CONFIRMED
    assert [r.uri.host for r in dialog.route_set] == ["p1.example.com", "p2.example.com"]
    assert str(dialog.remote_target) == "sip:bob@198.51.100.20:5062"


def test_uac_failure_ends_early_dialog() -> None:
    dialog = _uac(180)
    assert dialog.receive_response(_response(486))
    assert state(dialog) is DialogState.TERMINATED


def test_response_of_another_dialog_is_ignored() -> None:
    dialog = _uac(180)
    assert not dialog.receive_response(_response(200, to_tag="other-fork"))
    assert state(dialog) is DialogState.EARLY


def test_ack_for_2xx_reuses_invite_cseq_with_new_branch_and_routes() -> None:
    dialog = _uac(200, record_route=RR)
    ack = dialog.create_ack(VIA, headers=[("Authorization", "Digest x")])
    assert ack.method == "ACK"
    assert str(ack.uri) == "sip:bob@198.51.100.20:5062"
    assert (ack.cseq.number, ack.cseq.method) == (10, "ACK")
    assert dialog.local_seq == 10  # ACK takes no new number
    assert ack.top_via.branch == "z9hG4bKbr1"
    assert ack.top_via.host == "192.0.2.10" and ack.top_via.has_param("rport")
    assert ack.headers.get_list("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack.headers.get("max-forwards") == "70"
    assert ack.from_addr.tag == "alice-tag" and ack.to_addr.tag == "bob-tag"
    assert ack.call_id == "call-1@192.0.2.10"
    assert "contact" not in ack.headers
    assert ack.headers.get("authorization") == "Digest x"
    # it serializes and parses back as a valid request
    assert isinstance(parse_message(ack.to_bytes()), Request)
    # a second ACK (for a retransmitted 2xx) gets another branch
    assert dialog.create_ack(VIA).top_via.branch == "z9hG4bKbr2"


def test_ack_with_late_answer_body() -> None:
    dialog = _uac(200)
    ack = dialog.create_ack(VIA, body=b"v=0\r\n", content_type="application/sdp")
    assert ack.body == b"v=0\r\n"
    assert ack.content_type == "application/sdp"
    assert parse_message(ack.to_bytes()).body == b"v=0\r\n"


def test_reinvite_increments_cseq_carries_contact_and_refreshes_target() -> None:
    dialog = _uac(200)
    reinvite = dialog.create_request("invite", VIA, body=b"sdp", content_type="application/sdp")
    assert reinvite.method == "INVITE"
    assert reinvite.cseq.number == 11 and dialog.invite_seq == 11
    assert reinvite.headers.get("contact") == "<sip:alice@192.0.2.10:5060>"
    refreshed = _response(200, cseq="11 INVITE", contact="<sip:bob@203.0.113.50:7000>")
    assert dialog.receive_response(refreshed)
    assert str(dialog.remote_target) == "sip:bob@203.0.113.50:7000"
    assert dialog.create_ack(VIA).cseq.number == 11
    # a re-INVITE failure (491) leaves the dialog alone
    dialog.create_request("INVITE", VIA)
    dialog.receive_response(_response(491, cseq="12 INVITE"))
    assert state(dialog) is DialogState.CONFIRMED


def test_new_contact_given_to_create_request_becomes_the_local_contact() -> None:
    dialog = _uac(200)
    contact = parse_address("<sip:alice@203.0.113.77:5080;transport=tcp>")
    update = dialog.create_request("UPDATE", VIA, contact=contact)
    assert update.headers.get("contact") == str(contact)
    assert dialog.local_contact == contact
    refer = dialog.create_request("REFER", VIA, headers=[("Refer-To", "<sip:carol@example.com>")])
    assert refer.headers.get("contact") == str(contact)
    assert refer.headers.get("refer-to") == "<sip:carol@example.com>"
    info = dialog.create_request("INFO", VIA)
    assert "contact" not in info.headers


@pytest.mark.parametrize(
    ("method", "contact", "changes"),
    [
        ("UPDATE", "<sip:bob@203.0.113.60>", True),
        ("SUBSCRIBE", "<sip:bob@203.0.113.60>", True),
        ("NOTIFY", "<sip:bob@203.0.113.60>", True),
        ("INFO", "<sip:bob@203.0.113.60>", False),  # not a target refresh
        ("UPDATE", None, False),  # no Contact: keep the old target
    ],
)
def test_target_refresh_on_2xx(method: str, contact: str | None, changes: bool) -> None:
    dialog = _uac(200)
    request = dialog.create_request(method, VIA)
    response = _response(200, cseq=f"{request.cseq.number} {method}", contact=contact)
    dialog.receive_response(response)
    expected = "sip:bob@203.0.113.60" if changes else "sip:bob@198.51.100.20:5062"
    assert str(dialog.remote_target) == expected


@pytest.mark.parametrize(
    ("status", "method", "terminated"),
    [
        (481, "INFO", True),
        (408, "UPDATE", True),
        (200, "BYE", True),
        (500, "BYE", True),
        (401, "BYE", False),  # answer the challenge with credentials on the same dialog
        (407, "BYE", False),
        (100, "BYE", False),
        (404, "INFO", False),
    ],
)
def test_responses_that_end_the_dialog(status: int, method: str, terminated: bool) -> None:
    dialog = _uac(200)
    request = dialog.create_request(method, VIA)
    dialog.receive_response(_response(status, cseq=f"{request.cseq.number} {method}"))
    assert (state(dialog) is DialogState.TERMINATED) is terminated


def test_bye_cseq_and_termination() -> None:
    dialog = _uac(200)
    bye = dialog.create_request("BYE", VIA)
    assert bye.cseq.number == 11 and bye.cseq.method == "BYE"
    assert state(dialog) is DialogState.CONFIRMED  # until the BYE's final response
    dialog.receive_response(_response(200, cseq="11 BYE"))
    assert state(dialog) is DialogState.TERMINATED
    with pytest.raises(DialogError, match="terminated"):
        dialog.create_request("BYE", VIA)


def test_caller_may_send_bye_in_early_dialog() -> None:
    dialog = _uac(180)
    assert dialog.create_request("BYE", VIA).method == "BYE"


def test_cancel_is_not_in_dialog() -> None:
    with pytest.raises(DialogError, match="CANCEL"):
        _uac(180).create_request("CANCEL", VIA)


def test_local_cseq_exhaustion() -> None:
    dialog = _uac(200)
    dialog.local_seq = MAX_CSEQ
    with pytest.raises(DialogError, match="exhausted"):
        dialog.create_request("INFO", VIA)


def test_secure_flag_needs_sips_and_tls() -> None:
    sips_invite = _req(INVITE.replace("INVITE sip:bob@example.com", "INVITE sips:bob@example.com"))
    response = _response(200, contact="<sips:bob@198.51.100.20>")
    assert Dialog.create_uac(sips_invite, response, ids(), over_tls=True).secure
    assert not Dialog.create_uac(sips_invite, response, ids(), over_tls=False).secure
    assert not Dialog.create_uac(_req(INVITE), response, ids(), over_tls=True).secure


# --- route sets ---------------------------------------------------------------------------------


def test_no_route_set_means_no_route_header() -> None:
    request = _uac(200).create_request("INFO", VIA)
    assert "route" not in request.headers
    assert str(request.uri) == "sip:bob@198.51.100.20:5062"


def test_strict_router_gets_the_request_uri_and_the_target_goes_last() -> None:
    # The callee's response lists the route nearest to it first; we reverse it, so the strict
    # router p1 (no lr) is our first hop.
    dialog = _uac(
        200, record_route=("<sip:p2.example.com;lr>", "<sip:p1.example.com;method=INVITE>")
    )
    request = dialog.create_request("BYE", VIA)
    assert str(request.uri) == "sip:p1.example.com"  # `method` is not allowed in a R-URI
    assert request.headers.get_list("route") == [
        "<sip:p2.example.com;lr>",
        "<sip:bob@198.51.100.20:5062>",
    ]


def test_request_uri_drops_headers_of_the_remote_target() -> None:
    dialog = _uac(200, contact="<sip:bob@198.51.100.20?Subject=hi>")
    request = dialog.create_request("INFO", VIA)
    assert str(request.uri) == "sip:bob@198.51.100.20"
    assert request.uri.headers == ()


def test_loose_route_set_keeps_the_target_in_the_request_uri() -> None:
    dialog = _uac(200, record_route=("<sip:p1.example.com;lr;ftag=x>",))
    request = dialog.create_request("INFO", VIA)
    assert str(request.uri) == "sip:bob@198.51.100.20:5062"
    assert request.headers.get_list("route") == ["<sip:p1.example.com;lr;ftag=x>"]


# --- UAS ---------------------------------------------------------------------------------------

UAS_INVITE = INVITE.replace(
    "Max-Forwards: 70\n",
    "Max-Forwards: 69\n"
    "Record-Route: <sip:p1.example.com;lr>\n"
    "Record-Route: <sip:p2.example.com;lr>\n",
)
OUR_CONTACT = parse_address("<sip:callkeeper@192.0.2.1:5060>")


def _uas() -> tuple[Request, Dialog]:
    request = _req(UAS_INVITE)
    return request, Dialog.create_uas(request, ids("tag"), local_contact=OUR_CONTACT)


def _in_dialog(
    method: str, cseq: int, *, contact: str | None = None, to_tag: str = "tag1"
) -> Request:
    lines = [
        f"{method} sip:callkeeper@192.0.2.1:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx" + str(cseq) + method,
        "From: <sip:alice@example.com>;tag=alice-tag",
        f"To: <sip:bob@example.com>;tag={to_tag}",
        "Call-ID: call-1@192.0.2.10",
        f"CSeq: {cseq} {method}",
        *([f"Contact: {contact}"] if contact else []),
        "Content-Length: 0",
        "",
        "",
    ]
    return _req("\n".join(lines))


def test_uas_dialog_from_invite() -> None:
    _, dialog = _uas()
    assert dialog.role is Role.UAS
    assert state(dialog) is DialogState.EARLY
    assert dialog.id == DialogId("call-1@192.0.2.10", "tag1", "alice-tag")
    assert [r.uri.host for r in dialog.route_set] == ["p1.example.com", "p2.example.com"]
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    assert dialog.local_seq is None and dialog.remote_seq == 10 and dialog.invite_seq is None
    assert dialog.local_address.tag == "tag1"
    assert dialog.remote_address.tag == "alice-tag"


def test_uas_responses_drive_the_state() -> None:
    request, dialog = _uas()
    ringing = request.create_response(180, to_tag=dialog.id.local_tag)
    dialog.send_response(ringing)
    assert state(dialog) is DialogState.EARLY
    dialog.send_response(request.create_response(200, to_tag=dialog.id.local_tag))
    assert state(dialog) is DialogState.CONFIRMED
    # responses to other requests do not touch the state
    dialog.send_response(_in_dialog("INFO", 11).create_response(500))
    assert state(dialog) is DialogState.CONFIRMED


def test_uas_failure_response_ends_early_dialog() -> None:
    request, dialog = _uas()
    dialog.send_response(request.create_response(486, to_tag=dialog.id.local_tag))
    assert state(dialog) is DialogState.TERMINATED


def test_uas_remote_cseq_rules() -> None:
    request, dialog = _uas()
    dialog.send_response(request.create_response(200, to_tag=dialog.id.local_tag))
    assert dialog.receive_request(_in_dialog("ACK", 10)) is None  # ACK reuses the INVITE's
    assert dialog.receive_request(_in_dialog("INFO", 11)) is None
    assert dialog.remote_seq == 11
    assert dialog.receive_request(_in_dialog("INFO", 11)) == 500  # not above: 500 (§12.2.2)
    assert dialog.receive_request(_in_dialog("INFO", 9)) == 500
    assert dialog.remote_seq == 11
    assert dialog.receive_request(_in_dialog("CANCEL", 10)) is None  # the transaction's business
    assert dialog.receive_request(_in_dialog("INFO", 1000)) is None  # gaps are fine
    assert dialog.remote_seq == 1000


def test_uac_dialog_learns_the_remote_cseq_from_the_first_request() -> None:
    dialog = _uac(200)
    request = _req(
        "\n".join(
            [
                "INFO sip:alice@192.0.2.10:5060 SIP/2.0",
                "Via: SIP/2.0/UDP 198.51.100.20:5062;branch=z9hG4bKb1",
                "From: <sip:bob@example.com>;tag=bob-tag",
                'To: "Alice" <sip:alice@example.com>;tag=alice-tag',
                "Call-ID: call-1@192.0.2.10",
                "CSeq: 5 INFO",
                "Content-Length: 0",
                "",
                "",
            ]
        )
    )
    assert DialogId.of_request(request) == dialog.id
    assert dialog.receive_request(request) is None
    assert dialog.remote_seq == 5


def test_uas_rejects_requests_of_other_or_ended_dialogs_with_481() -> None:
    request, dialog = _uas()
    dialog.send_response(request.create_response(200, to_tag=dialog.id.local_tag))
    assert dialog.receive_request(_in_dialog("INFO", 11, to_tag="wrong")) == 481
    assert dialog.receive_request(_in_dialog("BYE", 12)) is None
    assert state(dialog) is DialogState.TERMINATED
    assert dialog.receive_request(_in_dialog("INFO", 13)) == 481


def test_uas_target_refresh_on_reinvite_and_not_on_info() -> None:
    request, dialog = _uas()
    dialog.send_response(request.create_response(200, to_tag=dialog.id.local_tag))
    dialog.receive_request(_in_dialog("INFO", 11, contact="<sip:alice@10.9.9.9>"))
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    dialog.receive_request(_in_dialog("INVITE", 12, contact="<sip:alice@203.0.113.5:5099>"))
    assert str(dialog.remote_target) == "sip:alice@203.0.113.5:5099"
    dialog.receive_request(_in_dialog("UPDATE", 13))  # no Contact: keep
    assert str(dialog.remote_target) == "sip:alice@203.0.113.5:5099"


def test_uas_requests_start_local_cseq_at_one_and_route_in_order() -> None:
    request, dialog = _uas()
    dialog.send_response(request.create_response(200, to_tag=dialog.id.local_tag))
    with pytest.raises(DialogError, match="no INVITE"):
        dialog.create_ack(VIA)
    reinvite = dialog.create_request("INVITE", VIA)
    assert reinvite.cseq.number == 1 and dialog.local_seq == 1
    assert reinvite.headers.get_list("route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert str(reinvite.uri) == "sip:alice@192.0.2.10:5060"
    assert reinvite.headers.get("contact") == str(OUR_CONTACT)
    assert reinvite.from_addr.tag == "tag1" and reinvite.to_addr.tag == "alice-tag"
    assert reinvite.from_addr.uri == parse_uri("sip:bob@example.com")
    assert dialog.create_ack(VIA).cseq.number == 1
    assert dialog.create_request("BYE", VIA).cseq.number == 2


def test_callee_must_not_send_bye_in_early_dialog() -> None:
    _, dialog = _uas()
    with pytest.raises(DialogError, match="early"):
        dialog.create_request("BYE", VIA)
    assert dialog.create_request("UPDATE", VIA).cseq.number == 1  # other requests are fine


def test_uas_bye_from_caller_in_early_dialog_ends_it() -> None:
    _, dialog = _uas()
    assert dialog.receive_request(_in_dialog("BYE", 11)) is None
    assert state(dialog) is DialogState.TERMINATED


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (INVITE.replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=x"), 481),
        (INVITE.replace("Contact: <sip:alice@192.0.2.10:5060>\n", ""), 400),
        (INVITE.replace("Contact: <sip:alice@192.0.2.10:5060>", "Contact: <tel:+1555>"), 400),
    ],
)
def test_uas_creation_errors(text: str, status: int) -> None:
    with pytest.raises(DialogError) as info:
        Dialog.create_uas(_req(text), ids())
    assert info.value.status == status


@pytest.mark.parametrize(
    ("header", "value"),
    [("Contact", "<sip:bad host>"), ("Record-Route", "<sip:x;lr")],
)
def test_uas_creation_with_garbled_headers(header: str, value: str) -> None:
    request = _req(INVITE)
    _garbled(request, header, value)
    with pytest.raises(DialogError) as info:
        Dialog.create_uas(request, ids())
    assert info.value.status == 400


def test_uas_secure_flag() -> None:
    request = _req(INVITE.replace("INVITE sip:bob@example.com", "INVITE sips:bob@example.com"))
    assert Dialog.create_uas(request, ids(), over_tls=True).secure
    assert not Dialog.create_uas(_req(INVITE), ids(), over_tls=True).secure


def test_terminate() -> None:
    dialog = _uac(200)
    dialog.terminate()
    assert state(dialog) is DialogState.TERMINATED
    dialog.terminate()
    assert state(dialog) is DialogState.TERMINATED


def test_dialog_error_defaults_to_500() -> None:
    error = DialogError("misuse")
    assert (error.status, error.reason, str(error)) == (500, "misuse", "misuse")


# --- both ends together ------------------------------------------------------------------------


def _wire_request(request: Request) -> Request:
    received = parse_message(request.to_bytes())
    assert isinstance(received, Request)
    return received


def _wire_response(response: Response) -> Response:
    received = parse_message(response.to_bytes())
    assert isinstance(received, Response)
    return received


def test_uac_and_uas_dialogs_agree() -> None:
    invite = _req(INVITE)
    bob_contact = parse_address("<sip:bob@198.51.100.20>")
    bob = Dialog.create_uas(invite, ids("bob"), local_contact=bob_contact)
    ok = invite.create_response(200, to_tag=bob.id.local_tag)
    ok.headers.add("Contact", str(bob_contact))
    bob.send_response(ok)
    alice = Dialog.create_uac(invite, _wire_response(ok), ids("alice"))
    assert alice.id == DialogId(bob.id.call_id, bob.id.remote_tag, bob.id.local_tag)
    assert state(bob) is state(alice) is DialogState.CONFIRMED

    ack = _wire_request(alice.create_ack(VIA))
    assert DialogId.of_request(ack) == bob.id
    assert bob.receive_request(ack) is None

    info = _wire_request(alice.create_request("INFO", VIA))
    assert str(info.uri) == "sip:bob@198.51.100.20"
    assert bob.receive_request(info) is None
    answer = _wire_response(info.create_response(200))
    assert DialogId.of_response(answer) == alice.id
    assert alice.receive_response(answer)

    bye = _wire_request(bob.create_request("BYE", VIA))
    assert str(bye.uri) == "sip:alice@192.0.2.10:5060"
    assert DialogId.of_request(bye) == alice.id
    assert alice.receive_request(bye) is None
    assert state(alice) is DialogState.TERMINATED
    assert bob.receive_response(_wire_response(bye.create_response(200)))
    assert state(bob) is DialogState.TERMINATED


# --- properties --------------------------------------------------------------------------------

_METHODS = st.sampled_from(["INVITE", "ACK", "INFO", "UPDATE", "OPTIONS", "NOTIFY", "REFER"])


@given(st.lists(_METHODS, max_size=30))
def test_local_cseq_grows_by_one_and_ack_repeats_the_last_invite(methods: list[str]) -> None:
    dialog = _uac(200)
    expected = 10
    last_invite = 10
    branches = set()
    for method in methods:
        request = dialog.create_request(method, VIA)
        branches.add(request.top_via.branch)
        if method == "ACK":
            assert request.cseq.number == last_invite
        else:
            expected += 1
            assert request.cseq.number == expected
            if method == "INVITE":
                last_invite = expected
        assert request.cseq.method == method
    assert dialog.local_seq == expected
    assert len(branches) == len(methods)  # every request is a new transaction


@given(st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=30))
def test_remote_cseq_must_strictly_increase(numbers: list[int]) -> None:
    _, dialog = _uas()
    highest = 10
    for number in numbers:
        status = dialog.receive_request(_in_dialog("INFO", number))
        if number > highest:
            assert status is None
            highest = number
        else:
            assert status == 500
        assert dialog.remote_seq == highest
