"""The SIP parser: datagrams, streams, validation, views, limits and extremes.

RFC 4475's torture messages live in test_torture_rfc4475.py, the PROTOS suite in test_protos.py,
generated and mutated messages in test_parser_props.py and test_fuzz.py. This module pins down
each rule one message at a time.
"""

from __future__ import annotations

import time

import pytest

from callkeeper.sip import address as address_module
from callkeeper.sip import head_parser, headers
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.head_parser import MAX_HEADER_BYTES, MAX_HEADER_LINES
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import CSeq, Message, Request, Response, parse_cseq
from callkeeper.sip.parser import (
    MAX_BODY_BYTES,
    FramingError,
    KeepAlivePing,
    KeepAlivePong,
    PartialRequestError,
    StreamItem,
    StreamParser,
    parse_message,
    parse_ws_message,
)
from callkeeper.sip.uri import URI, parse_uri
from callkeeper.sip.via import Via

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

HEADERS = [
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
]


def invite(*extra: str, body: bytes = SDP, drop: tuple[str, ...] = (), start: str = "") -> bytes:
    """An INVITE; `extra` header lines are added, headers named in `drop` left out."""
    lines = [start or "INVITE sip:bob@biloxi.example.com SIP/2.0"]
    lines += [line for line in HEADERS if line.split(":")[0].lower() not in drop]
    lines += extra
    if "content-length" not in drop:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def response(status_line: str = "SIP/2.0 200 OK", *extra: str) -> bytes:
    lines = [status_line, *HEADERS[:1], *HEADERS[2:6], *extra, "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rejected(data: bytes) -> PartialRequestError:
    with pytest.raises(PartialRequestError) as caught:
        parse_message(data)
    return caught.value


def dropped(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert not isinstance(caught.value, PartialRequestError), caught.value.reason
    return caught.value


# --- whole messages -------------------------------------------------------------------------


def test_request_parses_into_its_parts() -> None:
    message = parse_message(invite())
    assert isinstance(message, Request)
    assert (message.method, str(message.uri), message.version) == (
        "INVITE",
        "sip:bob@biloxi.example.com",
        "SIP/2.0",
    )
    assert message.body == SDP
    assert message.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert message.cseq == CSeq(314159, "INVITE")
    assert message.top_via.branch == "z9hG4bK776asdhds"
    assert message.from_addr.tag == "1928301774"
    assert message.to_addr.tag is None
    assert message.content_type == "application/sdp"
    assert message.transaction_branch == "z9hG4bK776asdhds"
    assert repr(message) == "<Request INVITE sip:bob@biloxi.example.com>"


def test_response_parses_into_its_parts() -> None:
    message = parse_message(response("SIP/2.0 180 Ringing"))
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing")
    assert message.is_provisional and not message.is_success
    assert repr(message) == "<Response 180 Ringing>"
    assert parse_message(response("SIP/2.0 200")).reason == ""  # missing SP tolerated


def test_leading_crlfs_are_skipped() -> None:
    assert isinstance(parse_message(b"\r\n\r\n" + invite()), Request)


def lf_only(data: bytes) -> bytes:
    """The message with LF line ends in its header section (the body left alone)."""
    head, _, body = data.partition(b"\r\n\r\n")
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


def test_lf_only_messages_parse_and_serialize_with_crlf() -> None:
    message = parse_message(lf_only(invite()))
    assert message.body == SDP
    assert message.to_bytes() == invite()


def test_body_is_cut_to_content_length_and_defaults_to_the_rest() -> None:
    assert parse_message(invite() + b"trailing noise").body == SDP
    message = parse_message(invite(drop=("content-length",)) + b"extra")
    assert message.body == SDP + b"extra"


def test_no_end_of_header_section() -> None:
    dropped(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h")


# --- start line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "INVITE",  # no URI, no version
        "INVITE sip:bob@biloxi.example.com",  # one SP only
        " sip:bob@biloxi.example.com SIP/2.0",  # empty method
        "INV(ITE sip:bob@biloxi.example.com SIP/2.0",  # not a token
        "SIP/2.0 99 Too small",
        "SIP/2.0 700 Too large",
        "SIP/2.0 2000 OK",
        "SIP/2.0  200 OK",
        "SIP/x 200 OK",
        "SIP/3.0 200 OK",  # a response in another version: nothing to answer, dropped
    ],
)
def test_unusable_start_lines_are_dropped(line: str) -> None:
    dropped(invite(start=line))


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("INVITE sip:bob@biloxi.example.com SIP/3.0", 505),
        ("INVITE sip:bob@biloxi.example.com sip/2.x", 400),
        ("INVITE sip:bob@biloxi.example.com XIP/2.0", 400),
        ("INVITE sip:bob@biloxi.example.com  SIP/2.0", 400),
        ("INVITE <sip:bob@biloxi.example.com> SIP/2.0", 400),
        ("INVITE sip:bob@biloxi.example.com?Subject=hi SIP/2.0", 400),
        ("INVITE sip:bob@[::1::2] SIP/2.0", 400),
        ("INVITE mailto:bob@biloxi.example.com SIP/2.0", 416),
        ("INVITE http://biloxi.example.com/bob SIP/2.0", 416),
    ],
)
def test_bad_request_lines_are_answered(line: str, status: int) -> None:
    assert rejected(invite(start=line)).status == status


