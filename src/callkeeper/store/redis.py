"""`redis://HOST:PORT/DB` — the store shared by several callkeeper nodes behind Kamailio.

Layout: every entry is its own Redis string ``ck:{namespace}:{key}``, written with
``SET name value [PX ms]``; ``scan`` is ``SCAN MATCH ck:{namespace}:*`` followed by ``MGET``.

Why strings rather than one hash per namespace: a hash would be the natural "table", but Redis
7.0 (Debian 12's) has no per-field expiry (``HEXPIRE`` arrived in 7.4), and bindings and IVR
checkpoints each need their own TTL. A hash would need a companion zset of expiry times, MULTI or
Lua to keep the two consistent, and some node to purge dead fields — which does not happen while
every node is down. With plain strings Redis itself expires each entry on time, whoever is alive,
and every operation is one atomic command, so two nodes writing the same key need no locking.

The price is ``scan``: SCAN walks the whole database's keyspace (in COUNT-sized steps, so Redis is
never stalled) and filters by pattern, which costs O(keys in the database) rather than O(keys in
the namespace). ``scan`` runs at recovery time — a node loading bindings on start, a node adopting
a dead node's IVR calls — not per call, and a database dedicated to callkeeper holds a handful of
entries per user, so that is the right trade; give callkeeper its own DB number. As with any read
of data that changes while it is read, an entry written or deleted during a scan may or may not be
in the result; one present throughout always is. SCAN may report a key twice; we de-duplicate.

Writes are pipelined: ``put``/``delete`` calls made while a pipeline is in flight go out together
in the next one, in call order (group commit, see `callkeeper.store.batch`). Without it a storm
of 1,000 concurrent REGISTERs costs 1,000 round trips and redis-py's per-command overhead on the
event loop; with it, a handful of pipelines. A pipeline is not a transaction: if it fails part-way
every caller in it gets a `StoreError`, although some of the SETs may have been applied — which
is harmless, since writing the same value again is the caller's natural retry.

Namespaces are restricted (see `callkeeper.store.base`) so they contain neither ``:`` nor glob
characters: ``ck:reg:*`` can never match an entry of another namespace. Keys may contain anything.
TTLs are rounded up to whole milliseconds and run on the Redis server's clock.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import redis.asyncio
import redis.exceptions

from callkeeper.store.base import (
    Store,
    StoreClosedError,
    StoreError,
    check_key,
    check_namespace,
    check_ttl,
    check_value,
)
from callkeeper.store.batch import WriteBatcher

_SCAN_COUNT = 1000  # keys Redis examines per SCAN step
_MGET_CHUNK = 1000  # values fetched per MGET


@dataclass(frozen=True, slots=True)
class _Put:
    name: str
    value: bytes
    px: int | None  # milliseconds to live


@dataclass(frozen=True, slots=True)
class _Delete:
    name: str


_Write = _Put | _Delete


class RedisStore(Store):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        prefix: str = "ck",
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        self.address = f"{'rediss' if ssl else 'redis'}://{host}:{port}/{db}"  # no password
        self._prefix = check_namespace(prefix) + ":"
        # A blocking pool: a burst of concurrent writes (a re-registration storm) queues for one
        # of `max_connections` connections instead of failing with "Too many connections".
        pool = redis.asyncio.BlockingConnectionPool(
            max_connections=max_connections,
            timeout=timeout,
            connection_class=redis.asyncio.SSLConnection if ssl else redis.asyncio.Connection,
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            decode_responses=False,
        )
        self._client = redis.asyncio.Redis.from_pool(pool)
        self.batcher = WriteBatcher[_Write](self._commit, name=f"redis-store {self.address}")
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisStore {self.address}{' closed' if self._closed else ''}>"

    def _name(self, namespace: str, key: str) -> str:
        return f"{self._prefix}{check_namespace(namespace)}:{check_key(key)}"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the Redis store {self.address} is closed")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise StoreError(f"Redis {what} failed on {self.address}: {exc}") from exc

    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        self._check_open()
        name = self._name(namespace, key)
        check_value(value)
        ttl = check_ttl(ttl)
        await self.batcher.submit(_Put(name, value, None if ttl is None else _ms(ttl)))

    async def get(self, namespace: str, key: str) -> bytes | None:
        self._check_open()
        name = self._name(namespace, key)
        with self._errors("read"):
            value = await self._client.get(name)
        return _as_bytes(value)

    async def delete(self, namespace: str, key: str) -> bool:
        self._check_open()
        return await self.batcher.submit(_Delete(self._name(namespace, key)))

    async def scan(self, namespace: str) -> list[tuple[str, bytes]]:
        self._check_open()
        prefix = f"{self._prefix}{check_namespace(namespace)}:".encode()
        names: set[bytes] = set()
        with self._errors("scan"):
            async for name in self._client.scan_iter(match=prefix + b"*", count=_SCAN_COUNT):
                names.add(bytes(name))
            ordered = sorted(names)
            entries: list[tuple[str, bytes]] = []
            for start in range(0, len(ordered), _MGET_CHUNK):
                chunk = ordered[start : start + _MGET_CHUNK]
                values = await self._client.mget(chunk)
                for name, value in zip(chunk, values, strict=True):
                    live = _as_bytes(value)
                    if live is not None:  # expired or deleted between SCAN and MGET
                        entries.append((name[len(prefix) :].decode(), live))
        entries.sort()
        return entries

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.batcher.drain()  # sends everything accepted before close()
        with self._errors("close"):
            await self._client.aclose()

    async def _commit(self, batch: list[_Write]) -> list[bool]:
        with self._errors("write"):
            if len(batch) == 1:  # a lone write: one command, no pipeline object
                return [await self._apply(batch[0])]
            async with self._client.pipeline(transaction=False) as pipe:
                for op in batch:
                    if isinstance(op, _Put):
                        pipe.set(op.name, op.value, px=op.px)
                    else:
                        pipe.delete(op.name)
                replies = await pipe.execute()
        return [
            isinstance(op, _Put) or int(reply) > 0 for op, reply in zip(batch, replies, strict=True)
        ]

    async def _apply(self, op: _Write) -> bool:
        if isinstance(op, _Put):
            await self._client.set(op.name, op.value, px=op.px)
            return True
        return await self._client.delete(op.name) > 0


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))  # rounded up: never expires before it was asked to


def _as_bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    raise StoreError(f"Redis returned {type(value).__name__}, expected bytes")
