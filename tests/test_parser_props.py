"""Property tests: generated valid URIs, addresses, Vias and messages survive parse∘serialize.

The strategies build values from the RFC 3261 grammar (§25.1) — tokens, escaped user parts,
hostnames, IPv4 and IPv6 references, quoted strings with quoted-pairs, parameters with and
without values — so the parser is checked against what the grammar allows, not only against the
examples someone thought of.
"""

from __future__ import annotations

import ipaddress
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callkeeper.sip import address as address_module
from callkeeper.sip.address import parse_address
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import Message, Request, Response
from callkeeper.sip.parser import StreamParser, parse_message
from callkeeper.sip.uri import parse_uri
from callkeeper.sip.via import parse_via

# A few seconds in all (`make test` stays fast); no example database written into the tree.
FAST = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SLOW = settings(FAST, max_examples=40)  # whole messages take longer to generate

ALNUM = string.ascii_letters + string.digits
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
UNRESERVED = ALNUM + "-_.!~*'()"


def chars(alphabet: str, min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=min_size, max_size=max_size)


def escaped_text(alphabet: str, min_size: int = 1) -> st.SearchStrategy[str]:
    """Characters of `alphabet` mixed with %HEX HEX escapes."""
    escape = st.integers(0, 255).map(lambda n: f"%{n:02X}")
    return st.lists(st.sampled_from(alphabet) | escape, min_size=min_size, max_size=10).map("".join)


tokens = chars(TOKEN_CHARS)
label = st.builds(
    lambda first, middle, last: first + middle + last if middle or last else first,
    st.sampled_from(ALNUM),
    chars(ALNUM + "-", 0, 6),
    st.sampled_from(ALNUM) | st.just(""),
).filter(lambda text: not text.endswith("-"))
toplabel = st.builds(
    lambda first, rest: first + rest, st.sampled_from(string.ascii_letters), label | st.just("")
)
hostnames = st.builds(
    lambda labels, top: "".join(f"{x}." for x in labels) + top,
    st.lists(label, max_size=3),
    toplabel,
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n)}]")
hosts = hostnames | ipv4 | ipv6
ports = st.none() | st.integers(1, 65535)
users = escaped_text(UNRESERVED + "&=+$,;?/")
passwords = st.none() | escaped_text(UNRESERVED + "&=+$,", min_size=0)
PARAMCHARS = UNRESERVED + "[]/:&+$"
uri_params = st.lists(
    st.tuples(escaped_text(PARAMCHARS), st.none() | escaped_text(PARAMCHARS)), max_size=3
)
HNVCHARS = UNRESERVED + "[]/?:+$"
uri_headers = st.lists(
    st.tuples(escaped_text(HNVCHARS), escaped_text(HNVCHARS, min_size=0)), max_size=2
)


@st.composite
def sip_uris(draw: st.DrawFn, with_headers: bool = True) -> tuple[str, dict[str, object]]:
    parts = {
        "scheme": draw(st.sampled_from(["sip", "sips"])),
        "user": draw(st.none() | users),
        "host": draw(hosts),
        "port": draw(ports),
        "params": tuple(draw(uri_params)),
        "headers": tuple(draw(uri_headers)) if with_headers else (),
    }
    parts["password"] = draw(passwords) if parts["user"] is not None else None
    text = f"{parts['scheme']}:"
    if parts["user"] is not None:
        text += str(parts["user"])
        if parts["password"] is not None:
            text += f":{parts['password']}"
        text += "@"
    text += str(parts["host"])
    if parts["port"] is not None:
        text += f":{parts['port']}"
    for name, value in parts["params"]:  # type: ignore[attr-defined]
        text += f";{name}" if value is None else f";{name}={value}"
    if parts["headers"]:
        text += "?" + "&".join(f"{name}={value}" for name, value in parts["headers"])  # type: ignore[attr-defined]
    return text, parts


@given(sip_uris())
@FAST
def test_sip_uris_round_trip(generated: tuple[str, dict[str, object]]) -> None:
    text, parts = generated
    uri = parse_uri(text)
    assert {name: getattr(uri, name) for name in parts} == parts
    assert str(uri) == text
    assert parse_uri(str(uri.replace())) == uri


quoted_strings = st.lists(
    st.sampled_from(list(" !#$%&'()*+,-./:;<=>?@[]^_`{|}~" + ALNUM + "äß€"))
    | st.sampled_from(['\\"', "\\\\"]),
    max_size=12,
).map(lambda parts: '"' + "".join(parts) + '"')
displays = st.none() | quoted_strings | st.lists(tokens, min_size=1, max_size=3).map(" ".join)
gen_values = st.none() | tokens | quoted_strings | ipv6
header_params = st.lists(st.tuples(tokens, gen_values), max_size=3)


@st.composite
def addresses(draw: st.DrawFn) -> tuple[str, str | None, str, tuple[tuple[str, str | None], ...]]:
    uri_text, parts = draw(sip_uris(with_headers=draw(st.booleans())))
    display = draw(displays)
    params = tuple(draw(header_params))
    # RFC 3261 §20.10: a URI with a comma, question mark or semicolon anywhere (the user, the
    # password, params, headers) must be in angle brackets.
    plain = not parts["params"] and not parts["headers"] and not any(c in uri_text for c in ";?,")
    spaced = " " if display and draw(st.booleans()) else ""
    if display is None and plain and draw(st.booleans()):
        text = uri_text  # addr-spec
    else:
        text = f"{display or ''}{spaced}<{uri_text}>"
    text += "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)
    return text, display, uri_text, params


