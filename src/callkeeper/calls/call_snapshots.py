"""Established calls as the store keeps them, so that a restarted callkeeper takes them back.

One job: the stored form of a call and the two conversions — a `Call` to its snapshot, and a
snapshot back to a `Call` whose legs and dialogs can go on exactly where the B2BUA needs them.
What is kept per leg is what a dialog is (RFC 3261 §12: its id, CSeq numbers, From/To, remote
target and route set), the flow it goes over, the SDP both ways, whose it is, its session timer
and the relay port it was given. Not kept, on purpose: transactions in flight, our 2xx
retransmission and a recovery under way. A restored call is ACTIVE as it was at its last
snapshot; a phone that failed meanwhile is detected again from scratch.

Our CSeq numbers move on by `CSEQ_GAP` when a call comes back: requests went out on its
dialogs after the last snapshot (audits, relayed INFOs, refreshes) and a request that reuses a
number the phone has seen would be refused 500. A receiver must accept a gap (§12.2.2).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from callkeeper.calls.model import Call, CallState, Leg, LegState
from callkeeper.calls.session_timer import SessionTimer
from callkeeper.sip.address import parse_address
from callkeeper.sip.dialog import Dialog, DialogId, DialogState, IdGenerator, Role
from callkeeper.sip.errors import SipError
from callkeeper.sip.message import MAX_CSEQ, CSeq
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import parse_uri

FORMAT = 1  # bump when a field changes meaning; older snapshots are then dropped, not misread
CSEQ_GAP = 100_000


class DialogSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str  # "uac" | "uas"
    call_id: str
    local_tag: str
    remote_tag: str
    local_address: str  # From of our requests, with our tag
    remote_address: str
    remote_target: str
    route_set: list[str]
    creating_method: str
    creating_seq: int
    local_seq: int | None = None
    remote_seq: int | None = None
    invite_seq: int | None = None
    secure: bool = False
    local_contact: str | None = None


class LegSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    is_caller: bool
    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]
    dialog: DialogSnapshot
    call_id: str = ""
    local_tag: str = ""
    user: str | None = None
    endpoint: str | None = None
    local_sdp: bytes | None = None
    remote_sdp: bytes | None = None
    allows_update: bool = False
    session: str | None = None  # an IVR node's session id
    session_interval: float | None = None  # RFC 4028, when negotiated
    we_refresh: bool = False
    media_port: int | None = None  # its side on the built-in relay


class CallSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    created: float  # on the core's clock; the io layer stores wall-clock times
    answered: float
    a: LegSnapshot
    b: LegSnapshot
    callee: str | None = None
    recoveries: int = 0
    format: int = FORMAT


class SaveCall(msgspec.Struct, frozen=True):
    """Persistence command: write (or overwrite) the call's snapshot."""

    snapshot: CallSnapshot


class DeleteCall(msgspec.Struct, frozen=True):
    """Persistence command: the call is over, forget its snapshot."""

    call_id: str


class SnapshotError(ValueError):
    """A stored snapshot that cannot become a call (another format, a damaged field)."""


# --- a call to its snapshot ----------------------------------------------------------------------
def snapshot_of(call: Call, media_port: Callable[[Leg], int | None]) -> CallSnapshot | None:
    """The call as it stands, or None when it has no two confirmed dialogs to keep."""
    b = call.b
    if b is None or call.answered is None:
        return None
    a_snapshot, b_snapshot = _leg_snapshot(call.a, media_port), _leg_snapshot(b, media_port)
    if a_snapshot is None or b_snapshot is None:
        return None
    return CallSnapshot(
        id=call.id,
        created=call.created,
        answered=call.answered,
        a=a_snapshot,
        b=b_snapshot,
        callee=call.callee,
        recoveries=call.recoveries,
    )


def _leg_snapshot(leg: Leg, media_port: Callable[[Leg], int | None]) -> LegSnapshot | None:
    dialog = leg.dialog
    if dialog is None or dialog.state is not DialogState.CONFIRMED:
        return None
    timer = leg.session_timer
    return LegSnapshot(
        id=leg.id,
        is_caller=leg.is_caller,
        transport=leg.flow.transport,
        remote=leg.flow.remote,
        local=leg.flow.local,
        dialog=_dialog_snapshot(dialog),
        call_id=leg.call_id,
        local_tag=leg.local_tag,
        user=leg.user,
        endpoint=leg.endpoint,
        local_sdp=leg.local_sdp,
        remote_sdp=leg.remote_sdp,
        allows_update=leg.allows_update,
        session=leg.session,
        session_interval=timer.interval if timer is not None else None,
        we_refresh=timer.we_refresh if timer is not None else False,
        media_port=media_port(leg),
    )


