"""Host names in the configuration, resolved by a real DNS server (dnsmasq) for the real
`callkeeper serve`, with SIPp at the other end: a static contact by A record, a trunk by SRV
(RFC 3263), a record that changes, a name that does not resolve, DNS down at start-up, and
failover to the next SRV target when the first answers 503 or nothing at all (RFC 3263 §4.3)."""

from __future__ import annotations

import csv
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.dnsmasq import Dnsmasq, host_record, srv_record
from support.ports import free_port
from support.server import ServerProcess, run_cli, wait_until
from support.sipp import SCENARIOS, Sipp
from support.ua import SDP_OFFER, UdpAgent

TRUSTED = 'trusted_sources = ["127.0.0.1/32"]\n'


@pytest.fixture
def uas(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path / "uas", ["-sn", "uas"], name="uas") as sipp:
        yield sipp


@pytest.fixture
def uas2(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path / "uas2", ["-sn", "uas"], name="uas2") as sipp:
        yield sipp


def dns_section(dnsmasq: Dnsmasq, *, timeout: float = 1.0) -> str:
    return f'[dns]\nservers = ["{dnsmasq.server}"]\nmin_ttl = 1\ntimeout = {timeout}\n'


def call(workdir: Path, server: ServerProcess, user: str, name: str) -> Sipp:
    """One SIPp uac call to `user` through callkeeper; returns the finished SIPp."""
    uac = Sipp(
        workdir,
        ["-sn", "uac", "-s", user, "-m", "1", "-recv_timeout", "5000"],
        target=f"127.0.0.1:{server.sip_port}",
        name=name,
    ).start()
    uac.wait(timeout=30)
    return uac


def answered(uas: Sipp) -> int:
    """Calls the SIPp uas has completed (its stat file, rewritten every second)."""
    try:
        with uas.stat_file.open() as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except FileNotFoundError:
        return 0
    if len(rows) < 2:
        return 0
    return int(dict(zip(rows[0], rows[-1], strict=False))["SuccessfulCall(C)"])


def invite_status(server: ServerProcess, user: str) -> tuple[int | None, str | None]:
    """(final status, Retry-After) of an INVITE to `user` from a trusted source."""
    with UdpAgent(server.sip_port, user="alice") as agent:
        uri = f"sip:{user}@127.0.0.1:{server.sip_port}"
        data, call_id, from_tag, branch = agent.request("INVITE", uri, body=SDP_OFFER)
        agent.send(data)
        response = agent.final_response(call_id, "INVITE")
        assert response is not None
        agent.ack(uri, call_id, from_tag, response.to_tag, branch=branch)
        return response.status, response.header("Retry-After")


def test_a_static_contact_by_host_name(tmp_path: Path, uas: Sipp) -> None:
    with Dnsmasq(tmp_path / "dns", [host_record("bob.test")]) as dnsmasq:
        extra = (
            dns_section(dnsmasq)
            + f'[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@bob.test:{uas.port}"]\n'
        )
        with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
            uac = call(tmp_path, server, "bob", "uac")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()
            assert uac.stats().successful == 1
            wait_until(lambda: answered(uas) == 1, 10, what="the uas to count the call")
            assert server.metric("callkeeper_dns_failures_total") == 0
            assert server.metric("callkeeper_dns_unresolved") == 0


def test_a_trunk_by_srv_record(tmp_path: Path, uas: Sipp) -> None:
    records = [srv_record("_sip._udp.pbx.test", "host.test", uas.port), host_record("host.test")]
    with Dnsmasq(tmp_path / "dns", records) as dnsmasq:
        extra = dns_section(dnsmasq) + '[[trunks]]\nname = "pbx"\nuri = "sip:pbx.test"\n'
        with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
            uac = call(tmp_path, server, "+4930123456", "uac")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()
            wait_until(lambda: answered(uas) == 1, 10, what="the uas to count the call")