def test_the_request_line_is_kept_when_it_is_refused() -> None:
    error = rejected(invite(start="INVITE http://biloxi.example.com/bob SIP/2.0"))
    assert (error.request.uri.scheme, error.request.uri.opaque) == (
        "http",
        "//biloxi.example.com/bob",
    )
    error = rejected(invite(start="INVITE sip:bob@biloxi.example.com;  lr SIP/2.0"))
    assert error.request.start_line() == "INVITE sip:bob@biloxi.example.com;  lr SIP/2.0"
    assert (error.request.uri.scheme, error.request.uri.opaque) == (
        "sip",
        "bob@biloxi.example.com;  lr",
    )
    error = rejected(invite(start="INVITE bob SIP/2.0"))
    assert (error.request.uri.scheme, error.request.uri.opaque) == ("", "bob")


def test_505_outranks_400_which_outranks_416() -> None:
    data = invite("Max-Forwards: 900", start="INVITE mailto:b@c SIP/3.0")
    assert rejected(data).status == 505
    data = invite("Date: yesterday", start="INVITE mailto:b@c SIP/2.0")
    assert rejected(data).status == 400
    assert rejected(invite(start="INVITE mailto:b@c SIP/2.0")).status == 416


def test_version_is_case_insensitive() -> None:
    message = parse_message(invite(start="INVITE sip:bob@biloxi.example.com sip/2.0"))
    assert message.version == "sip/2.0"
    assert isinstance(parse_message(response("sip/2.0 200 OK")), Response)


# --- header lines ---------------------------------------------------------------------------


def test_folded_header_lines_are_joined() -> None:
    data = invite("Subject: a\r\n  folded\r\n\tsubject", "X-Empty-Fold: x\r\n   ")
    message = parse_message(data)
    assert message.headers.get("subject") == "a folded subject"
    assert message.headers.get("x-empty-fold") == "x"


def test_names_may_have_lws_before_the_colon_and_values_around() -> None:
    message = parse_message(invite("Subject   :   spaced out   "))
    assert message.headers.get("subject") == "spaced out"
    assert ("Subject", "spaced out") in list(message.headers)


@pytest.mark.parametrize(
    "line",
    [
        "NoColonHere",
        ": no name",
        "Bad Name: x",
        "Bad(Name): x",
        "\x80Name: x",
    ],
)
def test_bad_header_lines_are_answered_with_400(line: str) -> None:
    error = rejected(invite(line))
    assert error.status == 400
    assert error.request.headers.get("call-id")  # the good lines were kept


