"""Digest algorithms on the wire: MD5 alone by default (what deployed phones answer), SHA-256
first when configured (RFC 8760), and a phone answering either one registers."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.server import ServerProcess
from support.ua import UdpAgent, digest_answer

USERS = '[[users]]\nname = "alice"\npassword = "alice-secret"\n'


def challenge_and_answer(server: ServerProcess, prefer: str | None) -> tuple[list[str], int | None]:
    uri = f"sip:127.0.0.1:{server.sip_port}"
    to = f"<sip:alice@127.0.0.1:{server.sip_port}>"
    with UdpAgent(server.sip_port, user="alice") as phone:
        data, call_id, *_ = phone.request(
            "REGISTER", uri, to=to, call_id="auth-1@x", from_tag="a", cseq=1
        )
        phone.send(data)
        challenge = phone.final_response(call_id, "REGISTER")
        assert challenge is not None and challenge.status == 401
        offers = challenge.headers("WWW-Authenticate")
        chosen = next((o for o in offers if prefer and f"algorithm={prefer}" in o), offers[0])
        auth = digest_answer(chosen, "REGISTER", uri, "alice", "alice-secret")
        data, *_ = phone.request("REGISTER", uri, to=to, call_id=call_id, from_tag="a", cseq=2,
                                 extra=f"Authorization: {auth}\r\n")  # fmt: skip
        phone.send(data)
        response = phone.final_response(call_id, "REGISTER")
        return offers, response.status if response else None


def test_default_offers_md5_only(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, extra_config=USERS) as server:
        offers, status = challenge_and_answer(server, None)
    assert len(offers) == 1 and "algorithm=MD5" in offers[0]
    assert status == 200


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_sha256_offered_first_when_configured(tmp_path: Path, algorithm: str) -> None:
    config = USERS + '[auth]\nalgorithms = ["SHA-256", "MD5"]\n'
    with ServerProcess(tmp_path, extra_config=config) as server:
        offers, status = challenge_and_answer(server, algorithm)
    assert "algorithm=SHA-256" in offers[0] and "algorithm=MD5" in offers[1]
    assert status == 200
