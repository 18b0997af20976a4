"""Carry out the core's persistence commands with the configured store.

Registrations are written on every REGISTER and deleted on expiry or de-registration, so that
after `kill -9` and a restart phones stay reachable without re-registering. Established calls
are written when the core's CallSaver says so and deleted when they end, so that a restarted
callkeeper takes them back (calls/call_snapshots.py). The core's clock is the event loop's
monotonic clock, which means nothing to another process or after a reboot, so times are stored
as wall-clock times and converted back on load. A write that fails is logged and counted; it
never reaches the core (a store outage must not take calls down with it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec
import structlog

from callkeeper.calls.call_saver import STORED_FOR
from callkeeper.calls.call_snapshots import (
    CallSnapshot,
    DeleteCall,
    SaveCall,
    decode_snapshot,
    encode_snapshot,
)
from callkeeper.directory import Binding, DeleteBinding, SaveBinding, decode_binding, encode_binding
from callkeeper.store import Store

log = structlog.get_logger(__name__)
Record = TypeVar("Record")

NAMESPACE = "bindings"
CALLS_NAMESPACE = "calls"


def _key(user: str, binding_key: str) -> str:
    return f"{user}/{binding_key}"


class _StoreWriter:
    """Writes off the core's path, one task each; `flush` waits for those in flight."""

    what = "records"

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def _wall_offset(self) -> float:
        return time.time() - self.loop.time()

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[None] = self.loop.create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Coroutine[Any, Any, object]) -> None:
        try:
            await work
        except Exception:
            self.failures += 1
            log.exception(f"could not persist {self.what}")

    async def _read_all(self, namespace: str, decode: Callable[[bytes], Record]) -> list[Record]:
        """Every readable record of `namespace`; an unreadable one (damaged, or of a format
        this version does not know) is logged and deleted."""
        records = []
        for key, value in await self.store.scan(namespace):
            try:
                records.append(decode(value))
            except msgspec.DecodeError:
                log.warning(f"dropping unreadable stored {self.what}", key=key)
                await self.store.delete(namespace, key)
        return records

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class BindingPersistence(_StoreWriter):
    what = "registrations"

    def __call__(self, command: object) -> None:
        if isinstance(command, SaveBinding):
            binding = command.binding
            offset = self._wall_offset()
            stored = msgspec.structs.replace(
                binding,
                expires_at=binding.expires_at + offset,
                registered_at=binding.registered_at + offset,
                updated_at=binding.updated_at + offset,
            )
            ttl = max(1.0, binding.expires_at - self.loop.time())
            self._spawn(
                self.store.put(
                    NAMESPACE, _key(binding.user, binding.key), encode_binding(stored), ttl
                )
            )
        elif isinstance(command, DeleteBinding):
            self._spawn(self._delete(_key(command.user, command.binding_key)))

    async def _delete(self, key: str) -> None:
        await self.store.delete(NAMESPACE, key)

    async def load(self) -> list[Binding]:
        """Every stored binding, with its times moved back onto the loop's clock."""
        offset = self._wall_offset()
        return [
            msgspec.structs.replace(
                stored,
                expires_at=stored.expires_at - offset,
                registered_at=stored.registered_at - offset,
                updated_at=stored.updated_at - offset,
            )
            for stored in await self._read_all(NAMESPACE, decode_binding)
        ]


class CallPersistence(_StoreWriter):
    what = "calls"

    def __call__(self, command: object) -> None:
        if isinstance(command, SaveCall):
            snapshot = command.snapshot
            offset = self._wall_offset()
            stored = msgspec.structs.replace(
                snapshot, created=snapshot.created + offset, answered=snapshot.answered + offset
            )
            self._spawn(
                self.store.put(CALLS_NAMESPACE, snapshot.id, encode_snapshot(stored), STORED_FOR)
            )
        elif isinstance(command, DeleteCall):
            self._spawn(self.store.delete(CALLS_NAMESPACE, command.call_id))

    async def load(self) -> list[CallSnapshot]:
        """Every stored call, with its times moved back onto the loop's clock; unreadable ones
        (damaged, or written by a version with another format) are deleted."""
        offset = self._wall_offset()
        return [
            msgspec.structs.replace(
                stored, created=stored.created - offset, answered=stored.answered - offset
            )
            for stored in await self._read_all(CALLS_NAMESPACE, decode_snapshot)
        ]
