"""The B2BUA between real SIPp peers: SIPp uac → callkeeper → SIPp uas (a static contact of bob,
the caller from a trusted source), plus bad input thrown at it while a load is running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import ServerProcess, wait_until
from support.sipp import Sipp
from support.ua import SDP_OFFER, Message, UdpAgent, digest_answer


@pytest.fixture(scope="module")
def uas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sipp]:
    with Sipp(tmp_path_factory.mktemp("uas"), ["-sn", "uas"], name="uas") as sipp:
        yield sipp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uas: Sipp) -> Iterator[ServerProcess]:
    extra = (
        '[[users]]\nname = "bob"\n'
        f'static_contacts = ["sip:bob@127.0.0.1:{uas.port}"]\n'
        '[[users]]\nname = "alice"\npassword = "alice-secret"\n'
    )
    process = ServerProcess(
        tmp_path_factory.mktemp("b2bua"),
        sip_extra='trusted_sources = ["127.0.0.1/32"]\n',
        extra_config=extra,
    )
    with process:
        yield process


def run_uac(workdir: Path, server: ServerProcess, rate: int, calls: int, name: str) -> Sipp:
    return Sipp(
        workdir,
        ["-sn", "uac", "-s", "bob", "-r", str(rate), "-m", str(calls), "-recv_timeout", "5000"],
        target=f"127.0.0.1:{server.sip_port}",
        name=name,
    )


def test_five_thousand_calls_at_200_per_second(server: ServerProcess, tmp_path: Path) -> None:
    uac = run_uac(tmp_path, server, 200, 5000, "uac-5000").start()
    assert uac.wait(timeout=120) == 0, uac.errors()
    stats = uac.stats()
    assert stats.successful == 5000 and stats.failed == 0, stats.raw
    assert stats.unexpected == 0
    wait_until(lambda: server.metric("callkeeper_calls_active") == 0, 10, what="calls to end")
    assert server.get_json("/api/v1/calls") == []
    assert server.metric("callkeeper_core_errors_total") == 0


@pytest.mark.parametrize("rate", [50, 400])
def test_message_order_is_kept_at_every_rate(
    server: ServerProcess, tmp_path: Path, rate: int
) -> None:
    """SIPp's built-in uac aborts a call whose 180 arrives after its 200 (an 'unexpected
    message'): a relay that reorders under load fails here."""
    uac = run_uac(tmp_path, server, rate, rate * 4, f"uac-{rate}").start()
    assert uac.wait(timeout=120) == 0, uac.errors()
    stats = uac.stats()
    assert stats.unexpected == 0 and stats.failed == 0, stats.raw


def invite(
    agent: UdpAgent,
    server: ServerProcess,
    user: str,
    *,
    body: str = SDP_OFFER,
    extra: str = "",
    cseq: int = 1,
    call_id: str | None = None,
    from_tag: str | None = None,
) -> tuple[Message | None, str, str, str]:
    uri = f"sip:{user}@127.0.0.1:{server.sip_port}"
    data, call_id, from_tag, branch = agent.request(
        "INVITE", uri, call_id=call_id, from_tag=from_tag, cseq=cseq, body=body, extra=extra
    )
    agent.send(data)
    response = agent.final_response(call_id, "INVITE")
    if response is not None and response.status is not None and response.status >= 300:
        agent.ack(uri, call_id, from_tag, response.to_tag, cseq=cseq, branch=branch)
    return response, call_id, from_tag, branch


def test_bad_input_does_not_disturb_calls_in_progress(
    server: ServerProcess, tmp_path: Path
) -> None:
    load = run_uac(tmp_path, server, 100, 1500, "uac-load").start()
    with UdpAgent(server.sip_port, user="alice") as agent:
        # unknown user → 404
        response, *_ = invite(agent, server, "nobody")
        assert response is not None and response.status == 404

        # malformed SDP → 488
        response, *_ = invite(agent, server, "bob", body="v=0\r\nthis is not sdp\r\n")
        assert response is not None and response.status == 488

        # BYE for a dialog that does not exist → 481
        data, call_id, *_ = agent.request(
            "BYE", f"sip:bob@127.0.0.1:{server.sip_port}", to_tag="nope"
        )
        agent.send(data)
        response = agent.final_response(call_id, "BYE")
        assert response is not None and response.status == 481

        # late offer: INVITE without SDP; the offer comes in the 200, the answer in the ACK
        response, call_id, from_tag, _ = invite(agent, server, "bob", body="")
        assert response is not None and response.status == 200
        assert "m=audio" in response.body
        uri = f"sip:bob@127.0.0.1:{server.sip_port}"
        agent.ack(uri, call_id, from_tag, response.to_tag, body=SDP_OFFER)
        data, *_ = agent.request(
            "BYE", uri, call_id=call_id, from_tag=from_tag, to_tag=response.to_tag, cseq=2
        )
        agent.send(data)
        bye = agent.final_response(call_id, "BYE")
        assert bye is not None and bye.status == 200
    load.wait(timeout=120)
    stats = load.stats()
    assert stats.failed == 0 and stats.successful == 1500, stats.raw


def test_wrong_password_gets_401_then_403_and_no_call(tmp_path: Path, uas: Sipp) -> None:
    """Without trusted sources: REGISTER and INVITE need digest credentials."""
    extra = (
        '[[users]]\nname = "alice"\npassword = "alice-secret"\n'
        f'[[users]]\nname = "bob"\nstatic_contacts = ["sip:bob@127.0.0.1:{uas.port}"]\n'
    )
    with (
        ServerProcess(tmp_path / "ck", extra_config=extra) as server,
        UdpAgent(server.sip_port, user="alice") as agent,
    ):
        uri = f"sip:127.0.0.1:{server.sip_port}"
        to = f"<sip:alice@127.0.0.1:{server.sip_port}>"
        statuses = []
        challenge = None
        for attempt in range(1, 6):
            auth = ""
            if challenge is not None:
                auth = (
                    "Authorization: "
                    + digest_answer(challenge, "REGISTER", uri, "alice", "wrong")
                    + "\r\n"
                )
            data, call_id, *_ = agent.request(
                "REGISTER",
                uri,
                to=to,
                cseq=attempt,
                call_id="reg-1@x",
                from_tag="reg",
                extra=auth + "Expires: 60\r\n",
            )
            agent.send(data)
            response = agent.final_response(call_id, "REGISTER")
            assert response is not None
            statuses.append(response.status)
            challenge = response.header("WWW-Authenticate") or challenge
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [403, 403], statuses
        assert server.get_json("/api/v1/endpoints") == [] or all(
            e.get("static") for e in server.get_json("/api/v1/endpoints")
        )
        # the right password from the same address is still refused while blocked...
        # ...but an INVITE with a wrong password gets 407 and no call is made
        response, *_ = invite(agent, server, "bob")
        assert response is not None and response.status == 407
        assert server.get_json("/api/v1/calls") == []