def test_continuation_right_after_the_start_line() -> None:
    data = invite(start="INVITE sip:bob@biloxi.example.com SIP/2.0\r\n continued")
    assert rejected(data).status == 400


@pytest.mark.parametrize("noise", [b"\r", b"\n", b"\x00", b"\x01", b"\x7f", b"\x1b"])
def test_control_characters_and_bare_cr_lf_are_refused(noise: bytes) -> None:
    data = invite("Subject: before" + noise.decode("latin-1") + "after")
    assert rejected(data).status == 400


def test_control_characters_in_the_start_line_are_refused() -> None:
    assert rejected(invite(start="INVITE sip:bob@biloxi.example.com\x01 SIP/2.0")).status == 400


def test_a_quoted_pair_may_escape_nul_and_other_controls() -> None:
    message = parse_message(invite('Subject: "nul \\\x00 bel \\\x07 del \\\x7f"'))
    assert message.headers.get("subject") == '"nul \\\x00 bel \\\x07 del \\\x7f"'


def test_non_utf8_octets_in_header_values_survive_a_round_trip() -> None:
    data = invite("Subject: caf\udce9 ol\udcc3", 'To: "J\udcf6rg" <sip:bob@biloxi.example.com>')
    message = parse_message(data.replace(b"To: Bob <sip:bob@biloxi.example.com>\r\n", b""))
    assert message.headers.get("subject") == "caf\udce9 ol\udcc3"
    assert message.to_addr.display_name == '"J\udcf6rg"'
    message.headers.add("X-Touched", "1")  # rebuild the text instead of resending the octets
    assert b"Subject: caf\xe9 ol\xc3\r\n" in message.to_bytes()


def test_non_utf8_octets_in_a_uri_are_refused() -> None:
    assert rejected(invite(start="INVITE sip:b\udce9b@biloxi.example.com SIP/2.0")).status == 400


# --- validation -----------------------------------------------------------------------------


def test_missing_via_means_no_answer() -> None:
    dropped(invite(drop=("via",)))


@pytest.mark.parametrize(
    "via",
    [
        "Via: garbage",
        "Via: SIP/2.0/UDP",
        "Via: SIP/2.0/UDP bad_host;branch=1",
        "Via: SIP/2.0/UDP host:99999;branch=1",
        "Via: SIP/2.0/UDP [::1::2];branch=1",
        "Via: SIP/2.0/UDP host:5060x",
        "Via: ,",
    ],
)
def test_unroutable_via_means_no_answer(via: str) -> None:
    dropped(invite(via, drop=("via",)))


@pytest.mark.parametrize(
    "via",
    [
        "Via: SIP/2.0/UDP host;branch",
        "Via: SIP/2.0/UDP host;branch=",
        "Via: SIP/2.0/UDP host;rport=x",
        "Via: SIP/2.0/UDP host;ttl=1000",
        "Via: SIP/2.0/UDP host;ttl",
        "Via: SIP/2.0/UDP host;;",
        "Via: SIP/2.0/UDP host;branch=a, garbage",
        "Via: SIP/2.0/UDP host;branch=a, SIP/2.0/UDP [::1::2]",
    ],
)
def test_bad_via_parameters_are_answered_with_400(via: str) -> None:
    assert rejected(invite(via, drop=("via",))).status == 400


def test_vias_over_several_lines_and_values() -> None:
    data = invite(
        "Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKa;received=2001:db8::9, "
        "SIP/2.0/UDP b.example.com;branch=z9hG4bKb;ttl=16",
        "Via: SIP/2.0/TLS c.example.com:5061;branch=z9hG4bKc;rport=5061",
        drop=("via",),
    )
    message = parse_message(data)
    assert [(v.transport, v.host, v.port) for v in message.vias] == [
        ("TCP", "[2001:db8::1]", 5061),
        ("UDP", "b.example.com", None),
        ("TLS", "c.example.com", 5061),
    ]
    assert message.top_via.param("received") == "2001:db8::9"
    assert message.top_via.reliable


