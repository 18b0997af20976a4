"""Host names in configured URIs, the pure parts: which look-up a URI needs (RFC 3263 §4), the
RFC 2782 order of SRV answers, the `[dns]` settings, and the core's table of resolved names."""

from __future__ import annotations

import itertools

import pytest

from callkeeper.config import Config, DnsSection, parse_dns_server
from callkeeper.directory import Directory, DirectoryError
from callkeeper.sip.locate import Lookup, SrvRecord, host_name_problem, lookup_for, order_srv
from callkeeper.sip.message import Request, Response
from callkeeper.sip.uri import parse_uri
from support.core_calls import CALLER, SDP
from support.core_driver import CoreDriver

# --- which look-up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:pbx.example.com", Lookup("pbx.example.com", "udp", None)),
        ("sip:+4930@PBX.Example.com.", Lookup("pbx.example.com", "udp", None)),
        ("sip:pbx.example.com:5070", Lookup("pbx.example.com", "udp", 5070)),
        ("sip:pbx.example.com;transport=TCP", Lookup("pbx.example.com", "tcp", None)),
        ("sips:pbx.example.com", Lookup("pbx.example.com", "tls", None)),
        ("sip:pbx.example.com;transport=sctp", Lookup("pbx.example.com", "udp", None)),
        ("sip:bob@host1:5080", Lookup("host1", "udp", 5080)),
        ("sip:bob@192.0.2.1", None),
        ("sip:bob@192.0.2.1:5080", None),
        ("sip:bob@[2001:db8::1]:5080", None),
    ],
)
def test_lookup_for_a_uri(uri: str, expected: Lookup | None) -> None:
    assert lookup_for(parse_uri(uri)) == expected


def test_srv_names_per_transport_and_the_fallback_port() -> None:
    assert Lookup("pbx.test", "udp", None).srv_name == "_sip._udp.pbx.test"
    assert Lookup("pbx.test", "tcp", None).srv_name == "_sip._tcp.pbx.test"
    assert Lookup("pbx.test", "tls", None).srv_name == "_sips._tcp.pbx.test"
    assert Lookup("pbx.test", "tls", None).default_port == 5061
    assert Lookup("pbx.test", "udp", None).default_port == 5060
    # An explicit port: A/AAAA only (RFC 3263 §4.2).
    assert Lookup("pbx.test", "udp", 5070).srv_name is None
    assert Lookup("pbx.test", "udp", 5070).default_port == 5070
    assert Lookup("pbx.test", "ws", None).srv_name is None


def test_host_name_limits() -> None:
    assert host_name_problem("pbx.example.com") is None
    assert host_name_problem("192.0.2.1") is None
    assert host_name_problem("a" * 64 + ".test") is not None
    assert host_name_problem(".".join(["abcdefghi"] * 26)) is not None  # 259 characters


# --- RFC 2782 order --------------------------------------------------------------------------------


def _srv(priority: int, weight: int, target: str) -> SrvRecord:
    return SrvRecord(priority, weight, 5060, target)


def test_srv_lowest_priority_first_whatever_the_weights() -> None:
    records = [_srv(20, 100, "c"), _srv(10, 0, "a"), _srv(30, 5, "d"), _srv(10, 0, "b")]
    ordered = order_srv(records, lambda total: total)
    assert [r.priority for r in ordered] == [10, 10, 20, 30]


def test_srv_weighted_draw_follows_running_sums() -> None:
    records = [_srv(10, 10, "light"), _srv(10, 30, "heavy"), _srv(10, 0, "zero")]
    # The zero-weight record is placed first, so a draw of 0 picks it; then the running sums
    # are light 10, heavy 40: a draw of 25 picks heavy, the last draw the one left.
    draws = iter([0, 25, 0])
    ordered = order_srv(records, lambda total: next(draws))
    assert [r.target for r in ordered] == ["zero", "heavy", "light"]


def test_srv_weights_share_the_load() -> None:
    records = [_srv(10, 1, "one"), _srv(10, 3, "three")]
    counter = itertools.count()
    firsts = [
        order_srv(records, lambda total: next(counter) % (total + 1))[0].target for _ in range(400)
    ]
    # Draws 0..4 spread evenly: 0 and 1 land on "one" (sum 1), 2..4 on "three" (sum 4).
    assert 150 <= firsts.count("three") <= 330


def test_srv_unavailable_target_is_dropped() -> None:
    assert order_srv([_srv(0, 0, ".")], lambda total: 0) == []


def test_a_pick_out_of_range_cannot_loop_forever() -> None:
    ordered = order_srv([_srv(0, 1, "a"), _srv(0, 1, "b")], lambda total: total + 99)
    assert sorted(r.target for r in ordered) == ["a", "b"]


