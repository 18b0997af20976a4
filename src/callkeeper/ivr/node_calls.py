"""The IVR node's calls: answering INVITEs (fresh or resumed from a checkpoint), the 2xx until
its ACK, re-INVITEs, INFO digits, and the SDP the node answers and offers.

One job: the SIP side of a session. An INVITE with a session id is a session moved here from
a dead node: the 200 waits for its checkpoint (`LoadCheckpoint`), and a checkpoint that is
missing, damaged, expired or of another script starts a fresh session. The media is G.711
(PCMU/PCMA) plus telephone-event when offered. Kept apart from the script's commands
(node_runner.py), which say what a running session does, and from registration.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import msgspec

from callkeeper.ivr import node_commands as nc
from callkeeper.ivr import node_registration, node_runner
from callkeeper.ivr.envelope import decode_envelope
from callkeeper.ivr.errors import CheckpointError
from callkeeper.ivr.interpreter import Interpreter
from callkeeper.ivr.node_model import ALLOW, SESSION_HEADER, IvrCall, MediaChoice
from callkeeper.ivr.session import new_session
from callkeeper.media.dtmf import DtmfError, parse_info_body
from callkeeper.media.g711 import Codec
from callkeeper.sdp.errors import SdpError
from callkeeper.sdp.model import SessionDescription
from callkeeper.sdp.parser import parse_sdp
from callkeeper.sip.address import Address
from callkeeper.sip.dialog import Dialog, DialogError
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request
from callkeeper.sip.transport import Flow

if TYPE_CHECKING:
    from callkeeper.ivr.node import IvrNode


def new_session_id(node: IvrNode) -> str:
    return f"{node.settings.node}-{node.ids()}"


def invite(
    node: IvrNode, request: Request, transaction_id: int | None, flow: Flow, now: float
) -> None:
    if request.call_id in node.calls:
        return  # a retransmission the transaction layer already answered
    offer: SessionDescription | None = None
    if request.body:
        try:
            offer = parse_sdp(request.body)
        except SdpError:
            node.respond(request, transaction_id, 400, now=now)
            return
        media = choose_media(offer)
        if media is None:
            node.respond(request, transaction_id, 488, now=now)
            return
    else:
        media = None
    contact = Address(node_registration.contact_uri(node))
    try:
        dialog = Dialog.create_uas(request, node.ids, local_contact=contact)
    except DialogError as error:
        node.respond(request, transaction_id, error.status or 400, now=now)
        return
    except ParseError:
        node.respond(request, transaction_id, 400, now=now)
        return
    call = IvrCall(
        id=request.call_id,
        dialog=dialog,
        flow=flow,
        local_port=node.media_port(request.call_id),
        offer=offer,
        media=media,
        invite=request,
        invite_transaction=transaction_id,
    )
    node.calls[call.id] = call
    asked = (request.headers.get(SESSION_HEADER) or "").strip()
    if asked:
        call.session = asked
        node.commands.append(nc.LoadCheckpoint(call.id, asked))
        return  # answered when the checkpoint is loaded
    call.session = new_session_id(node)
    start_runner(node, call, now)
    answer(node, call, now, resumed=False)
    node_runner.drain_runner(node, call, now)


def resume(
    node: IvrNode, call: IvrCall, session: str, data: bytes | None, now: float
) -> str | None:
    """Resume `session` from `data`; the reason when it cannot be (a fresh session then)."""
    if data is None:
        return "no checkpoint (unknown or expired session)"
    try:
        envelope = decode_envelope(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "the checkpoint is damaged"
    if envelope.script != node.script.name:
        return f"the session belongs to script {envelope.script!r}"
    try:
        runner = Interpreter.resumed(node.script, envelope.data, now)
    except CheckpointError as error:
        return f"the checkpoint cannot be resumed: {error}"
    if runner.session.session_id != session:
        return "the checkpoint belongs to another session"
    call.runner = runner
    state = runner.session
    call.step = state.step
    node.events.append(
        nc.SessionResumed(
            call.id, session, state.step, state.digits, state.prompt_offset, envelope.node
        )
    )
    return None


def start_runner(node: IvrNode, call: IvrCall, now: float) -> None:
    assert call.session is not None
    caller = call.invite.from_addr.uri.user or ""
    state = new_session(call.session, node.script.name, node.script.start, {"caller": caller})
    call.runner = Interpreter(node.script, state)
    call.runner.start(now)


def answer(node: IvrNode, call: IvrCall, now: float, *, resumed: bool) -> None:
    assert call.session is not None
    response = call.invite.create_response(200, to_tag=call.dialog.id.local_tag)
    headers = response.headers
    headers.add("Contact", str(Address(node_registration.contact_uri(node))))
    headers.add("Allow", ALLOW)
    headers.add("Supported", "outbound")
    headers.add("User-Agent", node.settings.user_agent)
    headers.add(SESSION_HEADER, call.session)
    if call.offer is not None and call.media is not None:
        response.body = sdp_answer(node, call, call.offer, call.media)
        headers.add("Content-Type", "application/sdp")
    elif call.offer is None:
        response.body = sdp_offer(node, call)
        headers.add("Content-Type", "application/sdp")
    call.dialog.send_response(response)
    call.answer = response
    call.retransmit_interval = node.settings.timers.t1
    call.retransmit_deadline = now + node.settings.timers.timer_h
    node.timers.schedule(now + call.retransmit_interval, ("2xx", call.id))
    if call.invite_transaction is not None:
        node.endpoint.send_response(response, now, call.invite_transaction)
    if call.media is not None:
        node.commands.append(
            nc.OpenMedia(
                call.id,
                call.local_port,
                call.media.remote,
                call.media.codec,
                call.media.payload_type,
                call.media.telephone_event,
            )
        )
    node.events.append(nc.CallAnswered(call.id, call.session, resumed))


def retransmit_2xx(node: IvrNode, call_id: str, now: float) -> None:
    call = node.calls.get(call_id)
    if call is None or call.answer is None:
        return
    if now >= call.retransmit_deadline:
        call.answer = None
        node_runner.hang_up(node, call, now, "no ACK for our 2xx", delete=True)
        return
    node.endpoint.send_response(call.answer, now)
    call.retransmit_interval = min(call.retransmit_interval * 2, node.settings.timers.t2)
    node.timers.schedule(
        min(now + call.retransmit_interval, call.retransmit_deadline), ("2xx", call.id)
    )


def reinvite(
    node: IvrNode, call: IvrCall, request: Request, transaction_id: int | None, now: float
) -> None:
    tag = call.dialog.id.local_tag
    if not request.body:
        call.sdp_version += 1
        body = sdp_offer(node, call)
    else:
        try:
            offer = parse_sdp(request.body)
        except SdpError:
            node.respond(request, transaction_id, 400, to_tag=tag, now=now)
            return
        media = choose_media(offer)
        if media is None:
            node.respond(request, transaction_id, 488, to_tag=tag, now=now)
            return
        call.offer = offer
        call.sdp_version += 1
        body = sdp_answer(node, call, offer, media)
        if media != call.media:
            call.media = media
            node.commands.append(
                nc.UpdateMedia(
                    call.id,
                    media.remote,
                    media.codec,
                    media.payload_type,
                    media.telephone_event,
                )
            )
    response = request.create_response(200, to_tag=tag)
    response.headers.add("Contact", str(Address(node_registration.contact_uri(node))))
    if call.session is not None:
        response.headers.add(SESSION_HEADER, call.session)
    response.headers.add("Content-Type", "application/sdp")
    response.body = body
    call.dialog.send_response(response)
    if transaction_id is not None:
        node.endpoint.send_response(response, now, transaction_id)


def info(
    node: IvrNode, call: IvrCall, request: Request, transaction_id: int | None, now: float
) -> None:
    tag = call.dialog.id.local_tag
    content_type = request.headers.get("content-type") or ""
    if not request.body and not content_type:
        node.respond(request, transaction_id, 200, to_tag=tag, now=now)  # an INFO ping
        return
    try:
        pressed = parse_info_body(content_type, request.body)
    except DtmfError:
        status = 415 if "dtmf" not in content_type.lower() else 400
        node.respond(request, transaction_id, status, to_tag=tag, now=now)
        return
    node.respond(request, transaction_id, 200, to_tag=tag, now=now)
    node.digit(call.id, pressed.digit, now, via="info")


def sdp_head(node: IvrNode, call: IvrCall) -> list[str]:
    host = node.settings.media_host
    family = "IP6" if ":" in host else "IP4"
    session_id = zlib.crc32(call.id.encode())  # any number, fixed for the dialog
    return [
        "v=0",
        f"o=callkeeper-ivr {session_id} {call.sdp_version} IN {family} {host}",
        "s=callkeeper ivr",
        f"c=IN {family} {host}",
        "t=0 0",
    ]


def sdp_answer(
    node: IvrNode, call: IvrCall, offer: SessionDescription, media: MediaChoice
) -> bytes:
    lines = sdp_head(node, call)
    audio_done = False
    for offered in offer.media:
        if audio_done or offered.kind != "audio" or offered.rejected or not offered.is_rtp:
            fmt = offered.formats[0] if offered.formats else "0"
            lines.append(f"m={offered.kind} 0 {offered.proto} {fmt}")
            continue
        audio_done = True
        formats = [str(media.payload_type)]
        if media.telephone_event is not None:
            formats.append(str(media.telephone_event))
        lines.append(f"m=audio {call.local_port} {offered.proto} {' '.join(formats)}")
        lines.append(f"a=rtpmap:{media.payload_type} {media.codec.name}/8000")
        if media.telephone_event is not None:
            lines.append(f"a=rtpmap:{media.telephone_event} telephone-event/8000")
            lines.append(f"a=fmtp:{media.telephone_event} 0-15")
        lines.append("a=ptime:20")
        direction = offer.direction_of(offered).value
        answered = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
        lines.append(f"a={answered.get(direction, 'sendrecv')}")
    return ("\r\n".join(lines) + "\r\n").encode()


def sdp_offer(node: IvrNode, call: IvrCall) -> bytes:
    lines = sdp_head(node, call)
    lines += [
        f"m=audio {call.local_port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


_G711 = {"pcmu": Codec.PCMU, "pcma": Codec.PCMA}


def choose_media(offer: SessionDescription) -> MediaChoice | None:
    """The first audio stream's first G.711 format (and its telephone-event), or None."""
    for media in offer.media:
        if media.kind != "audio" or media.rejected or not media.is_rtp:
            continue
        host = offer.address_of(media)
        if host is None:
            return None
        for payload_type in media.payload_types:
            rtpmap = media.rtpmap(payload_type)
            if rtpmap is None or rtpmap.clock_rate != 8000:
                continue
            codec = _G711.get(rtpmap.encoding.lower())
            if codec is not None:
                return MediaChoice((host, media.port), codec, payload_type, media.telephone_event)
        return None
    return None