@pytest.mark.parametrize("name", ["from", "to", "call-id", "cseq"])
def test_required_headers(name: str) -> None:
    assert "missing" in rejected(invite(drop=(name,))).reason


@pytest.mark.parametrize(
    "line",
    [
        "From: sip:other@example.com;tag=2",
        "To: sip:other@example.com",
        "Call-ID: other@example.com",
        "CSeq: 2 INVITE",
        "Max-Forwards: 69",
        "Expires: 30",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "Content-Type: text/plain",
    ],
)
def test_single_value_headers_may_not_repeat(line: str) -> None:
    data = invite(line, "Expires: 60", "Date: Sat, 13 Nov 2010 23:29:00 GMT")
    assert rejected(data).status == 400


@pytest.mark.parametrize(
    "line",
    [
        "Call-ID: has space@example.com",
        "Call-ID: a@b@c",
        "Call-ID: ",
        "CSeq: 1",
        "CSeq: INVITE 1",
        "CSeq: 2147483648 INVITE",
        "CSeq: 99999999999 INVITE",
        "CSeq: 1 INV(ITE",
        "CSeq: 1 BYE",
        "Max-Forwards: 256",
        "Max-Forwards: -1",
        "Max-Forwards: seventy",
        "Max-Forwards: 7\u0660",
        "Expires: soon",
        "Contact: <sip:a@b>;;",
        "Contact: *, <sip:a@b>",
        "Contact: sip:a@b?x=y",
        "Route: sip:proxy.example.com",
        "Record-Route: <sip:p1.example.com;lr>, sip:p2.example.com",
        "Date: Sat, 13 Nov 2010 23:29:00 EST",
        "Content-Type: sdp",
        "Content-Type: application/sdp;",
        "From: sip:alice@atlanta.example.com;tag=",
        'To: "unterminated <sip:bob@biloxi.example.com>',
    ],
)
def test_bad_header_values_are_answered_with_400(line: str) -> None:
    name = line.split(":")[0].lower()
    error = rejected(invite(line, drop=(name,)))
    assert error.status == 400, error.reason


def test_leading_zeros_are_numbers_too() -> None:
    message = parse_message(
        invite(
            "Max-Forwards: 000000070", "CSeq: 000000000000001 INVITE", drop=("max-forwards", "cseq")
        )
    )
    assert message.cseq.number == 1
    message = parse_message(
        invite("Content-Length: 00000000000000", body=b"", drop=("content-length",))
    )
    assert message.body == b""


def test_content_length_must_be_a_number_and_agree() -> None:
    assert rejected(invite("Content-Length: five", drop=("content-length",))).status == 400
    assert rejected(invite("Content-Length: 99999999999", drop=("content-length",))).status == 400
    two = invite(f"Content-Length: {len(SDP)}")  # the same value twice is no conflict
    assert parse_message(two).body == SDP
    assert rejected(invite("Content-Length: 1")).reason == "conflicting Content-Length headers"


def test_content_length_beyond_the_datagram_is_answered() -> None:
    data = invite("Content-Length: 9999", drop=("content-length",))
    error = rejected(data)
    assert error.status == 400 and "exceeds" in error.reason


def test_responses_are_never_answered() -> None:
    dropped(response("SIP/2.0 200 OK", "CSeq: 1 INVITE"))
    dropped(response("SIP/2.0 200 OK").replace(b"Call-ID", b"X-Call-ID"))


def test_wildcard_contact_and_routes() -> None:
    message = parse_message(
        invite(
            "Contact: *",
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            "Record-Route: <sip:p3.example.com;lr>",
            "Expires: 0",
            drop=("contact",),
        )
    )
    assert message.contacts == []
    assert [route.uri.host for route in message.routes] == ["p1.example.com", "p2.example.com"]
    assert message.record_routes[0].uri.has_param("lr")


