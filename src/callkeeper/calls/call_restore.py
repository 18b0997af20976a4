"""Calls taken back from the store when callkeeper starts (a crash, an upgrade).

One job: turning the snapshots a previous run wrote (call_snapshots.py) into live calls of this
run's core. Each becomes an ACTIVE call of the B2BUA (its dialogs indexed, session timers armed,
audited soon), its phones are watched as phones in a call, the recovery engine knows which
endpoints it is on, and with the built-in relay its legs take their old relay ports back, so
the phones, which saw nothing of the restart, are heard again. A snapshot that cannot become a
call is deleted from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from callkeeper.calls.call_snapshots import CallSnapshot, DeleteCall, SnapshotError, restore_call
from callkeeper.calls.model import Call, Leg

if TYPE_CHECKING:
    from callkeeper.calls.manager import CallManager


def restore_calls(core: CallManager, snapshots: Iterable[CallSnapshot], now: float) -> int:
    """How many of the snapshots came back as calls."""
    restored = 0
    for snapshot in snapshots:
        try:
            call = restore_call(snapshot, core.ids)
        except SnapshotError:
            core.persist(DeleteCall(snapshot.id))
            continue
        if call.id in core.b2bua.calls or call.b is None:
            continue
        core.b2bua.adopt(call, now)
        _restore_media(core, call, call.b, snapshot)
        core.saver.restored(call.id, now)
        for endpoint_id in (call.a.endpoint, call.b.endpoint):
            core.watch.call_started_on(endpoint_id, now)
        core.recovery.call_answered(call.id)
        restored += 1
    return restored


def _restore_media(core: CallManager, call: Call, b: Leg, snapshot: CallSnapshot) -> None:
    """The relay sides on their old ports, connected. Without them (rtpengine, `off`, a port
    taken meanwhile) the call's signalling still comes back; its media is the anchor's own."""
    media, a_port, b_port = core.media, snapshot.a.media_port, snapshot.b.media_port
    if media is None or a_port is None or b_port is None:
        return
    if media.restore_side(call, call.a, a_port) and media.restore_side(call, b, b_port):
        media.connect(call.a, b)
