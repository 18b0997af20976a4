"""The IVR node's SIP user agent (`callkeeper.ivr.node`), pure: a fake clock, SIP text in, commands
out. The call manager is played by hand-written messages from 127.0.0.1:5060."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from callkeeper.calls.dialing import SESSION_HEADER as MANAGER_SESSION_HEADER
from callkeeper.ivr import node_commands as nc
from callkeeper.ivr.node import (
    SESSION_HEADER,
    Envelope,
    IvrNode,
    NodeSettings,
    choose_media,
    decode_envelope,
    encode_envelope,
)
from callkeeper.ivr.script import Script, load_script
from callkeeper.ivr.session import decode_checkpoint, encode_checkpoint, new_session
from callkeeper.ivr.states import Phase
from callkeeper.media.g711 import Codec
from callkeeper.sdp.parser import parse_sdp
from callkeeper.sip.digest import build_challenge, compute_ha1, compute_response, parse_credentials
from callkeeper.sip.message import Request, Response
from callkeeper.sip.parser import parse_message
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.sip.transport import Transmit

SCRIPT_PATH = Path(__file__).resolve().parent.parent / "src/callkeeper/ivr/samples/support.toml"
MANAGER = ("127.0.0.1", 5060)
NODE = ("127.0.0.1", 7000)
RTP_PORT = 40000


@pytest.fixture(scope="module")
def script() -> Script:
    return load_script(SCRIPT_PATH)


class Harness:
    def __init__(self, script: Script, password: str | None = "secret") -> None:
        settings = NodeSettings(
            node="n1",
            user="ivr",
            password=password,
            domain="127.0.0.1",
            registrar=MANAGER,
            local=NODE,
            media_host="127.0.0.1",
        )
        self.node = IvrNode(settings, counter_ids("t"), script, lambda call: RTP_PORT)
        self.now = 0.0
        self.wire: list[bytes] = []
        self.commands: list[object] = []
        self.events: list[nc.NodeEvent] = []

    def drain(self) -> None:
        while (command := self.node.next_command()) is not None:
            if isinstance(command, Transmit):
                assert command.flow.remote == MANAGER
                self.wire.append(command.data)
            else:
                self.commands.append(command)
        while (event := self.node.next_event()) is not None:
            self.events.append(event)

    def send(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.node.receive_datagram(data, MANAGER, self.now)
        self.drain()

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while (due := self.node.get_timer()) is not None and due <= target:
            self.now = max(self.now, due)
            self.node.handle_timer(self.now)
            self.drain()
        self.now = target

    def sip(self) -> list[Request | Response]:
        messages = [parse_message(data) for data in self.wire if data[:1] not in (b"\x00", b"\x01")]
        self.wire.clear()
        return messages  # type: ignore[return-value]

    def take(self, kind: type) -> list:  # type: ignore[type-arg]
        found = [c for c in self.commands if isinstance(c, kind)]
        self.commands = [c for c in self.commands if not isinstance(c, kind)]
        return found

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


def reply(request: Request, status: int, *headers: str, to_tag: str = "srv") -> str:
    lines = [f"SIP/2.0 {status} Whatever"]
    for name in ("Via", "From", "Call-ID", "CSeq"):
        lines.append(f"{name}: {request.headers.get(name)}")
    lines.append(f"To: {request.headers.get('To')};tag={to_tag}")
    lines += list(headers)
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


OFFER = (
    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)


def invite(call_id: str = "c1@ck", *extra: str, body: str = OFFER) -> str:
    headers = [
        "INVITE sip:ivr@127.0.0.1:7000 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{call_id.replace('@', '-')}",
        "Max-Forwards: 70",
        "From: <sip:carol@127.0.0.1>;tag=ck1",
        "To: <sip:ivr@127.0.0.1>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Contact: <sip:callkeeper@127.0.0.1:5060>",
        "Content-Type: application/sdp",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return "\r\n".join(headers) + "\r\n\r\n" + body


def in_dialog(
    method: str, ok: Response, cseq: int, *extra: str, body: str = "", branch: str = ""
) -> str:
    headers = [
        f"{method} sip:ivr@127.0.0.1:7000 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{method}{cseq}{branch}",
        "Max-Forwards: 70",
        f"From: {ok.headers.get('From')}",
        f"To: {ok.headers.get('To')}",
        f"Call-ID: {ok.call_id}",
        f"CSeq: {cseq} {method}",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return "\r\n".join(headers) + "\r\n\r\n" + body


def answered_call(h: Harness, call_id: str = "c1@ck", *extra: str) -> Response:
    h.send(invite(call_id, *extra))
    (ok,) = [m for m in h.sip() if isinstance(m, Response) and m.status == 200]
    h.send(in_dialog("ACK", ok, 1))
    return ok


# --- registration ----------------------------------------------------------------------------


def test_registers_with_outbound_and_answers_the_digest_challenge(script: Script) -> None:
    h = Harness(script)
    h.node.start(h.now)
    h.drain()
    (register,) = h.sip()
    assert isinstance(register, Request) and register.method == "REGISTER"
    assert "outbound" in (register.headers.get("Supported") or "")
    contact = register.contacts[0]
    assert contact.param("reg-id") == "1" and contact.param("+sip.instance", "").startswith('"<urn')
    assert "authorization" not in register.headers
    challenge = build_challenge(realm="127.0.0.1", nonce="n0nce", algorithm="MD5")
    h.send(reply(register, 401, "WWW-Authenticate: " + challenge))
    (again,) = h.sip()
    credentials = parse_credentials(again.headers.get("Authorization") or "")
    assert credentials.username == "ivr" and credentials.qop == "auth"
    expected = compute_response(
        ha1=compute_ha1("ivr", "127.0.0.1", "secret"),
        method="REGISTER",
        uri=credentials.uri,
        nonce="n0nce",
        qop="auth",
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )
    assert credentials.response == expected
    assert again.cseq.number == register.cseq.number + 1 and again.call_id == register.call_id
    h.send(reply(again, 200, f"Contact: {contact.replace(params=())};expires=120", "Flow-Timer: 1"))
    (registered,) = h.of(nc.Registered)
    assert registered == nc.Registered(expires=120, flow_timer=1, challenged=True)
    # STUN keep-alives every 0.8 × Flow-Timer; a refresh at half the lifetime
    h.advance(2.0)
    stun = [d for d in h.wire if d[:2] == b"\x00\x01"]
    assert len(stun) == 2 and all(len(d) == 20 for d in stun)
    h.wire.clear()
    answer = b"\x01\x01\x00\x00" + stun[0][4:]  # a Binding success: a sign of the flow's life
    for _ in range(120):
        h.node.receive_datagram(answer, MANAGER, h.now)
        h.advance(0.5)
    refreshes = [m for m in h.sip() if isinstance(m, Request) and m.method == "REGISTER"]
    # one refresh (the rest are its Timer E retransmissions), same Call-ID, a higher CSeq
    assert len({m.cseq.number for m in refreshes}) == 1 and refreshes[0].call_id == register.call_id
    assert refreshes[0].cseq.number > again.cseq.number
    assert h.of(nc.FlowLost) == []


def test_a_wrong_password_is_not_retried_in_a_loop(script: Script) -> None:
    h = Harness(script, password="wrong")
    h.node.start(h.now)
    h.drain()
    (register,) = h.sip()
    challenge = "WWW-Authenticate: " + build_challenge(
        realm="127.0.0.1", nonce="n1", algorithm="MD5"
    )
    h.send(reply(register, 401, challenge))
    (again,) = h.sip()
    h.send(reply(again, 401, challenge))  # the same nonce again: refused
    assert h.sip() == []
    (failed,) = h.of(nc.RegistrationFailed)
    assert failed.status == 401


def test_flow_lost_re_registers(script: Script) -> None:
    h = Harness(script)
    h.node.start(h.now)
    h.drain()
    (register,) = h.sip()
    h.send(reply(register, 200, "Flow-Timer: 1", "Expires: 600"))
    h.advance(4.0)  # keep-alives unanswered for more than 4 intervals
    assert h.of(nc.FlowLost)
    assert [m for m in h.sip() if isinstance(m, Request) and m.method == "REGISTER"]


# --- calls -----------------------------------------------------------------------------------------


def test_invite_is_answered_with_a_new_session_and_g711(script: Script) -> None:
    h = Harness(script)
    h.send(invite())
    (ok,) = [m for m in h.sip() if isinstance(m, Response)]
    assert ok.status == 200
    session = ok.headers.get(SESSION_HEADER)
    assert session is not None and session.startswith("n1-")
    answer = parse_sdp(ok.body)
    (audio,) = answer.media
    assert audio.port == RTP_PORT and audio.payload_types == [8, 101]  # the offer's order
    (opened,) = h.take(nc.OpenMedia)
    assert opened == nc.OpenMedia("c1@ck", RTP_PORT, ("127.0.0.9", 6000), Codec.PCMA, 8, 101)
    (play,) = h.take(nc.PlayPrompt)
    assert play.name == "welcome" and play.offset == 0.0 and play.file.endswith("welcome.wav")
    saved = h.take(nc.SaveCheckpoint)
    assert saved and all(s.session == session for s in saved)
    envelope = decode_envelope(saved[-1].data)
    assert envelope.owner == "n1/c1@ck" and decode_checkpoint(envelope.data).step == "welcome"
    assert h.of(nc.CallAnswered) == [nc.CallAnswered("c1@ck", session, resumed=False)]


def test_2xx_is_retransmitted_until_the_ack(script: Script) -> None:
    h = Harness(script)
    h.send(invite())
    (ok,) = [m for m in h.sip() if isinstance(m, Response)]
    h.advance(1.6)  # T1 0.5, then 1 s
    assert len([m for m in h.sip() if isinstance(m, Response) and m.status == 200]) == 2
    h.send(in_dialog("ACK", ok, 1))
    h.advance(10)
    assert [m for m in h.sip() if isinstance(m, Response)] == []


def test_info_digits_drive_the_interpreter(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    h.node.prompt_finished("c1@ck", h.now)  # welcome ends: the menu plays
    h.drain()
    assert [p.name for p in h.take(nc.PlayPrompt)] == ["welcome", "menu"]
    body = "Signal=1\r\nDuration=160\r\n"
    h.send(in_dialog("INFO", ok, 2, "Content-Type: application/dtmf-relay", body=body))
    (answer,) = [m for m in h.sip() if isinstance(m, Response)]
    assert answer.status == 200
    assert [d.digit for d in h.of(nc.DigitReceived)] == ["1"]
    assert h.take(nc.StopPrompt)  # barge-in
    assert [p.name for p in h.take(nc.PlayPrompt)] == ["account"]
    assert [e.step for e in h.of(nc.StepEntered)][-2:] == ["route", "account"]
    # RFC 4733 digits from the io layer take the same path
    h.node.digit("c1@ck", "4", h.now)
    h.drain()
    last = decode_checkpoint(decode_envelope(h.take(nc.SaveCheckpoint)[-1].data).data)
    assert last.step == "account" and last.digits == "4"
    bad = in_dialog("INFO", ok, 3, "Content-Type: application/dtmf-relay", body="Nothing=1")
    h.send(bad)
    assert [m.status for m in h.sip() if isinstance(m, Response)] == [400]


def test_bye_ends_the_session_and_deletes_its_checkpoint(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    session = ok.headers.get(SESSION_HEADER)
    h.send(in_dialog("BYE", ok, 2))
    assert [m.status for m in h.sip() if isinstance(m, Response)] == [200]
    assert h.take(nc.DeleteCheckpoint) == [nc.DeleteCheckpoint(session, "n1/c1@ck")]
    assert h.take(nc.CloseMedia) == [nc.CloseMedia("c1@ck")]
    (ended,) = h.of(nc.SessionEnded)
    assert ended.reason == "caller hung up"
    assert h.node.calls == {}
    h.send(in_dialog("INFO", ok, 3))  # the dialog is gone
    assert [m.status for m in h.sip() if isinstance(m, Response)] == [481]


def test_reinvite_keeps_the_port(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    moved = OFFER.replace("127.0.0.9", "127.0.0.8").replace("6000", "6100")
    h.send(
        in_dialog(
            "INVITE", ok, 2, "Content-Type: application/sdp", "Contact: <sip:c@1.2.3.4>", body=moved
        )
    )
    (answer,) = [m for m in h.sip() if isinstance(m, Response)]
    assert answer.status == 200 and parse_sdp(answer.body).media[0].port == RTP_PORT
    assert "o=callkeeper-ivr" in answer.body.decode() and " 2 IN IP4" in answer.body.decode()
    (update,) = h.take(nc.UpdateMedia)
    assert update.remote == ("127.0.0.8", 6100)


def test_options_are_answered_statelessly(script: Script) -> None:
    h = Harness(script)
    h.send(
        "OPTIONS sip:ivr@127.0.0.1:7000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-o\r\n"
        "From: <sip:callkeeper@127.0.0.1>;tag=o\r\nTo: <sip:ivr@127.0.0.1>\r\nCall-ID: o@ck\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    (answer,) = h.sip()
    assert isinstance(answer, Response) and answer.status == 200
    assert h.node.endpoint.transaction_count == 0


def test_transfer_sends_refer_and_leaves_after_the_final_notify(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    session = ok.headers.get(SESSION_HEADER)
    assert session is not None
    state = msgspec.structs.replace(
        new_session(session, script.name, "account"),
        digits="471",
        variables={"choice": "1"},
        retries_left=2,
    )
    # jump the session to the account step via a resume on a second node
    h2 = Harness(script)
    h2.send(invite("c2@ck", f"{SESSION_HEADER}: {session}"))
    envelope = Envelope(script.name, "n0/x", "n0", "account", encode_checkpoint(state))
    h2.node.checkpoint_loaded("c2@ck", encode_envelope(envelope), h2.now)
    h2.drain()
    (ok2,) = [m for m in h2.sip() if isinstance(m, Response)]
    h2.send(in_dialog("ACK", ok2, 1))
    h2.node.digit("c2@ck", "1", h2.now)
    h2.drain()
    h2.node.prompt_finished("c2@ck", h2.now)  # "billing" prompt ends: transfer
    h2.drain()
    (refer,) = [m for m in h2.sip() if isinstance(m, Request) and m.method == "REFER"]
    assert refer.headers.get("Refer-To") == "<sip:billing@127.0.0.1>"
    (ended,) = h2.of(nc.SessionEnded)
    assert ended.reason == "transferred" and ended.variables["account"] == "4711"
    assert [d.session for d in h2.take(nc.DeleteCheckpoint)] == [session]
    h2.send(reply(refer, 202, to_tag=ok2.to_addr.tag or ""))
    notify = in_dialog(
        "NOTIFY", ok2, 2, "Event: refer", "Content-Type: message/sipfrag", body="SIP/2.0 200 OK"
    )
    h2.send(notify)
    statuses = [m for m in h2.sip()]
    assert [m.status for m in statuses if isinstance(m, Response)] == [200]
    assert [m.method for m in statuses if isinstance(m, Request)] == ["BYE"]
    assert h2.node.calls == {}


# --- resuming a session -------------------------------------------------------------------------


def _checkpoint(script: Script, session: str, digits: str = "47") -> bytes:
    state = msgspec.structs.replace(
        new_session(session, script.name, "account"),
        phase=Phase.COLLECTING,
        digits=digits,
        retries_left=2,
        prompt_done=True,
        variables={"choice": "1"},
    )
    return encode_envelope(
        Envelope(script.name, "n0/old", "n0", "account", encode_checkpoint(state))
    )


def test_resume_with_a_known_session_loads_its_checkpoint(script: Script) -> None:
    h = Harness(script)
    h.send(invite("c9@ck", f"{SESSION_HEADER}: n0-42"))
    assert h.take(nc.LoadCheckpoint) == [nc.LoadCheckpoint("c9@ck", "n0-42")]
    assert [m for m in h.sip() if isinstance(m, Response) and m.status == 200] == []  # waits
    h.node.checkpoint_loaded("c9@ck", _checkpoint(script, "n0-42"), h.now)
    h.drain()
    (ok,) = [m for m in h.sip() if isinstance(m, Response)]
    assert ok.status == 200 and ok.headers.get(SESSION_HEADER) == "n0-42"
    (resumed,) = h.of(nc.SessionResumed)
    assert (resumed.step, resumed.digits, resumed.saved_by) == ("account", "47", "n0")
    assert [p.name for p in h.take(nc.PlayPrompt)] == ["account"]  # replayed from its start
    assert h.of(nc.CollectStarted)[-1].digits == "47"
    h.node.digit("c9@ck", "1", h.now)
    h.node.digit("c9@ck", "1", h.now)
    h.drain()
    assert h.of(nc.DigitsCollected)[-1].value == "4711"
    # the checkpoints it writes now are this node's
    assert decode_envelope(h.take(nc.SaveCheckpoint)[-1].data).owner == "n1/c9@ck"


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (None, "unknown or expired"),
        (b"\x93garbage", "damaged"),
        ("foreign", "belongs to script"),
        ("other-id", "another session"),
    ],
)
def test_an_unusable_session_id_starts_a_fresh_session(
    script: Script, stored: bytes | str | None, reason: str
) -> None:
    h = Harness(script)
    h.send(invite("c9@ck", f"{SESSION_HEADER}: n0-42"))
    if stored == "foreign":
        data: bytes | None = encode_envelope(Envelope("other", "n0/x", "n0", "x", b"\x80"))
    elif stored == "other-id":
        data = _checkpoint(script, "n0-43")
    else:
        data = stored  # type: ignore[assignment]
    h.node.checkpoint_loaded("c9@ck", data, h.now)
    h.drain()
    (ok,) = [m for m in h.sip() if isinstance(m, Response)]
    fresh = ok.headers.get(SESSION_HEADER)
    assert fresh is not None and fresh != "n0-42"
    (restarted,) = h.of(nc.SessionRestarted)
    assert restarted.asked == "n0-42" and restarted.session == fresh and reason in restarted.reason
    assert [p.name for p in h.take(nc.PlayPrompt)] == ["welcome"]


def test_cancel_while_loading_a_checkpoint(script: Script) -> None:
    h = Harness(script)
    h.send(invite("c9@ck", f"{SESSION_HEADER}: n0-42"))
    h.send(
        "CANCEL sip:ivr@127.0.0.1:7000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-c9-ck\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:carol@127.0.0.1>;tag=ck1\r\nTo: <sip:ivr@127.0.0.1>\r\n"
        "Call-ID: c9@ck\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
    assert sorted(m.status for m in h.sip() if isinstance(m, Response)) == [200, 487]
    assert h.take(nc.DeleteCheckpoint) == []  # the session is not this node's to end
    h.node.checkpoint_loaded("c9@ck", _checkpoint(script, "n0-42"), h.now)  # too late: ignored
    h.drain()
    assert h.sip() == [] and h.node.calls == {}


def test_stop_hands_calls_over_without_deleting_checkpoints(script: Script) -> None:
    h = Harness(script)
    h.node.start(h.now)
    h.drain()
    (register,) = h.sip()
    h.send(reply(register, 200, "Flow-Timer: 1", "Expires: 600"))
    answered_call(h)
    h.sip()
    h.node.stop(h.now)
    h.drain()
    (unregister,) = [m for m in h.sip() if isinstance(m, Request)]
    assert unregister.method == "REGISTER" and "expires=0" in (
        unregister.headers.get("Contact") or ""
    )
    assert h.take(nc.DeleteCheckpoint) == [] and h.take(nc.CloseMedia)
    assert h.node.unregistering
    challenge = build_challenge(realm="127.0.0.1", nonce="n2", algorithm="MD5")
    h.send(reply(unregister, 401, "WWW-Authenticate: " + challenge))
    (again,) = h.sip()
    assert "expires=0" in (again.headers.get("Contact") or "") and "Authorization" in again.headers
    h.send(reply(again, 200))
    assert not h.node.unregistering


def test_choose_media_and_the_session_header_name() -> None:
    assert SESSION_HEADER == MANAGER_SESSION_HEADER
    video_only = OFFER.replace("m=audio", "m=video")
    assert choose_media(parse_sdp(video_only)) is None
    opus = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 111").replace("PCMA/8000", "opus/48000")
    assert choose_media(parse_sdp(opus.replace("a=rtpmap:0 PCMU/8000\r\n", ""))) is None


# --- `callkeeper ivr`: bad input exits 2 with one line ---------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "file not found"),
        ('[sip]\nlisten = ["udp:127.0.0.1:5999"]\n', "ivr.script: an IVR node needs a script"),
        ('[ivr]\nscript = "missing.toml"\n', "missing.toml does not exist"),
        ('[ivr]\nscript = "bad.toml"\n', "bad.toml:"),
        ("[sip]\nnope = 1\n", "sip.nope: unknown key"),
    ],
)
def test_the_ivr_command_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str | None, message: str
) -> None:
    from callkeeper.cli import main

    (tmp_path / "bad.toml").write_text('[script]\nname = "x"\nstart = "a"\n[[steps]]\nid = "a"\n')
    path = tmp_path / "ck.toml"
    if config is not None:
        path.write_text(config)
    assert main(["ivr", "--node", "n1", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_the_ivr_command_needs_the_ivr_users_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from callkeeper.cli import main

    path = tmp_path / "ck.toml"
    path.write_text(f'[ivr]\nscript = "{SCRIPT_PATH}"\n[store]\nurl = "memory:"\n')
    assert main(["ivr", "--node", "n1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no [[users]] entry named 'ivr'" in err