def test_several_contacts() -> None:
    message = parse_message(
        invite("Contact: <sip:a@one>;q=0.5, <sip:a@two>", "Contact: sip:a@three", drop=("contact",))
    )
    assert [c.uri.host for c in message.contacts] == ["one", "two", "three"]


# --- views and their cache ------------------------------------------------------------------


def test_views_are_parsed_once_and_follow_changes() -> None:
    message = parse_message(invite())
    first = message.from_addr
    assert message.from_addr is first  # from the parse, no second parse
    message.headers.add("X-Other", "1")  # another header changed: same text, same view
    assert message.from_addr is first
    message.headers.set("From", "<sip:carol@example.com>;tag=9")
    assert message.from_addr.uri.user == "carol"
    message.headers.remove("From")
    with pytest.raises(ParseError):
        message.from_addr  # noqa: B018
    vias = message.vias
    message.set_top_via(Via("TCP", "proxy.example.com", 5060, (("branch", "z9hG4bKp"),)))
    assert [v.host for v in message.vias] == ["proxy.example.com"]
    assert message.top_via.branch == "z9hG4bKp" and vias[0].branch == "z9hG4bK776asdhds"
    message.headers.remove("Via")
    with pytest.raises(ParseError):
        message.top_via  # noqa: B018
    message.headers.add("Via", ",")
    with pytest.raises(ParseError):
        message.top_via  # noqa: B018


def test_views_of_messages_built_by_hand() -> None:
    message = Request("OPTIONS", parse_uri("sip:a@b"))
    with pytest.raises(ParseError):
        message.call_id  # noqa: B018
    message.headers.add("Call-ID", " x@y ")
    message.headers.add("CSeq", "7 OPTIONS")
    assert message.call_id == "x@y" and message.cseq.number == 7
    assert message.contacts == [] and message.routes == [] and message.content_type is None
    message.headers.add("Contact", "*")
    assert message.contacts == []  # REGISTER's wildcard
    message.headers.set("Contact", "<sip:a@b>")
    assert message.contacts[0].uri.host == "b"
    assert message.contacts[0] is message.contacts[0]  # cached


def test_base_message_has_no_start_line() -> None:
    with pytest.raises(NotImplementedError):
        Message().to_bytes()


# --- serialization --------------------------------------------------------------------------


def test_an_unchanged_message_goes_out_as_it_came_in() -> None:
    data = invite()
    message = parse_message(data)
    assert message.to_bytes() is data
    assert bytes(message) is data
    with_noise = parse_message(b"\r\n" + data + b"noise")
    assert with_noise.to_bytes() == data


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.headers.add("X-New", "1"),
        lambda m: setattr(m, "body", b"v=0\r\n"),
        lambda m: setattr(m, "uri", URI("sip", "carol", host="example.com")),
        lambda m: setattr(m, "method", "OPTIONS"),
    ],
)
def test_a_changed_message_is_rebuilt(change: object) -> None:
    message = parse_message(invite())
    change(message)  # type: ignore[operator]
    data = message.to_bytes()
    again = parse_message(data) if message.cseq.method == getattr(message, "method", "") else None
    assert data != invite()
    assert f"Content-Length: {len(message.body)}\r\n".encode() in data
    if again is not None:
        assert again.body == message.body


def test_messages_that_are_not_clean_are_rebuilt() -> None:
    folded = invite("Subject: a\r\n b")  # folding is legal SIP: it may go out as it came
    assert parse_message(folded).to_bytes() is folded
    assert parse_message(lf_only(invite())).to_bytes() is not lf_only(invite())
    padded = invite("Content-Length: 0" + str(len(SDP)), drop=("content-length",))
    assert parse_message(padded).to_bytes() != padded


