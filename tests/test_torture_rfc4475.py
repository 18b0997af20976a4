"""RFC 4475 torture messages against the parser: tests/data/rfc4475/ (see manifest.toml there).

Valid messages parse and survive serialize -> parse unchanged; invalid ones raise ParseError —
a PartialRequestError with the right status when the request can be answered — and nothing else
ever escapes. The same vectors then go through the stream parser, whole and one byte at a time.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest

from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Message, Request, Response
from callkeeper.sip.parser import (
    FramingError,
    KeepAlivePing,
    PartialRequestError,
    StreamItem,
    StreamParser,
    parse_message,
)

DATA = Path(__file__).parent / "data" / "rfc4475"
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads((DATA / "manifest.toml").read_text())
NAMES = list(MANIFEST)


def _load_builder() -> Any:
    spec = importlib.util.spec_from_file_location("rfc4475_build", DATA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vector(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def test_vectors_are_the_decoded_rfc_text() -> None:
    """The .dat files are exactly what messages.txt says, and every RFC message is there."""
    messages = _load_builder().load()
    assert len(messages) == 49
    assert set(messages) == set(MANIFEST) == {path.stem for path in DATA.glob("*.dat")}
    for name, (section, data) in messages.items():
        assert vector(name) == data, f"{name}.dat is stale: run tests/data/rfc4475/build.py"
        assert MANIFEST[name]["section"] == section


def test_builder_decodes_the_rfc_notation(tmp_path: Path) -> None:
    source = tmp_path / "m.txt"
    source.write_text(
        "ignored\n--- x 1.2\n<allOneLine>\nA<repeat count=3>b</repeat>\nc<hex>00ff</hex>\n"
        "</allOneLine>\nSIP/2.0 100<hex>20</hex>\n\n--- end\n"
    )
    assert _load_builder().load(source) == {"x": ("1.2", b"Abbbc\x00\xff\r\nSIP/2.0 100 \r\n\r\n")}


@pytest.mark.parametrize(
    "text",
    [
        "--- x 1\na \n--- end\n",  # trailing white space
        "--- x 1\n<allOneLine>\n<allOneLine>\n--- end\n",
        "--- x 1\n</allOneLine>\n--- end\n",
        "--- x 1\n<allOneLine>\na\n--- end\n",
        "--- x 1\na\n",
        "--- x 1\n--- end\n--- x 1\n--- end\n",
    ],
)
def test_builder_refuses_malformed_sources(tmp_path: Path, text: str) -> None:
    source = tmp_path / "m.txt"
    source.write_text(text)
    with pytest.raises(ValueError):
        _load_builder().load(source)


def test_manifest_is_consistent() -> None:
    for name, entry in MANIFEST.items():
        assert entry["rfc"] in ("valid", "invalid"), name
        assert entry["kind"] in ("request", "response"), name
        assert entry["parser"] in ("parse", "reject", "drop"), name
        assert ("status" in entry) == (entry["parser"] == "reject"), name
        assert entry["expect"], name
        if entry["section"].startswith("3.1.1"):
            assert entry["rfc"] == "valid" and entry["parser"] == "parse", name
        if entry["section"].startswith("3.1.2"):
            assert entry["rfc"] == "invalid" and entry["parser"] != "parse", name
        if entry["parser"] == "drop":
            assert entry.get("responses") == [], name


def _same(first: Message, second: Message) -> None:
    assert type(first) is type(second)
    if isinstance(first, Request):
        assert isinstance(second, Request)
        assert (first.method, str(first.uri), first.version) == (
            second.method,
            str(second.uri),
            second.version,
        )
        assert first.uri == second.uri
    else:
        assert isinstance(first, Response) and isinstance(second, Response)
        assert (first.status, first.reason) == (second.status, second.reason)
    assert first.headers == second.headers
    assert first.body == second.body


@pytest.mark.parametrize("name", NAMES)
def test_datagram(name: str) -> None:
    entry = MANIFEST[name]
    data = vector(name)
    outcome = entry["parser"]
    try:
        message = parse_message(data)
    except PartialRequestError as error:
        assert outcome == "reject", f"{name}: rejected ({error.status} {error.reason})"
        assert error.status == entry["status"], error.reason
        assert entry["kind"] == "request"
        # Whatever was read can be answered: the response copies Via/From/To/Call-ID/CSeq.
        response = error.request.create_response(error.status, to_tag="t1")
        assert response.status == error.status
        assert response.headers.get_lines("via") == error.request.headers.get_lines("via")
        assert response.to_bytes().startswith(f"SIP/2.0 {error.status} ".encode())
        return
    except ParseError as error:
        assert outcome == "drop", f"{name}: dropped ({error.status} {error.reason})"
        return
    assert outcome == "parse", f"{name}: parsed, expected {outcome}"
    assert isinstance(message, Request if entry["kind"] == "request" else Response)
    reparsed = parse_message(message.to_bytes())
    _same(message, reparsed)
    _same(reparsed, parse_message(reparsed.to_bytes()))


def test_parsed_views_of_the_valid_messages() -> None:
    """A few facts the RFC spells out about the valid messages, checked on the parsed views."""
    wsinv = parse_message(vector("wsinv"))
    assert [(via.transport, via.host, via.branch) for via in wsinv.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert wsinv.to_addr.tag == "1918181833n"
    assert wsinv.from_addr.tag == "98asjd8"
    assert wsinv.from_addr.display_name == '"J Rosenberg \\\\\\""'
    assert (wsinv.cseq.number, wsinv.cseq.method) == (9, "INVITE")
    assert wsinv.headers.get("max-forwards") == "0068"
    assert wsinv.headers.get("subject") == ""
    assert wsinv.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert wsinv.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    [contact] = wsinv.contacts
    assert contact.param("q") == "0.33" and contact.has_param("secondparam")
    assert wsinv.routes[0].uri.has_param("unknown-no-value")
    assert len(wsinv.body) == 150

    intmeth = parse_message(vector("intmeth"))
    assert isinstance(intmeth, Request)
    assert intmeth.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert intmeth.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert intmeth.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert intmeth.to_addr.display_name == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert intmeth.from_addr.param("fromParam''~+*_!.-%") == '"работающий"'
    assert intmeth.from_addr.tag == "_token~1'+`*%!-."
    assert intmeth.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert intmeth.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"

    esc01 = parse_message(vector("esc01"))
    assert isinstance(esc01, Request)
    assert esc01.uri.aor == "sip:sips:user@example.com@example.net"
    assert esc01.to_addr.uri.aor == "sip:user@example.com"
    assert esc01.contacts[0].uri.param("n%61me") == "v%61lue%25%34%31"

    escnull = parse_message(vector("escnull"))
    assert [c.uri.aor for c in escnull.contacts] == [
        "sip:\x00@host5.example.com",
        "sip:\x00\x00@host5.example.com",
    ]
    assert escnull.to_addr.uri.aor == "sip:null-\x00-null@example.com"

    esc02 = parse_message(vector("esc02"))
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    assert [c.uri.user for c in esc02.contacts] == ["alias1", "alias3"]
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"

    assert parse_message(vector("lwsdisp")).from_addr.display_name == "caller"

    longreq = parse_message(vector("longreq"))
    assert len(longreq.vias) == 34
    assert longreq.to_addr.uri.port == 6000

    dblreq = parse_message(vector("dblreq"))
    assert isinstance(dblreq, Request) and dblreq.method == "REGISTER" and dblreq.body == b""

    semiuri = parse_message(vector("semiuri"))
    assert isinstance(semiuri, Request)
    assert semiuri.uri.user == "user;par=u%40example.net" and semiuri.uri.params == ()
    assert len(semiuri.headers.get_list("accept")) == 6

    transports = parse_message(vector("transports"))
    assert [via.transport for via in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert transports.call_id == "transports.kijh4akdnaqjkwendsasfdj"

    mpart01 = parse_message(vector("mpart01"))
    assert len(mpart01.body) == 553 and b"\x00" in mpart01.body and b"\r\n--7a9c" in mpart01.body
    assert mpart01.top_via.has_param("rport")

    unreason = parse_message(vector("unreason"))
    assert isinstance(unreason, Response)
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"

    noreason = parse_message(vector("noreason"))
    assert isinstance(noreason, Response) and (noreason.status, noreason.reason) == (100, "")
    assert noreason.to_bytes().startswith(b"SIP/2.0 100 \r\n")

    badbranch = parse_message(vector("badbranch"))
    assert badbranch.top_via.branch == "z9hG4bK"

    unksm2 = parse_message(vector("unksm2"))
    assert (unksm2.to_addr.uri.scheme, unksm2.to_addr.uri.opaque) == ("isbn", "2983792873")
    assert str(unksm2.from_addr.uri) == "http://www.example.com"
    assert not unksm2.contacts[0].uri.is_sip

    cparam01 = parse_message(vector("cparam01"))
    [binding] = cparam01.contacts
    assert binding.has_param("unknownparam") and binding.uri.params == ()
    cparam02 = parse_message(vector("cparam02"))
    [binding] = cparam02.contacts
    assert not binding.has_param("unknownparam") and binding.uri.has_param("unknownparam")
    regescrt = parse_message(vector("regescrt"))
    assert regescrt.contacts[0].uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)

    zeromf = parse_message(vector("zeromf"))
    assert zeromf.headers.get("max-forwards") == "0"

    inv2543 = parse_message(vector("inv2543"))
    assert inv2543.top_via.branch is None and inv2543.from_addr.tag is None
    assert "max-forwards" not in inv2543.headers and len(inv2543.body) == 105


def test_rejected_requests_keep_what_was_read() -> None:
    with pytest.raises(PartialRequestError) as caught:
        parse_message(vector("ltgtruri"))
    assert str(caught.value.request.uri) == "<sip:user@example.com>"
    assert caught.value.request.start_line() == "INVITE <sip:user@example.com> SIP/2.0"
    with pytest.raises(PartialRequestError) as caught:
        parse_message(vector("quotbal"))
    response = caught.value.request.create_response(400, to_tag="x")
    assert response.headers.get("to") == '"Mr. J. User <sip:j.user@example.com>'  # no tag added
    with pytest.raises(PartialRequestError) as caught:
        parse_message(vector("badvers"))
    assert caught.value.request.version == "SIP/7.0"


# --- the same vectors over a stream ---------------------------------------------------------

# What differs from a datagram: a stream frames by Content-Length alone. clerr waits for its
# missing body; inv2543 (no Content-Length) gets an empty body and its SDP waits to become a
# message; dblreq's trailing octets are a CRLF (a pong) and a second message, whose body is one
# octet longer than its Content-Length says: the leftover "C" is dropped; ncl and mcl01 leave
# nothing to frame by. (outcomes, still pending afterwards)
STREAM_OUTCOMES = {
    "clerr": ([], True),
    "dblreq": (["message", "pong", "message", "drop"], False),
    "inv2543": (["message"], True),
    "ncl": (["framing"], False),
    "mcl01": (["framing"], False),
}


def _outcome(item: StreamItem) -> str:
    if isinstance(item, Message):
        return "message"
    if isinstance(item, FramingError):
        return "framing"
    if isinstance(item, PartialRequestError):
        return "reject"
    if isinstance(item, ParseError):
        return "drop"
    return "ping" if isinstance(item, KeepAlivePing) else "pong"


def _drain(parser: StreamParser) -> list[str]:
    outcomes = []
    while (item := parser.next_item()) is not None:
        outcomes.append(_outcome(item))
    return outcomes


def _expected_on_stream(name: str) -> tuple[list[str], bool]:
    if name in STREAM_OUTCOMES:
        return STREAM_OUTCOMES[name]
    return [
        {"parse": "message", "reject": "reject", "drop": "drop"}[MANIFEST[name]["parser"]]
    ], False


@pytest.mark.parametrize("name", NAMES)
def test_stream(name: str) -> None:
    data = vector(name)
    expected, pending = _expected_on_stream(name)
    whole = StreamParser()
    whole.feed(data)
    assert (_drain(whole), whole.pending) == (expected, pending)

    trickled = StreamParser()
    outcomes = []
    for offset in range(len(data)):
        trickled.feed(data[offset : offset + 1])
        outcomes.extend(_drain(trickled))
    assert (outcomes, trickled.pending) == (expected, pending)


def test_all_vectors_pipelined_on_one_stream_with_pings() -> None:
    """Every stream-safe vector back to back, a ping between each, in one read."""
    names = [name for name in NAMES if name not in STREAM_OUTCOMES]
    parser = StreamParser()
    parser.feed(b"\r\n\r\n".join(vector(name) for name in names))
    items = []
    while (item := parser.next_item()) is not None:
        items.append(item)
    assert sum(isinstance(item, KeepAlivePing) for item in items) == len(names) - 1
    outcomes = [_outcome(item) for item in items if not isinstance(item, KeepAlivePing)]
    assert outcomes == [_expected_on_stream(name)[0][0] for name in names]
    assert not parser.pending and parser.buffered == 0
