"""`ivr.step` and `ivr.resumed` on the event stream, from the IVR nodes' checkpoints.

The nodes, not the call manager, run IVR scripts; what they share with it is the store, where
each session's checkpoint names its current step and the node running it. While anyone listens
to `GET /api/v1/events`, this reads the checkpoint of every call leg answered by an IVR node
every half second and reports what changed: a new step (`ivr.step`), or the session now on
another node (`ivr.resumed`, the failover).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from callkeeper.calls.manager import CallManager
from callkeeper.ivr.envelope import CHECKPOINT_NAMESPACE, decode_envelope
from callkeeper.store import Store, StoreError

INTERVAL = 0.5  # s between reads: steps last seconds (prompts), so this is close enough

Publish = Callable[[str, dict[str, Any]], None]


class IvrSessionWatch:
    def __init__(self, core: CallManager, store: Store, publish: Publish) -> None:
        self.core = core
        self.store = store
        self.publish = publish
        self.listening: Callable[[], bool] = lambda: True
        self._seen: dict[str, tuple[str | None, str]] = {}  # session → (step, node)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            if self.listening():
                await self.poll()

    async def poll(self) -> None:
        sessions = {
            leg.session: call.id
            for call in list(self.core.b2bua.calls.values())
            for leg in call.legs()
            if leg.session is not None
        }
        for session in list(self._seen):
            if session not in sessions:
                del self._seen[session]
        for session, call_id in sessions.items():
            try:
                data = await self.store.get(CHECKPOINT_NAMESPACE, session)
                envelope = decode_envelope(data) if data is not None else None
            except (StoreError, ValueError):
                continue
            if envelope is None:
                continue
            now = (envelope.step, envelope.node)
            before = self._seen.get(session)
            if before == now:
                continue
            self._seen[session] = now
            fields = {"call": call_id, "session": session, "step": now[0], "node": now[1]}
            if before is not None and before[1] != now[1]:
                self.publish("ivr.resumed", {**fields, "from_node": before[1]})
            self.publish("ivr.step", fields)