def test_a_changed_record_is_followed_and_an_outage_keeps_the_last_answer(
    tmp_path: Path, uas: Sipp, uas2: Sipp
) -> None:
    def records(port: int) -> list[str]:
        return [srv_record("_sip._udp.pbx.test", "host.test", port), host_record("host.test")]

    with Dnsmasq(tmp_path / "dns", records(uas.port)) as dnsmasq:
        extra = dns_section(dnsmasq) + '[[trunks]]\nname = "pbx"\nuri = "sip:pbx.test"\n'
        with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
            assert call(tmp_path, server, "5551", "uac-1").stats().successful == 1
            wait_until(lambda: answered(uas) == 1, 10, what="the first uas to count the call")

            # DNS goes away: once the answer has expired the look-up fails, and calls still go
            # to the last address that was good.
            dnsmasq.stop()
            wait_until(
                lambda: server.metric("callkeeper_dns_failures_total") >= 1,
                10,
                what="a failed look-up to be counted",
            )
            assert call(tmp_path, server, "5552", "uac-2").stats().successful == 1
            wait_until(lambda: answered(uas) == 2, 10, what="the first uas to count call 2")
            assert server.log().count("dns look-up failed") == 1  # one warning per outage

            # DNS is back with the trunk moved: after the TTL the next call goes there.
            dnsmasq.restart(records(uas2.port))
            wait_until(
                lambda: f"127.0.0.1:{uas2.port}" in server.log(),
                10,
                what="callkeeper to resolve the new address",
            )
            assert "dns look-up works again" in server.log()
            assert call(tmp_path, server, "5553", "uac-3").stats().successful == 1
            wait_until(lambda: answered(uas2) == 1, 10, what="the second uas to count call 3")
            assert answered(uas) == 2


def test_a_trunk_added_by_sighup_is_looked_up(tmp_path: Path, uas: Sipp) -> None:
    records = [srv_record("_sip._udp.pbx.test", "host.test", uas.port), host_record("host.test")]
    with Dnsmasq(tmp_path / "dns", records) as dnsmasq:
        process = ServerProcess(
            tmp_path / "ck", sip_extra=TRUSTED, extra_config=dns_section(dnsmasq)
        )
        with process as server:
            assert invite_status(server, "5551")[0] == 404  # no trunk yet
            server.extra_config += '[[trunks]]\nname = "pbx"\nuri = "sip:pbx.test"\n'
            server.write_config()
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: f"127.0.0.1:{uas.port}" in server.log(), 10, what="the new trunk's address"
            )
            uac = call(tmp_path, server, "5552", "uac")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()


def test_a_name_that_does_not_resolve(tmp_path: Path) -> None:
    with Dnsmasq(tmp_path / "dns", [host_record("other.test")]) as dnsmasq:
        extra = (
            dns_section(dnsmasq)
            + '[[users]]\nname = "carol"\nstatic_contacts = ["sip:carol@carol.test:5999"]\n'
            + '[[trunks]]\nname = "gone"\nuri = "sip:gone.test"\n'
        )
        with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
            assert "dns look-up failed" in server.log()
            status, retry_after = invite_status(server, "+4930123456")
            assert status == 503 and retry_after == "1"
            status, _ = invite_status(server, "carol")
            assert status == 480  # carol's only device has no address
            (carol,) = server.get_json("/api/v1/endpoints?user=carol")
            assert carol["state"] == "down"  # nothing can reach it
            assert server.metric("callkeeper_dns_failures_total") >= 2
            assert server.metric("callkeeper_dns_unresolved") == 2
            assert server.metric("callkeeper_core_errors_total") == 0


def test_dns_down_at_start_up_is_not_fatal_and_the_name_resolves_later(
    tmp_path: Path, uas: Sipp
) -> None:
    records = [host_record("bob.test")]
    dnsmasq = Dnsmasq(tmp_path / "dns", records, port=free_port())  # not started yet
    extra = (
        dns_section(dnsmasq, timeout=0.5)
        + f'[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@bob.test:{uas.port}"]\n'
    )
    with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
        assert invite_status(server, "bob")[0] == 480
        with dnsmasq:
            wait_until(
                lambda: server.metric("callkeeper_dns_unresolved") == 0,
                10,
                what="bob.test to resolve once DNS is up",
            )
            uac = call(tmp_path, server, "bob", "uac")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()


def two_targets(first_port: int, second_port: int, transport: str = "udp") -> list[str]:
    """pbx.test's SRV: `first_port` first (priority 0), then `second_port` (priority 10)."""
    owner = f"_sip._{transport}.pbx.test"
    return [
        srv_record(owner, "one.test", first_port, priority=0),
        srv_record(owner, "two.test", second_port, priority=10),
        host_record("one.test"),
        host_record("two.test"),
    ]