@given(addresses())
@FAST
def test_addresses_round_trip(
    generated: tuple[str, str | None, str, tuple[tuple[str, str | None], ...]],
) -> None:
    text, display, uri_text, params = generated
    for memo in (address_module.MEMO_SIZE, 0):  # parsed afresh, and served from the memo
        address = parse_address(text)
        assert (address.display_name, str(address.uri), address.params) == (
            display,
            uri_text,
            params,
        )
        assert str(address) == text
        again = parse_address(str(address.replace()))
        assert (again.display_name, again.uri, again.params) == (display, address.uri, params)
        address_module.MEMO_SIZE = memo
    address_module.MEMO_SIZE = 4096


transports = st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"])
branches = chars(TOKEN_CHARS).map(lambda text: "z9hG4bK" + text)


@st.composite
def vias(draw: st.DrawFn) -> tuple[str, str, str, int | None, tuple[tuple[str, str | None], ...]]:
    transport, host, port = draw(transports), draw(hosts), draw(ports)
    params = (
        ("branch", draw(branches)),
        *draw(
            st.lists(
                st.tuples(
                    tokens.filter(lambda t: t.lower() not in ("branch", "rport", "ttl")),
                    st.none() | tokens,
                ),
                max_size=2,
            )
        ),
    )
    hostport = host if port is None else f"{host}:{port}"
    text = f"SIP/2.0/{transport} {hostport}" + "".join(
        f";{k}" if v is None else f";{k}={v}" for k, v in params
    )
    return text, transport, host, port, params


@given(vias())
@FAST
def test_vias_round_trip(
    generated: tuple[str, str, str, int | None, tuple[tuple[str, str | None], ...]],
) -> None:
    text, transport, host, port, params = generated
    via = parse_via(text)
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port, params)
    assert str(via) == text
    assert parse_via(str(via.with_params(rport="1"))).param("rport") == "1"


words = chars(ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}")
header_names = tokens.filter(lambda name: name.lower() not in _SPECIAL)
header_values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    max_size=30,
).map(str.strip)
_SPECIAL = {
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "content-length", "l",
    "max-forwards", "expires", "contact", "m", "route", "record-route", "date", "content-type", "c",
}  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> Message:
    headers = Headers()
    for _ in range(draw(st.integers(1, 3))):
        headers.add(
            draw(st.sampled_from(["Via", "v"])),
            ", ".join(t[0] for t in draw(st.lists(vias(), min_size=1, max_size=2))),
        )
    headers.add("From", draw(addresses())[0])
    headers.add("To", draw(addresses())[0])
    call_id = draw(words) + (draw(st.none() | words.map(lambda w: "@" + w)) or "")
    headers.add(draw(st.sampled_from(["Call-ID", "i"])), call_id)
    method = draw(tokens)
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    if draw(st.booleans()):
        headers.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for _ in range(draw(st.integers(0, 2))):
        headers.add("Contact", draw(addresses())[0])
    for _ in range(draw(st.integers(0, 4))):
        headers.add(draw(header_names), draw(header_values))
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        uri = parse_uri(draw(sip_uris(with_headers=False))[0])
        return Request(method, uri, headers, body)
    reason = draw(header_values)
    return Response(draw(st.integers(100, 699)), reason, headers, body)


def same(first: Message, second: Message) -> None:
    assert type(first) is type(second)
    if isinstance(first, Request) and isinstance(second, Request):
        assert (first.method, first.uri, str(first.uri)) == (
            second.method,
            second.uri,
            str(second.uri),
        )
    if isinstance(first, Response) and isinstance(second, Response):
        assert (first.status, first.reason) == (second.status, second.reason)
    assert first.headers == second.headers
    assert first.body == second.body


@given(messages())
@SLOW
def test_messages_round_trip(message: Message) -> None:
    data = message.to_bytes()
    parsed = parse_message(data)
    same(message, parsed)
    assert parsed.to_bytes() == data
    assert [str(via) for via in parsed.vias] == [str(via) for via in message.vias]
    assert (parsed.from_addr, parsed.to_addr, parsed.cseq) == (
        message.from_addr,
        message.to_addr,
        message.cseq,
    )


@given(messages(), st.lists(st.integers(1, 40), min_size=1, max_size=50))
@SLOW
def test_messages_over_a_stream_in_any_chunks(message: Message, chunks: list[int]) -> None:
    data = message.to_bytes()
    stream = b"\r\n\r\n" + data + data
    parser = StreamParser()
    items = []
    position = 0
    sizes = iter(chunks * (len(stream) // len(chunks) + 1))
    while position < len(stream):
        size = next(sizes)
        parser.feed(stream[position : position + size])
        position += size
        while (item := parser.next_item()) is not None:
            items.append(item)
    parsed = [item for item in items if isinstance(item, Message)]
    assert len(parsed) == 2
    for item in parsed:
        same(message, item)
    assert not parser.pending
