"""Registrations survive `kill -9`: after a restart a registered phone is reachable without
re-registering (SQLite store, the embedded default)."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path

from support.server import ServerProcess, wait_until
from support.ua import SDP_OFFER, UdpAgent, digest_answer


def register(agent: UdpAgent, port: int, user: str, password: str) -> int | None:
    uri = f"sip:127.0.0.1:{port}"
    to = f"<sip:{user}@127.0.0.1:{port}>"
    call_id = f"reg-{time.monotonic_ns()}@127.0.0.1"
    data, *_ = agent.request(
        "REGISTER", uri, to=to, call_id=call_id, from_tag="r1", cseq=1, extra="Expires: 300\r\n"
    )
    agent.send(data)
    challenge = agent.final_response(call_id, "REGISTER")
    assert challenge is not None and challenge.status == 401
    auth = digest_answer(
        challenge.header("WWW-Authenticate") or "", "REGISTER", uri, user, password
    )
    data, *_ = agent.request(
        "REGISTER",
        uri,
        to=to,
        call_id=call_id,
        from_tag="r1",
        cseq=2,
        extra=f"Authorization: {auth}\r\nExpires: 300\r\n",
    )
    agent.send(data)
    response = agent.final_response(call_id, "REGISTER")
    return response.status if response else None


def test_registrations_survive_kill_minus_9(tmp_path: Path) -> None:
    workdir = tmp_path / "ck"
    config = dict(
        sip_extra='trusted_sources = ["127.0.0.2/32"]\n',
        extra_config='[[users]]\nname = "alice"\npassword = "alice-secret"\n',
        store_url=f"sqlite:///{workdir}/data/callkeeper.db",
    )
    first = ServerProcess(workdir, **config).start()  # type: ignore[arg-type]
    with UdpAgent(first.sip_port, user="alice") as phone:
        assert register(phone, first.sip_port, "alice", "alice-secret") == 200
        endpoints = first.get_json("/api/v1/endpoints")
        assert [e["user"] for e in endpoints] == ["alice"]
        # The 200 OK goes out first and the row is written a moment later (the store batches
        # writes off the event loop): crash only once it is on disk, as a phone would notice no
        # difference within that millisecond window either way.
        wait_until(lambda: stored_bindings(workdir / "data" / "callkeeper.db") == 1, 5,
                   what="the binding on disk")  # fmt: skip
        first.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        first.process.wait(10)  # type: ignore[union-attr]

        second = ServerProcess(
            workdir, sip_port=first.sip_port, api_port=first.api_port, **config
        ).start()  # type: ignore[arg-type]
        try:
            endpoints = second.get_json("/api/v1/endpoints")
            assert [e["user"] for e in endpoints] == ["alice"]
            assert endpoints[0]["contact"].endswith(f":{phone.port}")
            # a call to alice reaches the phone that registered before the crash
            with UdpAgent(second.sip_port, user="carol", bind_host="127.0.0.2") as caller:
                data, *_ = caller.request(
                    "INVITE", f"sip:alice@127.0.0.1:{second.sip_port}", body=SDP_OFFER
                )
                caller.send(data)  # from 127.0.0.2: a trusted source, no digest needed
                invite = wait_until(
                    lambda: _next_request(phone), 5, what="the INVITE at alice's phone"
                )
                assert invite.method == "INVITE"
        finally:
            second.stop()


def stored_bindings(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
        try:
            return int(
                db.execute("SELECT count(*) FROM entries WHERE namespace = 'bindings'").fetchone()[
                    0
                ]
            )
        except sqlite3.OperationalError:  # the table is not there yet
            return 0


def _next_request(agent: UdpAgent):  # type: ignore[no-untyped-def]
    message = agent.receive(timeout=0.2)
    return message if message is not None and message.method is not None else None
