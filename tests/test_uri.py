"""URIs, addresses and Via values: parsing, serializing, comparing (RFC 3261 §19.1, §20)."""

from __future__ import annotations

import pytest

from callkeeper.sip.address import Address, format_params, is_token, parse_address, parse_params
from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import URI, parse_uri, split_hostport, valid_host
from callkeeper.sip.via import Via, parse_via, via_sent_by


def test_sip_uri_parts() -> None:
    uri = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5061,
    )
    assert uri.params == (("transport", "tls"), ("lr", None))
    assert uri.headers == (("subject", "hi"), ("x", ""))
    assert uri.is_sip and uri.transport == "tls" and uri.hostport == "[2001:db8::1]:5061"
    assert str(uri) == "sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x="


@pytest.mark.parametrize(
    "text",
    [
        "sip:example.com",
        "SIP:Example.COM.",
        "sip:192.0.2.1:5060",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:%61lice@atlanta.com;%6C%72",
        "sip:host-with-dash.a1.example.com",
        "sip:a.b.c.d.e.f.g",
        "sip:[::1]",
        "sip:[::ffff:192.0.2.1]:5060",
        "sip:u@h;maddr=239.255.255.1;ttl=15;method=REGISTER",
        "sip:u:@h",
        "tel:+358-555-1234567;postd=pp22",
        "tel:911",
        "tel:+1234;enum-dip;isub=5",
    ],
)
def test_valid_uris_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    rebuilt = uri.replace()
    assert parse_uri(str(rebuilt)) == uri


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        ":x",
        "sip:",
        "sip:@host",
        "sip:host:",
        "sip:host:65536",
        "sip:host:999999999999999999999",
        "sip:host name",
        "sip:-host.com",
        "sip:host.-com",
        "sip:host.123",
        "sip:1.2.3.256",
        "sip:[::1",
        "sip:[1::2::3]",
        "sip:[::g]",
        "sip:host;=x",
        "sip:host;a=",
        "sip:host?",
        "sip:host?=x",
        "sip:us er@host",
        "sip:user@ho@st",
        "sip:host;a=b c",
        "tel:",
        "tel:xyz",
        "tel:+1;=x",
        "tel:+1;a=b c",
        "tel:+1;a=<",
        "tel:+1;<",
        "1http://x",
        "http:",
        "http://a b",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_uri(text, any_scheme=True)
    assert caught.value.status == 400


def test_other_schemes() -> None:
    with pytest.raises(ParseError) as caught:
        parse_uri("mailto:bob@example.com")
    assert caught.value.status == 416
    uri = parse_uri("urn:service:sos", any_scheme=True)
    assert (uri.scheme, uri.opaque, uri.aor, uri.is_sip) == (
        "urn",
        "service:sos",
        "urn:service:sos",
        False,
    )
    assert str(uri.replace()) == "urn:service:sos"
    assert uri == parse_uri("URN:service:sos", any_scheme=True)
    assert uri != parse_uri("urn:service:sos.police", any_scheme=True)
    assert hash(uri) == hash(parse_uri("URN:service:sos", any_scheme=True))


def test_uri_helpers() -> None:
    uri = parse_uri("sip:Alice%40home@Atlanta.COM:5060;Transport=TCP;lr")
    assert uri.param("transport") == "TCP" and uri.param("missing", "d") == "d"
    assert uri.has_param("LR") and not uri.has_param("maddr")
    assert uri.transport == "tcp"
    assert uri.aor == "sip:Alice@home@atlanta.com"
    assert parse_uri("sip:atlanta.com").aor == "sip:atlanta.com"
    assert parse_uri("tel:+123").aor == "tel:+123"
    assert parse_uri("sip:a@b").transport == "udp" and parse_uri("sips:a@b").transport == "tls"
    changed = uri.with_param("transport", "udp").without_param("lr")
    assert str(changed) == "sip:Alice%40home@Atlanta.COM:5060;transport=udp"
    assert str(URI("sip", host="h", headers=(("a", "b"),))) == "sip:h?a=b"
    assert str(URI("tel", user="+1", params=(("ext", "2"),))) == "tel:+1;ext=2"
    assert str(URI("tel")) == "tel:"


