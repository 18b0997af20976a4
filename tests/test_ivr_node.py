"""The IVR node's SIP user agent (`callkeeper.ivr.node`), pure: a fake clock, SIP text in, commands
out. The call manager is played by hand-written messages from 127.0.0.1:5060."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from callkeeper.calls.dialing import SESSION_HEADER as MANAGER_SESSION_HEADER
from callkeeper.ivr import node_commands as nc
from callkeeper.ivr.envelope import Envelope, decode_envelope, encode_envelope
from callkeeper.ivr.node import IvrNode
from callkeeper.ivr.node_calls import choose_media
from callkeeper.ivr.node_model import SESSION_HEADER, NodeSettings
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


# --- registration: failures, retries and refreshes ----------------------------------------------


def registered(h: Harness, *headers: str) -> Request:
    """Start the node and answer its REGISTER with a 200 carrying `headers`."""
    h.node.start(h.now)
    h.drain()
    (register,) = h.sip()
    h.send(reply(register, 200, *headers))
    return register


def registers(h: Harness) -> list[Request]:
    return [m for m in h.sip() if isinstance(m, Request) and m.method == "REGISTER"]


@pytest.mark.parametrize(
    ("password", "status", "header", "reason"),
    [
        ("secret", 401, "", "credentials refused"),  # a 401 without a challenge
        (
            None,
            401,
            "WWW-Authenticate: " + build_challenge(realm="r", nonce="n", algorithm="MD5"),
            "refused",
        ),
        ("secret", 407, "Proxy-Authenticate: Digest algorithm=MD5", "credentials refused"),
        ("secret", 403, "", "Whatever"),
    ],
)
def test_a_refused_registration_is_reported_and_retried_later(
    script: Script, password: str | None, status: int, header: str, reason: str
) -> None:
    h = Harness(script, password=password)
    h.node.start(h.now)
    h.node.start(h.now)  # one REGISTER at a time
    h.drain()
    (register,) = h.sip()
    h.send(reply(register, status, *([header] if header else [])))
    assert h.sip() == []  # no Authorization is made up
    (failed,) = h.of(nc.RegistrationFailed)
    assert failed == nc.RegistrationFailed(status, failed.reason, 5.0) and reason in failed.reason
    assert h.node.registered_until is None
    h.advance(4.9)
    assert registers(h) == []
    h.advance(0.2)
    (retry,) = registers(h)
    assert retry.call_id == register.call_id and retry.cseq.number == register.cseq.number + 1


def test_an_unanswered_register_times_out_and_is_retried(script: Script) -> None:
    h = Harness(script)
    h.node.start(h.now)
    h.drain()
    first = registers(h)[0]
    h.advance(31.0)  # Timer F is 64 × T1 = 32 s; until then only retransmissions
    assert h.of(nc.RegistrationFailed) == []
    assert {m.cseq.number for m in registers(h)} == {first.cseq.number}
    h.advance(1.5)
    (failed,) = h.of(nc.RegistrationFailed)
    assert failed.status == 408 and "no answer" in failed.reason
    h.sip()
    h.advance(5.0)
    assert {m.cseq.number for m in registers(h)} == {first.cseq.number + 1}


def test_423_raises_the_expiry_to_the_servers_minimum(script: Script) -> None:
    h = Harness(script)
    h.node.start(h.now)
    h.drain()
    (register,) = h.sip()
    assert "expires=300" in (register.headers.get("Contact") or "")
    h.send(reply(register, 100))  # provisional: nothing to do yet
    assert h.sip() == [] and h.of(nc.RegistrationFailed) == []
    h.send(reply(register, 423, "Min-Expires: 900"))
    (again,) = h.sip()
    assert "expires=900" in (again.headers.get("Contact") or "")
    assert h.of(nc.RegistrationFailed) == []
    h.send(reply(again, 200, "Expires: 900"))
    assert h.of(nc.Registered) == [nc.Registered(expires=900, flow_timer=None, challenged=False)]


def test_granted_expiry_comes_from_our_own_contact_else_the_default(script: Script) -> None:
    h = Harness(script)
    registered(
        h,
        "Contact: <sip:ivr@10.0.0.1:7000>;expires=50",  # another device's binding
        "Contact: <sip:ivr@127.0.0.1:7000>;expires=soon",  # ours, but unreadable
    )
    # neither usable, no Expires header: what we asked for; no Flow-Timer: keep-alive every 25 s
    assert h.of(nc.Registered) == [nc.Registered(expires=300, flow_timer=None, challenged=False)]
    h.advance(24.9)
    assert h.wire == []
    h.advance(0.2)
    assert [len(d) for d in h.wire] == [20]
    h2 = Harness(script)
    registered(h2, "Contact: <sip:ivr@127.0.0.1:7000>", "Expires: 77")  # no expires param
    assert h2.of(nc.Registered)[0].expires == 77


def test_a_refresh_keeps_the_keepalive_schedule(script: Script) -> None:
    h = Harness(script)
    registered(h, "Expires: 20", "Flow-Timer: 10")  # keep-alive every 8 s, refresh at 10 s
    pong = b"\x01\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"0" * 12
    h.advance(8.0)
    h.node.receive_datagram(pong, MANAGER, h.now)
    h.advance(2.0)
    (refresh,) = registers(h)
    h.wire.clear()
    h.send(reply(refresh, 200, "Expires: 20", "Flow-Timer: 10"))
    assert len(h.of(nc.Registered)) == 2
    h.advance(5.9)  # the keep-alive stays due at 16 s, not pushed to 18 s
    assert h.wire == []
    h.advance(0.2)
    assert [d[:2] for d in h.wire] == [b"\x00\x01"]


def test_keepalive_answers_from_elsewhere_do_not_keep_the_flow(script: Script) -> None:
    h = Harness(script)
    registered(h, "Flow-Timer: 1", "Expires: 600")
    ok = answered_call(h)
    session = ok.headers.get(SESSION_HEADER)
    pong = b"\x01\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"0" * 12
    for _ in range(5):
        h.advance(0.8)
        h.node.receive_datagram(pong, ("127.0.0.1", 9999), h.now)  # not the call manager
        h.drain()
    (lost,) = h.of(nc.FlowLost)
    assert lost.calls == 1 and lost.silent_for > 3.2
    # the call is let go without a BYE and without deleting its checkpoint (another node resumes)
    assert [e.reason for e in h.of(nc.CallEnded)] == ["flow to the call manager lost"]
    assert h.take(nc.DeleteCheckpoint) == [] and h.take(nc.CloseMedia) == [nc.CloseMedia("c1@ck")]
    sent = [m for m in h.sip() if isinstance(m, Request)]
    assert [m.method for m in sent] == ["REGISTER"] and h.node.calls == {}
    assert session is not None and h.of(nc.SessionEnded) == []


def test_stop_before_registering_sends_nothing(script: Script) -> None:
    h = Harness(script)
    h.node.stop(h.now)
    h.drain()
    assert h.wire == [] and not h.node.unregistering


def test_a_refused_deregistration_is_not_retried_in_a_loop(script: Script) -> None:
    h = Harness(script)
    registered(h, "Expires: 600")
    h.node.stop(h.now)
    h.drain()
    (unregister,) = h.sip()
    challenge = "WWW-Authenticate: " + build_challenge(
        realm="127.0.0.1", nonce="n3", algorithm="MD5"
    )
    h.send(reply(unregister, 401, challenge))
    (again,) = h.sip()
    h.send(reply(again, 401, challenge))  # the same nonce: the password is wrong
    assert h.sip() == [] and not h.node.unregistering


# --- calls: bad INVITEs, in-dialog requests, timers -------------------------------------------------


def responses(h: Harness) -> list[Response]:
    return [m for m in h.sip() if isinstance(m, Response)]


def out_of_dialog(method: str, *extra: str) -> str:
    return (
        f"{method} sip:ivr@127.0.0.1:7000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ood-{method}\r\nMax-Forwards: 70\r\n"
        "From: <sip:callkeeper@127.0.0.1>;tag=x\r\nTo: <sip:ivr@127.0.0.1>\r\n"
        f"Call-ID: ood-{method}@ck\r\nCSeq: 1 {method}\r\n"
        + "".join(line + "\r\n" for line in extra)
        + "Content-Length: 0\r\n\r\n"
    )


G722_ONLY = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 9").replace("PCMA/8000", "G722/8000")


@pytest.mark.parametrize(
    ("body", "extra", "status"),
    [
        ("v=0\r\nthis is not SDP\r\n", (), 400),
        (G722_ONLY.replace("a=rtpmap:0 PCMU/8000\r\n", ""), (), 488),
        (OFFER.replace("c=IN IP4 127.0.0.9\r\n", ""), (), 400),  # no connection address
    ],
)
def test_an_unusable_invite_is_refused(
    script: Script, body: str, extra: tuple[str, ...], status: int
) -> None:
    h = Harness(script)
    h.send(invite("bad@ck", *extra, body=body))
    assert [r.status for r in responses(h)] == [status]
    assert h.node.calls == {} and h.commands == [] and h.of(nc.CallAnswered) == []


def test_an_invite_without_contact_is_refused(script: Script) -> None:
    h = Harness(script)
    h.send(invite("nc@ck").replace("Contact: <sip:callkeeper@127.0.0.1:5060>\r\n", ""))
    assert [r.status for r in responses(h)] == [400]
    assert h.node.calls == {} and h.take(nc.LoadCheckpoint) == []


def test_an_invite_without_sdp_gets_an_offer_and_media_waits(script: Script) -> None:
    h = Harness(script)
    h.send(invite("late@ck", body=""))
    (ok,) = responses(h)
    assert ok.status == 200 and ok.headers.get("Content-Type") == "application/sdp"
    (audio,) = parse_sdp(ok.body).media
    assert audio.port == RTP_PORT and audio.payload_types == [0, 8, 101]
    assert h.take(nc.OpenMedia) == []  # no remote address yet
    assert h.of(nc.CallAnswered)[0].call == "late@ck"


def test_a_second_invite_for_a_known_call_id_starts_no_second_session(script: Script) -> None:
    h = Harness(script)
    answered_call(h)
    h.take(nc.OpenMedia)
    other_branch = invite().replace("branch=z9hG4bK-c1-ck", "branch=z9hG4bK-other")
    h.send(other_branch)
    assert [r.status for r in responses(h)] == [482]  # a merged request (RFC 3261 §8.2.2.2)
    assert h.take(nc.OpenMedia) == [] and len(h.of(nc.CallAnswered)) == 1


def test_an_unacknowledged_2xx_ends_the_call_with_a_bye(script: Script) -> None:
    h = Harness(script)
    h.send(invite())
    (ok,) = responses(h)
    session = ok.headers.get(SESSION_HEADER)
    h.advance(31.0)
    assert {r.status for r in responses(h)} == {200} and h.node.calls
    h.advance(1.5)  # Timer H (64 × T1) has passed without an ACK
    bye, *retransmitted = [m for m in h.sip() if isinstance(m, Request)]
    assert {m.method for m in retransmitted} <= {"BYE"}
    assert bye.method == "BYE" and bye.call_id == "c1@ck" and bye.to_addr.tag == "ck1"
    assert h.take(nc.DeleteCheckpoint) == [nc.DeleteCheckpoint(session, "n1/c1@ck")]
    assert [e.reason for e in h.of(nc.CallEnded)] == ["no ACK for our 2xx"]
    assert h.node.calls == {}


def test_stray_acks_and_stale_requests_in_a_dialog(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    h.send(in_dialog("ACK", ok, 1, branch="again"))  # a second ACK: nothing to stop
    h.send(in_dialog("ACK", ok, 1).replace("Call-ID: c1@ck", "Call-ID: gone@ck"))
    assert h.sip() == []
    h.send(in_dialog("INFO", ok, 1, branch="old"))  # CSeq not above the INVITE's
    assert [r.status for r in responses(h)] == [500]
    h.send(in_dialog("MESSAGE", ok, 2, body="hi"))
    (refused,) = responses(h)
    assert refused.status == 405 and "INFO" in (refused.headers.get("Allow") or "")
    assert refused.to_addr.tag == ok.to_addr.tag and "c1@ck" in h.node.calls


def test_in_dialog_notify_options_and_info_ping(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    h.send(in_dialog("OPTIONS", ok, 2))
    h.send(in_dialog("INFO", ok, 3))  # no body, no type: a ping
    h.send(in_dialog("NOTIFY", ok, 4, "Event: dialog", body="x"))
    body = "SIP/2.0 100 Trying"  # our REFER's progress, not its end
    h.send(in_dialog("NOTIFY", ok, 5, "Event: refer;id=2", body=body))
    assert [r.status for r in responses(h)] == [200, 200, 200, 200]
    assert h.of(nc.DigitReceived) == [] and "c1@ck" in h.node.calls
    h.send(in_dialog("INFO", ok, 6, "Content-Type: text/plain", body="1"))
    assert [r.status for r in responses(h)] == [415]


def test_out_of_dialog_requests(script: Script) -> None:
    h = Harness(script)
    h.send(out_of_dialog("NOTIFY", "Event: check-sync"))  # e.g. a reboot request
    h.send(out_of_dialog("MESSAGE"))
    h.send(out_of_dialog("ACK"))
    ok, refused = responses(h)
    assert ok.status == 200 and ok.cseq.method == "NOTIFY"
    assert refused.status == 405 and refused.headers.get("Allow", "").startswith("INVITE")
    assert h.node.calls == {} and h.events == []


def cancel(call_id: str, branch: str) -> str:
    return (
        f"CANCEL sip:ivr@127.0.0.1:7000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:carol@127.0.0.1>;tag=ck1\r\nTo: <sip:ivr@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )


def test_cancel_after_the_answer_or_of_nothing_leaves_calls_alone(script: Script) -> None:
    h = Harness(script)
    answered_call(h)
    h.send(cancel("c1@ck", "z9hG4bK-c1-ck"))  # too late: the call is answered
    h.send(cancel("nobody@ck", "z9hG4bK-nobody"))
    statuses = [r.status for r in responses(h)]
    assert 487 not in statuses and statuses[-1] == 481
    assert "c1@ck" in h.node.calls and h.of(nc.CallEnded) == []


def test_reinvite_without_sdp_and_with_bad_or_unchanged_sdp(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    h.take(nc.OpenMedia)
    contact = "Contact: <sip:c@127.0.0.1>"
    h.send(in_dialog("INVITE", ok, 2, contact))
    (offer,) = responses(h)
    assert offer.status == 200 and offer.headers.get(SESSION_HEADER) == ok.headers.get(
        SESSION_HEADER
    )
    assert parse_sdp(offer.body).origin.session_version == 2 and parse_sdp(offer.body).media[
        0
    ].port == (RTP_PORT)
    sdp = "Content-Type: application/sdp"
    h.send(in_dialog("INVITE", ok, 3, contact, sdp, body="v=0\r\nbroken\r\n"))
    h.send(in_dialog("INVITE", ok, 4, contact, sdp, body=G722_ONLY))
    assert [r.status for r in responses(h)] == [400, 488]
    h.send(in_dialog("INVITE", ok, 5, contact, sdp, body=OFFER))  # the same media again
    (same,) = responses(h)
    assert same.status == 200 and parse_sdp(same.body).origin.session_version == 3
    assert h.take(nc.UpdateMedia) == [] and h.take(nc.OpenMedia) == []


def test_a_late_cancel_does_not_end_a_confirmed_call(script: Script) -> None:
    # regression: a CANCEL after the ACK (answer cleared) used to end the call silently, with
    # no BYE to the caller and no 487 (the INVITE already had its 2xx)
    h = Harness(script)
    ok = answered_call(h)
    h.commands.clear()
    h.send(cancel("c1@ck", "z9hG4bK-c1-ck"))
    assert [r.status for r in responses(h)] == [200]
    assert h.commands == [] and h.of(nc.CallEnded) == [] and "c1@ck" in h.node.calls
    h.send(in_dialog("BYE", ok, 2))  # the call still ends the normal way
    assert [r.status for r in responses(h)] == [200] and h.take(nc.DeleteCheckpoint)


# --- the script's commands through the node ---------------------------------------------------------


def test_inputs_for_unknown_calls_are_ignored(script: Script) -> None:
    h = Harness(script)
    h.node.digit("nobody@ck", "1", h.now)
    h.node.prompt_progress("nobody@ck", 1.0, h.now)
    h.node.prompt_finished("nobody@ck", h.now)
    h.node.checkpoint_loaded("nobody@ck", None, h.now)
    h.drain()
    assert h.wire == [] and h.commands == [] and h.events == []


def test_no_input_ends_in_goodbye_and_a_bye(script: Script) -> None:
    h = Harness(script)
    ok = answered_call(h)
    session = ok.headers.get(SESSION_HEADER)
    for _ in range(4):  # welcome, then the menu and two retries, each timing out
        h.node.prompt_finished("c1@ck", h.now)
        h.drain()
        h.advance(5.1)
    failed = h.of(nc.CollectFailed)
    assert [(f.step, f.retries_left) for f in failed] == [("menu", 1), ("menu", 0), ("menu", 0)]
    assert [p.name for p in h.take(nc.PlayPrompt)][-1] == "goodbye"
    h.sip()
    h.node.prompt_finished("c1@ck", h.now)  # goodbye ends: the hangup step
    h.drain()
    (bye,) = [m for m in h.sip() if isinstance(m, Request)]
    assert bye.method == "BYE" and bye.call_id == "c1@ck"
    (ended,) = h.of(nc.SessionEnded)
    assert ended.session == session and ended.reason == "caller done"
    assert [e.reason for e in h.of(nc.CallEnded)] == ["caller done"] and h.node.calls == {}
    assert h.take(nc.DeleteCheckpoint)[-1].session == session


def _to_support(h: Harness, *, ack: bool) -> tuple[Response, Request]:
    h.send(invite())
    (ok,) = responses(h)
    if ack:
        h.send(in_dialog("ACK", ok, 1))
    h.node.prompt_finished("c1@ck", h.now)
    h.node.digit("c1@ck", "2", h.now)  # technical support: "transferring", then the REFER
    h.node.prompt_finished("c1@ck", h.now)
    h.drain()
    (refer,) = [m for m in h.sip() if isinstance(m, Request) and m.method == "REFER"]
    return ok, refer


def test_a_refused_transfer_hangs_up(script: Script) -> None:
    h = Harness(script)
    ok, refer = _to_support(h, ack=True)
    assert refer.headers.get("Refer-To") == "<sip:support@127.0.0.1>"
    h.send(reply(refer, 100, to_tag=ok.to_addr.tag or ""))  # provisional: nothing yet
    assert h.sip() == [] and "c1@ck" in h.node.calls
    h.send(reply(refer, 603, to_tag=ok.to_addr.tag or ""))
    (bye,) = [m for m in h.sip() if isinstance(m, Request)]
    assert bye.method == "BYE" and bye.cseq.number > refer.cseq.number
    assert [e.reason for e in h.of(nc.CallEnded)] == ["transfer refused (603)"]
    assert h.node.calls == {}


def test_a_transfer_before_the_ack_confirms_the_dialog(script: Script) -> None:
    h = Harness(script)
    ok, refer = _to_support(h, ack=False)
    assert refer.to_addr.tag == "ck1" and refer.from_addr.tag == ok.to_addr.tag
    assert refer.call_id == "c1@ck" and "c1@ck" in h.node.calls


RECORD_SCRIPT = """
[script]
name = "rec"
start = "rec"
[[steps]]
id = "rec"
kind = "record"
file = "msg-${caller}.wav"
max_seconds = 30
next = "out"
[[steps]]
id = "out"
kind = "transfer"
to = "sip:desk@10.0.0.5"
"""


def test_record_then_transfer_to_a_full_uri() -> None:
    from callkeeper.ivr.script import parse_script

    h = Harness(parse_script(RECORD_SCRIPT))
    ok = answered_call(h)
    assert h.take(nc.StartRecord) == [nc.StartRecord("c1@ck", "msg-carol.wav", 30.0)]
    h.node.digit("c1@ck", "#", h.now)  # the terminator
    h.drain()
    assert h.take(nc.StopRecord) == [nc.StopRecord("c1@ck")]
    (refer,) = [m for m in h.sip() if isinstance(m, Request) and m.method == "REFER"]
    assert refer.headers.get("Refer-To") == "<sip:desk@10.0.0.5>"
    assert refer.call_id == ok.call_id


def test_digits_before_the_checkpoint_is_loaded_are_kept(script: Script) -> None:
    h = Harness(script)
    registered(h, "Flow-Timer: 1", "Expires: 600")
    h.send(invite("c9@ck", f"{SESSION_HEADER}: n0-42"))
    h.node.digit("c9@ck", "1", h.now)
    h.node.digit("c9@ck", "1", h.now)
    h.node.prompt_finished("c9@ck", h.now)  # no runner yet: nothing to finish
    h.drain()
    pong = b"\x01\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"0" * 12
    h.advance(0.9)  # the node's own timers run while the load is pending
    h.node.receive_datagram(pong, MANAGER, h.now)
    assert [d.digit for d in h.of(nc.DigitReceived)] == ["1", "1"]
    assert h.of(nc.DigitsCollected) == [] and [r.status for r in responses(h)] == [100]
    h.node.checkpoint_loaded("c9@ck", _checkpoint(script, "n0-42"), h.now)
    h.drain()
    assert [r.headers.get(SESSION_HEADER) for r in responses(h)] == ["n0-42"]
    assert h.of(nc.DigitsCollected)[-1].value == "4711"


def test_a_checkpoint_that_cannot_be_resumed_starts_afresh(script: Script) -> None:
    h = Harness(script)
    h.send(invite("c9@ck", f"{SESSION_HEADER}: n0-42"))
    broken = encode_envelope(Envelope(script.name, "n0/x", "n0", "account", b"\x93garbage"))
    h.node.checkpoint_loaded("c9@ck", broken, h.now)
    h.drain()
    (restarted,) = h.of(nc.SessionRestarted)
    assert "cannot be resumed" in restarted.reason
    assert [p.name for p in h.take(nc.PlayPrompt)] == ["welcome"]


def test_prompt_progress_is_checkpointed(script: Script) -> None:
    h = Harness(script)
    answered_call(h)
    h.take(nc.SaveCheckpoint)
    h.node.prompt_progress("c1@ck", 2.5, h.now)
    h.drain()
    (saved,) = h.take(nc.SaveCheckpoint)
    state = decode_checkpoint(decode_envelope(saved.data).data)
    assert state.step == "welcome" and state.prompt_offset == 2.5


def test_answer_sdp_rejects_extra_streams_and_omits_absent_events(script: Script) -> None:
    offer = (
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n"
        "m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        "m=audio 6000 RTP/AVP 9 0\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=recvonly\r\n"
        "m=audio 6004 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
    media = choose_media(parse_sdp(offer))
    assert media is not None and (media.codec, media.payload_type) == (Codec.PCMU, 0)
    assert media.telephone_event is None and media.remote == ("127.0.0.9", 6000)
    h = Harness(script)
    h.send(invite(body=offer))
    (ok,) = responses(h)
    video, audio, second = parse_sdp(ok.body).media
    assert (video.kind, video.port) == ("video", 0) and second.port == 0
    assert audio.port == RTP_PORT and audio.payload_types == [0]
    assert "a=sendonly" in ok.body.decode() and "telephone-event" not in ok.body.decode()