def test_a_503_from_the_first_srv_target_fails_over_to_the_second(
    tmp_path: Path, uas: Sipp
) -> None:
    args = ["-sf", str(SCENARIOS / "unavailable_503.xml")]
    with (
        Sipp(tmp_path / "down", args, name="down") as down,
        Dnsmasq(tmp_path / "dns", two_targets(down.port, uas.port)) as dnsmasq,
    ):
        extra = dns_section(dnsmasq) + '[[trunks]]\nname = "pbx"\nuri = "sip:pbx.test"\n'
        with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
            uac = call(tmp_path, server, "5551", "uac-1")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()
            assert uac.stats().successful == 1
            wait_until(lambda: answered(uas) == 1, 10, what="the second target to count the call")
            assert server.metric("callkeeper_dns_failovers_total") == 1
            # Its 503 said Retry-After: 30, so the next call tries it last: straight to the
            # second target, no failover.
            assert call(tmp_path, server, "5552", "uac-2").stats().successful == 1
            wait_until(lambda: answered(uas) == 2, 10, what="the second target to count call 2")
            assert server.metric("callkeeper_dns_failovers_total") == 1
            assert server.metric("callkeeper_core_errors_total") == 0


def test_a_first_srv_target_that_is_not_running_is_skipped_after_timer_b(
    tmp_path: Path, uas: Sipp
) -> None:
    """Nothing listens on the first target's port: the ICMP port unreachable cannot be told
    apart per transaction on an unconnected UDP socket, so Timer B (64·T1, 3.2 s here) is what
    moves the call on."""
    with Dnsmasq(tmp_path / "dns", two_targets(free_port(), uas.port)) as dnsmasq:
        extra = dns_section(dnsmasq) + '[[trunks]]\nname = "pbx"\nuri = "sip:pbx.test"\n'
        sip = TRUSTED + "t1 = 0.05\n"
        with ServerProcess(tmp_path / "ck", sip_extra=sip, extra_config=extra) as server:
            uac = call(tmp_path, server, "5551", "uac")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()
            assert uac.stats().successful == 1
            wait_until(lambda: answered(uas) == 1, 10, what="the second target to count the call")
            assert server.metric("callkeeper_dns_failovers_total") == 1


def test_a_refused_tcp_connection_fails_over_at_once(tmp_path: Path) -> None:
    """Over TCP the first target refusing the connection is a transport failure: the next
    target is tried at once, without waiting for Timer B (default T1 here: 32 s)."""
    with (
        Sipp(tmp_path / "uas", ["-sn", "uas"], transport="tcp", name="uas") as uas,
        Dnsmasq(tmp_path / "dns", two_targets(free_port(), uas.port, "tcp")) as dnsmasq,
    ):
        extra = (
            dns_section(dnsmasq) + '[[trunks]]\nname = "pbx"\nuri = "sip:pbx.test;transport=tcp"\n'
        )
        with ServerProcess(tmp_path / "ck", sip_extra=TRUSTED, extra_config=extra) as server:
            uac = call(tmp_path, server, "5551", "uac")
            assert uac.process is not None and uac.process.returncode == 0, uac.errors()
            assert uac.stats().successful == 1
            wait_until(lambda: answered(uas) == 1, 10, what="the second target to count the call")
            assert server.metric("callkeeper_dns_failovers_total") == 1
            assert "connect failed" in server.log()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ('[dns]\nservers = ["dns.example.com"]\n', "dns.servers"),
        ('[dns]\nservers = ["127.0.0.1:99999"]\n', "dns.servers"),
        ("[dns]\nmin_ttl = 60\nmax_ttl = 30\n", "dns"),
        ('[[trunks]]\nname = "t"\nuri = "sip:pbx_1.test"\n', "trunks.0.uri"),
        (
            f'[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@{"b" * 64}.test"]\n',
            "users.0.static_contacts.0",
        ),
        (f'[recovery]\nvoicemail_uri = "sip:{"v" * 64}.test"\n', "recovery.voicemail_uri"),
    ],
)
def test_bad_dns_settings_and_host_names_are_config_errors(
    tmp_path: Path, config: str, key: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config)
    for command in (("check-config", str(path)), ("serve", "--config", str(path))):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{key}:" in lines[0], result.stderr