def test_uri_comparison() -> None:
    assert parse_uri("sip:%61lice@ATLANTA.com") == parse_uri("sip:alice@atlanta.com")
    assert parse_uri("sip:a@b;transport=TCP") == parse_uri("sip:a@b;TRANSPORT=tcp")
    assert parse_uri("sip:a@b;x=1") == parse_uri("sip:a@b")  # other params: only if in both
    assert parse_uri("sip:a@b;x=1") != parse_uri("sip:a@b;x=2")
    assert parse_uri("sip:a@b;transport=tcp") != parse_uri("sip:a@b")
    assert parse_uri("sip:a@b") != parse_uri("sips:a@b")
    assert parse_uri("sip:a@b") != parse_uri("sip:a@c")
    assert parse_uri("sip:a@b") != parse_uri("sip:c@b")
    assert parse_uri("sip:a:x@b") != parse_uri("sip:a@b")
    assert parse_uri("sip:a@b:5060") != parse_uri("sip:a@b")
    assert parse_uri("sip:a@b?x=1&y=2") == parse_uri("sip:a@b?y=2&x=1")
    assert parse_uri("sip:a@b?x=1") != parse_uri("sip:a@b")
    assert parse_uri("sip:a@b") != "sip:a@b"
    assert hash(parse_uri("sip:%61@B")) == hash(parse_uri("sip:a@b"))


def test_hosts() -> None:
    assert split_hostport("example.com") == ("example.com", None)
    assert split_hostport("example.com:5060") == ("example.com", 5060)
    assert split_hostport("[::1]:5061") == ("[::1]", 5061)
    for bad in ("[::1", "[::1]x", "host:", "host:x", "host:\u0665", "[::1]:70000", "bad_host"):
        with pytest.raises(ParseError):
            split_hostport(bad)
    assert (
        valid_host("a.b") and valid_host("[::1]") and not valid_host("[zz]") and not valid_host("")
    )


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ("<sip:a@b>", None, "sip:a@b", ()),
        ("sip:a@b", None, "sip:a@b", ()),
        ("sip:a@b;tag=x", None, "sip:a@b", (("tag", "x"),)),
        ("sip:a@b:5060 ;tag=x", None, "sip:a@b:5060", (("tag", "x"),)),
        ("Alice <sip:a@b;lr>;tag=x", "Alice", "sip:a@b;lr", (("tag", "x"),)),
        ("Alice  Smith<sip:a@b>", "Alice  Smith", "sip:a@b", ()),
        ('"Alice \\"A\\" <x>;y" <sip:a@b>', '"Alice \\"A\\" <x>;y"', "sip:a@b", ()),
        ('""<sip:a@b>', '""', "sip:a@b", ()),
        ("<tel:+1234>;x", None, "tel:+1234", (("x", None),)),
        ("<urn:service:sos>", None, "urn:service:sos", ()),
        ("mailto:a@b;q=1", None, "mailto:a@b", (("q", "1"),)),
        ('<sip:a@b>;+sip.instance="<urn:uuid:1;2>";reg-id=1', None, "sip:a@b",
         (("+sip.instance", '"<urn:uuid:1;2>"'), ("reg-id", "1"))),
        ('sip:a@b;+sip.instance="<urn:x>"', None, "sip:a@b", (("+sip.instance", '"<urn:x>"'),)),
        ("<sip:a@b> ; q = 0.5 ; flag", None, "sip:a@b", (("q", "0.5"), ("flag", None))),
        ("<sip:a@b>;received=2001:db8::1", None, "sip:a@b", (("received", "2001:db8::1"),)),
        ("<sip:a@b>;maddr=[2001:db8::1]", None, "sip:a@b", (("maddr", "[2001:db8::1]"),)),
    ],
)  # fmt: skip
def test_addresses(
    text: str, display: str | None, uri: str, params: tuple[tuple[str, str | None], ...]
) -> None:
    address = parse_address(text)
    assert (address.display_name, str(address.uri), address.params) == (display, uri, params)
    assert str(address) == text.strip()
    again = parse_address(str(address.replace()))
    assert (again.display_name, again.uri, again.params) == (display, address.uri, params)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "<sip:a@b",
        "<>",
        "< sip:a@b>",
        "Bell, Alexander <sip:a@b>",
        '"unterminated <sip:a@b>',
        "<sip:a@b> x",
        "<sip:a@b>;",
        "<sip:a@b>;a=",
        "<sip:a@b>;a=b c",
        '<sip:a@b>;a="unterminated',
        "sip:a@b?x=y",
        "sip:a,b@c",
        "sip:a b@c",
        "<sip:a@[::1::]>",
        "sip:a@[::1::]",
        "<bogus>",
        "bogus",
        "http://a b",
        "<sip:a@b:99999>",
    ],
)
def test_malformed_addresses(text: str) -> None:
    with pytest.raises(ParseError):
        parse_address(text)