# --- [dns] settings and host names in the directory ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_dns_servers_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize(
    "text", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:70000", "[::1]x", "127.0.0.1:ab", ""]
)
def test_bad_dns_servers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        DnsSection(servers=[text])


def test_a_host_name_too_long_for_dns_is_a_directory_error() -> None:
    config = Config(trunks=[{"name": "t", "uri": f"sip:{'x' * 64}.test"}])
    with pytest.raises(DirectoryError, match=r"trunks\.0\.uri"):
        Directory.from_config(config)


# --- the core's table ------------------------------------------------------------------------------

PBX = Lookup("pbx.test", "udp", None)


def _driver() -> CoreDriver:
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        users=[{"name": "bob", "static_contacts": ["sip:bob@bob.test:7002"]}],
        trunks=[{"name": "pbx", "uri": "sip:pbx.test"}],
        recovery={"voicemail_uri": "sip:vm.test:5090"},
        dns={"min_ttl": 7},
    )
    return CoreDriver(config)


def _invite(user: str, call_id: str) -> str:
    body = SDP.replace("\n", "\r\n")
    return (
        f"INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-{call_id}\n"
        f"Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:{user}@127.0.0.1>\n"
        f"Call-ID: {call_id}\nCSeq: 1 INVITE\n"
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\nContent-Type: application/sdp\n"
        f"Content-Length: {len(body)}\n\n"
    ) + SDP


def _final(driver: CoreDriver, call_id: str) -> Response:
    finals = [
        sent.message
        for sent in driver.sent
        if isinstance(sent.message, Response)
        and sent.message.call_id == call_id
        and sent.message.status >= 200
    ]
    assert len(finals) == 1
    return finals[0]


def _forwarded(driver: CoreDriver) -> list[tuple[str, tuple[str, int]]]:
    return [
        (str(sent.message.uri), sent.flow.remote)
        for sent in driver.sent
        if isinstance(sent.message, Request) and sent.message.method == "INVITE"
    ]


def test_the_core_asks_for_every_configured_name() -> None:
    assert _driver().core.dns_lookups() == {
        Lookup("bob.test", "udp", 7002),
        PBX,
        Lookup("vm.test", "udp", 5090),
    }


def test_a_trunk_without_an_address_gets_503_with_retry_after() -> None:
    driver = _driver()
    driver.receive(_invite("+4930123", "c1"), CALLER)
    response = _final(driver, "c1")
    assert response.status == 503
    assert response.headers.get("retry-after") == "7"
    assert "pbx.test" in (response.headers.get("warning") or "")
    assert _forwarded(driver) == []


def test_a_resolved_trunk_is_called_at_its_first_address_with_the_name_kept() -> None:
    driver = _driver()
    driver.core.set_resolved(PBX, [("192.0.2.7", 5070), ("192.0.2.8", 5060)], driver.now)
    driver.receive(_invite("+4930123", "c2"), CALLER)
    assert _forwarded(driver) == [("sip:+4930123@pbx.test", ("192.0.2.7", 5070))]


def test_a_static_contact_without_an_address_is_skipped_then_watched_once_resolved() -> None:
    driver = _driver()
    driver.core.start(driver.now)
    driver.receive(_invite("bob", "c3"), CALLER)
    assert _final(driver, "c3").status == 480  # bob has no other device
    assert driver.core.watch.target(_bob_endpoint(driver)) is None

    driver.core.set_resolved(Lookup("bob.test", "udp", 7002), [("192.0.2.9", 7002)], driver.now)
    target = driver.core.watch.target(_bob_endpoint(driver))
    assert target is not None and target[1].remote == ("192.0.2.9", 7002)
    driver.receive(_invite("bob", "c4"), CALLER)
    assert _forwarded(driver)[-1] == ("sip:bob@bob.test:7002", ("192.0.2.9", 7002))

    # The name moves: probes and calls follow it.
    driver.core.set_resolved(Lookup("bob.test", "udp", 7002), [("192.0.2.10", 7002)], driver.now)
    target = driver.core.watch.target(_bob_endpoint(driver))
    assert target is not None and target[1].remote == ("192.0.2.10", 7002)


def _bob_endpoint(driver: CoreDriver) -> str:
    return driver.core.directory.static_contacts("bob")[0].endpoint_id


def test_a_reload_forgets_names_no_longer_configured() -> None:
    driver = _driver()
    driver.core.set_resolved(PBX, [("192.0.2.7", 5060)], driver.now)
    config = driver.config.model_copy(update={"trunks": []})
    driver.core.reload(config)
    assert PBX not in driver.core.dns_lookups()
    assert driver.core.resolved(PBX) == ()
