"""Group commit: writes issued while a batch is in flight go out together in the next batch.

Why: a re-registration storm issues ~1,000 puts/s from as many tasks. Sent one by one, each pays
a full round trip — a thread hop and a transaction for SQLite, a network round trip and redis-py's
per-command overhead for Redis. Queued and sent as one transaction or one pipeline, the cost is
shared, and a lone write (an IVR checkpoint) still goes out at once, because a batch starts as
soon as the first write arrives and takes whatever has queued up behind it.

Guarantees: batches are committed one at a time and each batch in call order, so the last of
several writes to one key wins; a caller's ``submit`` returns only after its batch committed;
when a batch fails every caller in it gets its own `StoreError`. A caller that is cancelled while
waiting does not take its write back (it may already be on the wire).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from callkeeper.store.base import StoreError

Op = TypeVar("Op")


class WriteBatcher(Generic[Op]):
    """Feeds queued ops to ``commit(batch) -> one bool per op`` one batch at a time."""

    def __init__(self, commit: Callable[[list[Op]], Awaitable[list[bool]]], name: str) -> None:
        self._commit = commit
        self._name = name
        self._pending: list[tuple[Op, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # committed batches
        self.writes = 0  # committed ops

    async def submit(self, op: Op) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((op, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await done

    async def drain(self) -> None:
        """Wait until every op submitted so far is committed (or failed)."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._commit([op for op, _ in batch])
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(_failure(exc))
                if not isinstance(exc, Exception):
                    raise  # cancelled: the loop is going away
                continue
            self.batches += 1
            self.writes += len(batch)
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)


def _failure(exc: BaseException) -> StoreError:
    """A fresh exception per waiting caller, so their tracebacks do not pile up on one object."""
    if isinstance(exc, StoreError):
        error = type(exc)(str(exc))
        error.__cause__ = exc.__cause__
    elif isinstance(exc, Exception):
        error = StoreError(f"write failed: {exc!r}")
        error.__cause__ = exc
    else:
        error = StoreError("the write was abandoned: the store's flush task was cancelled")
    return error