def test_address_helpers() -> None:
    address = parse_address("Bob <sip:b@c>;Tag=1;expires=60")
    assert address.tag == "1" and address.param("EXPIRES") == "60" and address.param("x") is None
    assert address.has_param("tag") and not address.has_param("q")
    assert str(address.with_tag("2")) == "Bob <sip:b@c>;expires=60;tag=2"
    assert str(address.replace(display_name=None)) == "<sip:b@c>;Tag=1;expires=60"
    assert str(Address(parse_uri("sip:x@y"))) == "<sip:x@y>"
    assert format_params((("a", None), ("b", "1"))) == ";a;b=1"
    assert parse_params("") == () and parse_params(" ;a ; b=c ") == (("a", None), ("b", "c"))
    assert is_token("abc-1.!%*_+`'~") and not is_token("a b")


# --- Via ------------------------------------------------------------------------------------


def test_via() -> None:
    via = parse_via(
        "SIP / 2.0 / udp  host.example.com : 5060 ;branch=z9hG4bK1;rport;received=1.2.3.4"
    )
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "host.example.com",
        5060,
    )
    assert via.branch == "z9hG4bK1" and via.param("RPORT") is None and via.has_param("rport")
    assert via.sent_by == ("host.example.com", 5060) and not via.reliable
    assert (
        str(via)
        == "SIP / 2.0 / udp  host.example.com : 5060 ;branch=z9hG4bK1;rport;received=1.2.3.4"
    )
    stamped = via.with_params(received="192.0.2.9", rport="4321")
    assert (
        str(stamped)
        == "SIP/2.0/UDP host.example.com:5060;branch=z9hG4bK1;rport=4321;received=192.0.2.9"
    )
    assert str(Via("TLS", "h")) == "SIP/2.0/TLS h" and Via("TLS", "h").reliable
    assert parse_via("FOO/3/ws h;ttl=1").protocol == "FOO/3"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP h",
        "SIP/2.0/UDP h:x",
        "SIP/2.0/UDP [::1::2]",
        "SIP/2.0/UDP h:70000",
        "SIP/2.0/UDP h;branch",
        "SIP/2.0/UDP h;rport=a",
        "SIP/2.0/UDP h;ttl=1234",
        "SIP/2.0/UDP h;;",
    ],
)
def test_malformed_vias(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


def test_where_a_response_goes() -> None:
    assert via_sent_by("SIP/2.0/UDP 192.0.2.15;;,;,,") == ("192.0.2.15", None)
    assert via_sent_by("SIP/2.0/UDP h:5070") == ("h", 5070)
    assert via_sent_by("SIP/2.0/UDP h:5070x") is None
    assert via_sent_by("SIP/2.0/UDP h:99999") is None
    assert via_sent_by("junk") is None