def test_to_bytes_sets_content_length() -> None:
    message = Response(200, "OK", Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")]), b"hello")
    assert (
        message.to_bytes()
        == b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert Response(100, "Trying").to_bytes() == b"SIP/2.0 100 Trying\r\nContent-Length: 0\r\n\r\n"


# --- responses to requests ------------------------------------------------------------------


def test_create_response_copies_what_it_must() -> None:
    request = parse_message(
        invite("Record-Route: <sip:p1.example.com;lr>", "Timestamp: 54", "Subject: x")
    )
    assert isinstance(request, Request)
    ringing = request.create_response(180, to_tag="abc")
    names = [name for name, _ in ringing.headers]
    assert names == ["Via", "To", "From", "Call-ID", "CSeq", "Record-Route"]
    assert ringing.to_addr.tag == "abc" and ringing.reason == "Ringing"
    trying = request.create_response(100, to_tag="abc")
    assert trying.to_addr.tag is None
    assert trying.headers.get("timestamp") == "54"
    assert "record-route" not in trying.headers
    busy = request.create_response(486, "Not Now")
    assert busy.reason == "Not Now" and "record-route" not in busy.headers
    assert request.create_response(299).reason == "Unknown"
    tagged = parse_message(invite("To: <sip:bob@biloxi.example.com>;tag=x", drop=("to",)))
    assert isinstance(tagged, Request)
    assert tagged.create_response(200, to_tag="y").to_addr.tag == "x"


# --- extremes -------------------------------------------------------------------------------


def test_a_2_mb_message_is_too_large_at_once() -> None:
    data = invite(body=b"x" * (2 * 1024 * 1024))
    started = time.perf_counter()
    with pytest.raises(MessageTooLarge) as caught:
        parse_message(data)
    assert caught.value.status == 513
    header = invite("Subject: " + "x" * (2 * 1024 * 1024))
    with pytest.raises(MessageTooLarge):
        parse_message(header)
    assert time.perf_counter() - started < 0.5
    stream = StreamParser()
    stream.feed(header)
    assert isinstance(stream.next_item(), MessageTooLarge) and stream.broken


def test_limits_of_the_sections() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message(invite("Subject: " + "x" * MAX_HEADER_BYTES, body=b""))
    with pytest.raises(MessageTooLarge):
        parse_message(invite(body=b"x" * (MAX_BODY_BYTES + 1)))
    lines = [f"X-{i}: {i}" for i in range(MAX_HEADER_LINES)]
    with pytest.raises(MessageTooLarge):
        parse_message(invite(*lines))
    assert isinstance(parse_message(invite(*lines[: MAX_HEADER_LINES - 20])), Request)


def test_ten_thousand_header_lines_are_refused_in_well_under_100_ms() -> None:
    short = invite(*(["a:b"] * 10_000))  # 50 kB: within the byte limit, over the line limit
    long = invite(*[f"X-Header-{i}: value {i}" for i in range(10_000)])
    for data in (short, long):
        started = time.perf_counter()
        with pytest.raises(MessageTooLarge):
            parse_message(data)
        assert time.perf_counter() - started < 0.1
    stream = StreamParser()
    started = time.perf_counter()
    stream.feed(short)
    assert isinstance(stream.next_item(), MessageTooLarge)
    assert time.perf_counter() - started < 0.1


def test_many_folded_lines_cost_linear_time() -> None:
    data = invite("Subject: start" + "\r\n x" * 400)
    started = time.perf_counter()
    assert parse_message(data).headers.get("subject") == "start" + " x" * 400
    assert time.perf_counter() - started < 0.1


def test_nul_bytes() -> None:
    dropped(b"\x00" * 100)
    assert rejected(invite("Subject: \x00")).status == 400
    body = b"\x00\x01binary\x00"
    assert parse_message(invite(body=body)).body == body
    dropped(invite().replace(b"INVITE", b"INV\x00TE", 1))


# --- streams --------------------------------------------------------------------------------


def drain(parser: StreamParser) -> list[StreamItem]:
    items = []
    while (item := parser.next_item()) is not None:
        items.append(item)
    return items


def test_stream_one_byte_at_a_time() -> None:
    data = invite() + b"\r\n\r\n" + response()
    parser = StreamParser()
    items: list[StreamItem] = []
    for offset in range(len(data)):
        parser.feed(data[offset : offset + 1])
        items.extend(drain(parser))
    # The ping arrives in halves: the first CRLF counts as a pong (a sign of life), the
    # second completes the ping, which is reported so that it gets its answer.
    assert [type(item) for item in items] == [Request, KeepAlivePong, KeepAlivePing, Response]
    assert isinstance(items[0], Request) and items[0].body == SDP
    assert not parser.pending


def test_stream_pipelined_messages_in_one_read() -> None:
    parser = StreamParser()
    parser.feed(invite() + invite() + b"\r\n\r\n" + response() + b"\r\n")
    items = drain(parser)
    assert [type(item) for item in items] == [
        Request,
        Request,
        KeepAlivePing,
        Response,
        KeepAlivePong,
    ]
    assert parser.buffered == 0


def test_stream_waits_for_a_body_longer_than_what_arrived() -> None:
    parser = StreamParser()
    data = invite()
    parser.feed(data[:-10])
    assert parser.next_item() is None and parser.pending
    parser.feed(data[-10:])
    [message] = drain(parser)
    assert isinstance(message, Request) and message.body == SDP
    assert message.to_bytes() == data


def test_stream_keep_alives() -> None:
    parser = StreamParser()
    parser.feed(b"\r\n")
    assert isinstance(parser.next_item(), KeepAlivePong)
    parser.feed(b"\r")
    assert parser.next_item() is None and not parser.pending
    parser.feed(b"\n")
    assert isinstance(parser.next_item(), KeepAlivePing)  # completes the CRLF before it
    parser.feed(b"\r\n\r")
    assert parser.next_item() is None
    parser.feed(b"\n")
    assert isinstance(parser.next_item(), KeepAlivePing)
    parser.feed(b"\n\r\r\n" + invite())  # stray LF and CR before a message: skipped
    assert [type(item) for item in drain(parser)] == [KeepAlivePong, Request]


def test_stream_invalid_messages_keep_the_stream_going() -> None:
    parser = StreamParser()
    parser.feed(invite("CSeq: 1 BYE", drop=("cseq",)) + response("SIP/2.0 999 No") + invite())
    items = drain(parser)
    assert isinstance(items[0], PartialRequestError) and items[0].status == 400
    assert isinstance(items[1], ParseError) and not isinstance(items[1], FramingError)
    assert isinstance(items[2], Request)
    assert not parser.broken


@pytest.mark.parametrize(
    "data",
    [
        invite("Content-Length: -1", drop=("content-length",)),
        invite("Content-Length: 1"),
        invite("Content-Length: 300000", drop=("content-length",)),
    ],
)
def test_stream_framing_errors_end_the_stream(data: bytes) -> None:
    parser = StreamParser()
    parser.feed(data + invite())
    [error] = drain(parser)
    assert isinstance(error, FramingError | MessageTooLarge)
    assert parser.broken and parser.buffered == 0
    parser.feed(invite())
    assert parser.next_item() is None and parser.buffered == 0


def test_stream_drops_a_section_that_is_no_message_and_goes_on() -> None:
    parser = StreamParser()
    parser.feed(b"not a message\r\n\r\n" + invite())
    error, message = drain(parser)
    assert isinstance(error, ParseError) and not isinstance(error, FramingError)
    assert isinstance(message, Request) and not parser.broken


def test_stream_header_section_too_large() -> None:
    parser = StreamParser()
    parser.feed(b"INVITE sip:a@b SIP/2.0\r\nSubject: " + b"x" * MAX_HEADER_BYTES)
    assert isinstance(parser.next_item(), MessageTooLarge)


def test_stream_without_content_length_has_no_body() -> None:
    parser = StreamParser()
    parser.feed(invite(drop=("content-length",), body=b""))
    [message] = drain(parser)
    assert isinstance(message, Request) and message.body == b""


def test_stream_lf_only_messages() -> None:
    parser = StreamParser()
    parser.feed(lf_only(invite()))
    [message] = drain(parser)
    assert isinstance(message, Request)


def test_stream_of_one_byte_at_a_time_is_linear() -> None:
    data = invite(*[f"X-Header-{i}: {'v' * 100}" for i in range(400)])
    parser = StreamParser()
    started = time.perf_counter()
    for offset in range(len(data)):
        parser.feed(data[offset : offset + 1])
        parser.next_item()
    assert time.perf_counter() - started < 2.0  # 48 kB; quadratic rescanning would take minutes
    assert not parser.pending


# --- the memo of parsed values ----------------------------------------------------------------


def test_memo_is_bounded_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(address_module, "MEMO_SIZE", 3)
    monkeypatch.setattr(address_module, "_MEMO", {})
    for user in "abcde":
        address_module.parse_address(f"<sip:{user}@example.com>")
    assert len(address_module._MEMO) <= 3
    same = address_module.parse_address("<sip:e@example.com>")
    assert address_module.parse_address("<sip:e@example.com>") is same
    monkeypatch.setattr(address_module, "MEMO_SIZE", 0)
    monkeypatch.setattr(address_module, "_MEMO", {})
    first = address_module.parse_address("<sip:f@example.com>")
    assert address_module.parse_address("<sip:f@example.com>") is not first
    assert first == address_module.parse_address("<sip:f@example.com>")


def test_lookup_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(head_parser, "_NAMES_MAX", 0)
    monkeypatch.setattr(head_parser, "_NAMES", {})
    monkeypatch.setattr(head_parser, "_METHODS", set())
    monkeypatch.setattr(headers, "_CANONICAL_CACHE", {f"x{i}": "x" for i in range(4096)})
    data = invite(
        "CSeq: 1 NEWMETHOD", "X-Brand-New: 1", start="NEWMETHOD sip:a@b SIP/2.0", drop=("cseq",)
    )
    message = parse_message(data)
    assert head_parser._NAMES == {} and set() == head_parser._METHODS
    assert message.headers.get("x-brand-new") == "1"
    monkeypatch.setattr(address_module, "MEMO_SIZE", 1)
    monkeypatch.setattr(head_parser, "_URI_MEMO", {})
    for user in "abc":
        parse_message(invite(start=f"INVITE sip:{user}@example.com SIP/2.0"))
    assert list(head_parser._URI_MEMO) == ["sip:c@example.com"]


def test_cseq_parsing() -> None:
    assert parse_cseq(" 42 \tOPTIONS ") == CSeq(42, "OPTIONS")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    with pytest.raises(ParseError):
        parse_cseq("2147483648 INVITE")


# --- WebSocket messages (RFC 7118) ---------------------------------------------------------------


def test_ws_message_keepalives_are_ping_and_pong() -> None:
    assert parse_ws_message(b"\r\n\r\n") == KeepAlivePing()
    assert parse_ws_message(b"\r\n") == KeepAlivePong()


def test_ws_message_is_one_whole_message_like_a_datagram() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n"
        b"From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 2\r\n\r\nhi"
    )
    item = parse_ws_message(data)
    assert isinstance(item, Request) and item.body == b"hi"
    short = parse_ws_message(data.replace(b"Content-Length: 2", b"Content-Length: 9"))
    assert isinstance(short, PartialRequestError) and short.status == 400
    garbage = parse_ws_message(b"\x01garbage\r\n\r\n")
    assert isinstance(garbage, ParseError) and not isinstance(garbage, PartialRequestError)
