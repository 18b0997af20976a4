"""Carry out the registrar's persistence commands with the configured store.

Registrations are written on every REGISTER and deleted on expiry or de-registration, so that
after `kill -9` and a restart phones stay reachable without re-registering. The core's clock is
the event loop's monotonic clock, which means nothing to another process or after a reboot, so
times are stored as wall-clock times and converted back on load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import msgspec
import structlog

from callkeeper.directory import Binding, DeleteBinding, SaveBinding, decode_binding, encode_binding
from callkeeper.store import Store

log = structlog.get_logger(__name__)

NAMESPACE = "bindings"


def _key(user: str, binding_key: str) -> str:
    return f"{user}/{binding_key}"


class BindingPersistence:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def _wall_offset(self) -> float:
        return time.time() - self.loop.time()

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

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[None] = self.loop.create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Coroutine[Any, Any, object]) -> None:
        try:
            await work
        except Exception:  # a store outage must not take calls down with it
            self.failures += 1
            log.exception("could not persist a registration")

    async def load(self) -> list[Binding]:
        """Every stored binding, with its times moved back onto the loop's clock."""
        offset = self._wall_offset()
        bindings = []
        for key, value in await self.store.scan(NAMESPACE):
            try:
                stored = decode_binding(value)
            except msgspec.DecodeError:
                log.warning("dropping an unreadable stored registration", key=key)
                await self.store.delete(NAMESPACE, key)
                continue
            bindings.append(
                msgspec.structs.replace(
                    stored,
                    expires_at=stored.expires_at - offset,
                    registered_at=stored.registered_at - offset,
                    updated_at=stored.updated_at - offset,
                )
            )
        return bindings

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