def _dialog_snapshot(dialog: Dialog) -> DialogSnapshot:
    creating = dialog.creating_cseq
    return DialogSnapshot(
        role=dialog.role.value,
        call_id=dialog.id.call_id,
        local_tag=dialog.id.local_tag,
        remote_tag=dialog.id.remote_tag,
        local_address=str(dialog.local_address),
        remote_address=str(dialog.remote_address),
        remote_target=str(dialog.remote_target),
        route_set=[str(route) for route in dialog.route_set],
        creating_method=creating.method,
        creating_seq=creating.number,
        local_seq=dialog.local_seq,
        remote_seq=dialog.remote_seq,
        invite_seq=dialog.invite_seq,
        secure=dialog.secure,
        local_contact=str(dialog.local_contact) if dialog.local_contact is not None else None,
    )


# --- a snapshot back to a call -------------------------------------------------------------------
def restore_call(snapshot: CallSnapshot, new_id: IdGenerator) -> Call:
    """The ACTIVE call a snapshot describes; raises SnapshotError for one that cannot be."""
    if snapshot.format != FORMAT:
        raise SnapshotError(f"snapshot format {snapshot.format}, expected {FORMAT}")
    a, b = _restore_leg(snapshot.a, new_id), _restore_leg(snapshot.b, new_id)
    if not a.is_caller or b.is_caller:
        raise SnapshotError("the A leg must be the caller's and the B leg the callee's")
    return Call(
        id=snapshot.id,
        a=a,
        created=snapshot.created,
        state=CallState.ACTIVE,
        b=b,
        forks=[b],
        answered=snapshot.answered,
        recoveries=snapshot.recoveries,
        callee=snapshot.callee,
    )


def _restore_leg(snapshot: LegSnapshot, new_id: IdGenerator) -> Leg:
    timer = None
    if snapshot.session_interval is not None:
        timer = SessionTimer(snapshot.session_interval, snapshot.we_refresh)
    return Leg(
        id=snapshot.id,
        is_caller=snapshot.is_caller,
        flow=Flow(snapshot.transport, snapshot.remote, snapshot.local),
        user=snapshot.user,
        endpoint=snapshot.endpoint,
        state=LegState.CONFIRMED,
        dialog=_restore_dialog(snapshot.dialog, new_id),
        call_id=snapshot.call_id,
        local_tag=snapshot.local_tag,
        local_sdp=snapshot.local_sdp,
        remote_sdp=snapshot.remote_sdp,
        allows_update=snapshot.allows_update,
        session=snapshot.session,
        session_timer=timer,
    )


def _restore_dialog(snapshot: DialogSnapshot, new_id: IdGenerator) -> Dialog:
    try:
        role = Role(snapshot.role)
        dialog = Dialog(
            role=role,
            id=DialogId(snapshot.call_id, snapshot.local_tag, snapshot.remote_tag),
            state=DialogState.CONFIRMED,
            local_address=parse_address(snapshot.local_address),
            remote_address=parse_address(snapshot.remote_address),
            remote_target=parse_uri(snapshot.remote_target),
            route_set=tuple(parse_address(route) for route in snapshot.route_set),
            local_seq=_moved_on(snapshot.local_seq),
            remote_seq=snapshot.remote_seq,
            creating_cseq=CSeq(snapshot.creating_seq, snapshot.creating_method),
            new_id=new_id,
            secure=snapshot.secure,
            local_contact=(
                parse_address(snapshot.local_contact) if snapshot.local_contact else None
            ),
        )
    except (SipError, ValueError) as error:  # a damaged address or URI, an unknown role
        raise SnapshotError(f"dialog {snapshot.call_id}: {error}") from None
    dialog.invite_seq = snapshot.invite_seq
    return dialog


def _moved_on(local_seq: int | None) -> int:
    """Our next CSeq numbers, past any sent since the snapshot (see the module docstring).
    None (nothing sent when it was taken) moves on too: the audit may have sent since."""
    return min((local_seq or 0) + CSEQ_GAP, MAX_CSEQ)


# --- storage codec -----------------------------------------------------------------------------
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CallSnapshot)


def encode_snapshot(snapshot: CallSnapshot) -> bytes:
    return _ENCODER.encode(snapshot)


def decode_snapshot(data: bytes) -> CallSnapshot:
    """Raises `msgspec.DecodeError` (a ValueError) for damaged or foreign data."""
    return _DECODER.decode(data)
