"""`sqlite:///PATH` — the embedded default: one file, shared safely by every process on the host.

Why SQLite (through aiosqlite): the registrar's bindings must survive ``kill -9`` and a restart,
and an IVR node's checkpoints must be readable by another node process the moment the first one
dies. A single SQLite file in WAL mode gives both with no server to run:

- **WAL + ``synchronous=NORMAL``**: a commit appends to the ``-wal`` file and returns without an
  fsync. The data is then in the OS page cache, so it survives the process being killed (the next
  opener replays the WAL); only a power cut or kernel crash can lose the last few commits, an
  acceptable trade for bindings and checkpoints against an fsync per commit. Readers never block
  the writer and see every committed write, from any process.
- **busy timeout**: two processes writing at once take turns (SQLite allows one writer); the
  loser waits up to ``busy_timeout`` seconds instead of failing with "database is locked".
  Write transactions start with ``BEGIN IMMEDIATE`` so the wait happens up front rather than as a
  deadlock-prone upgrade from a read lock.
- **Off the event loop**: every statement runs on aiosqlite's worker thread; the loop only queues
  work and awaits a future.
- **Group commit**: ``put``/``delete`` calls issued while a transaction is in flight are queued and
  committed together in the next one, in call order (`callkeeper.store.batch`); a storm of
  concurrent REGISTERs becomes a few transactions. Each caller still returns only after its own
  change is committed. A lone write runs as a single autocommit statement: one thread hop.

TTL: ``expires_at`` holds Unix time from `time.time()` — wall clock, because several processes
and restarts must agree on it. Reads filter on it, so expired rows are invisible immediately;
they are physically removed by a ``DELETE`` on open and then at most once per ``purge_interval``,
inside a write transaction that is happening anyway.

Two connections, each on its own aiosqlite thread: one writes, one reads. A read never queues
behind a write that is waiting for another process's lock, and it sees only committed data.

Paths follow SQLAlchemy: ``sqlite:///data/ck.db`` is relative to the current directory,
``sqlite:////var/lib/ck.db`` is absolute. Missing parent directories are created. WAL needs
shared memory between processes, so the file must be on a local filesystem (not NFS).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

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

SCHEMA_VERSION = 1

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS entries (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,                 -- Unix time; NULL = never expires
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_UPSERT = "INSERT OR REPLACE INTO entries (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)"
_GET = f"SELECT value FROM entries WHERE namespace = ? AND key = ? AND {_LIVE}"
_DELETE = f"DELETE FROM entries WHERE namespace = ? AND key = ? AND {_LIVE}"
_SCAN = f"SELECT key, value FROM entries WHERE namespace = ? AND {_LIVE} ORDER BY key"
_PURGE = "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?"


@dataclass(frozen=True, slots=True)
class _Put:
    namespace: str
    key: str
    value: bytes
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _Delete:
    namespace: str
    key: str
    now: float


_Write = _Put | _Delete


@dataclass(frozen=True, slots=True)
class _Connections:
    writer: aiosqlite.Connection  # every write, in batches, in call order
    reader: aiosqlite.Connection  # get/scan: never queued behind a write waiting for a lock


class SqliteStore(Store):
    """See the module docstring. ``batcher.batches`` counts write transactions (metrics, tests)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        purge_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._purge_interval = purge_interval
        self._clock = clock
        self._db: _Connections | None = None
        self._connect_lock = asyncio.Lock()
        self.batcher = WriteBatcher[_Write](self._commit, name=f"sqlite-store {self.path}")
        self._next_purge = 0.0
        self._closed = False  # no new operations
        self._shut = False  # connection released; never reconnect

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path)!r}{' closed' if self._closed else ''}>"

    # --- the contract ------------------------------------------------------------------------
    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        self._check_open()
        check_namespace(namespace)
        check_key(key)
        check_value(value)
        ttl = check_ttl(ttl)
        expires_at = None if ttl is None else self._clock() + ttl
        await self.batcher.submit(_Put(namespace, key, value, expires_at))

    async def delete(self, namespace: str, key: str) -> bool:
        self._check_open()
        check_namespace(namespace)
        check_key(key)
        return await self.batcher.submit(_Delete(namespace, key, self._clock()))

    async def get(self, namespace: str, key: str) -> bytes | None:
        self._check_open()
        check_namespace(namespace)
        check_key(key)
        with self._errors("read"):
            db = (await self._connection()).reader
            rows = list(await db.execute_fetchall(_GET, (namespace, key, self._clock())))
        return bytes(rows[0][0]) if rows else None

    async def scan(self, namespace: str) -> list[tuple[str, bytes]]:
        self._check_open()
        check_namespace(namespace)
        with self._errors("scan"):
            db = (await self._connection()).reader
            rows = await db.execute_fetchall(_SCAN, (namespace, self._clock()))
        return [(str(key), bytes(value)) for key, value in rows]

    async def close(self) -> None:
        self._closed = True
        await self.batcher.drain()  # commits everything accepted before close()
        async with self._connect_lock:
            db, self._db, self._shut = self._db, None, True
        if db is not None:
            with self._errors("close"):
                await db.writer.close()
                await db.reader.close()

    # --- connection --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the SQLite store {str(self.path)!r} is closed")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite {what} failed on {str(self.path)!r}: {exc}") from exc
        except ValueError as exc:  # aiosqlite: "Connection closed" when close() won a race
            if self._shut:
                raise StoreClosedError(f"the SQLite store {str(self.path)!r} is closed") from exc
            raise

    async def _connection(self) -> _Connections:
        if self._db is not None:
            return self._db
        async with self._connect_lock:
            if self._db is None:
                if self._shut:
                    raise StoreClosedError(f"the SQLite store {str(self.path)!r} is closed")
                self._db = await self._open()
            return self._db

    async def _open(self) -> _Connections:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for {str(self.path)!r}: {exc}") from exc
        with self._errors("open"):
            writer = await self._connect()
            try:
                await self._prepare(writer)  # WAL and the schema first, so the reader sees them
                reader = await self._connect()
            except BaseException:
                await writer.close()
                raise
            try:
                await reader.execute("PRAGMA query_only = 1")
            except BaseException:
                await reader.close()
                await writer.close()
                raise
        return _Connections(writer, reader)

    async def _connect(self) -> aiosqlite.Connection:
        # timeout= sets SQLite's busy timeout; isolation_level=None: we issue BEGIN/COMMIT.
        connection = aiosqlite.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        # aiosqlite's worker thread is not a daemon, so a process that exits without close()
        # (an exception escaping main) would hang forever at exit. Letting exit kill the thread
        # is as safe as `kill -9`, which this store is built to survive: every acknowledged
        # write is already committed. (A private attribute, hence the guard.)
        worker = getattr(connection, "_thread", connection)  # aiosqlite < 0.21: is a Thread
        if isinstance(worker, threading.Thread) and not worker.is_alive():
            worker.daemon = True
        return await connection

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        rows = list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
        if str(rows[0][0]).lower() != "wal":
            raise StoreError(
                f"SQLite refused WAL mode for {str(self.path)!r} (journal_mode={rows[0][0]}): "
                "put the database on a local filesystem"
            )
        await db.execute("PRAGMA synchronous = NORMAL")
        rows = list(await db.execute_fetchall("PRAGMA user_version"))
        if int(rows[0][0]) > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} has schema version {rows[0][0]}, newer than this "
                f"callkeeper understands ({SCHEMA_VERSION}): upgrade callkeeper"
            )
        await db.executescript(_SCHEMA)
        now = self._clock()
        await db.execute(_PURGE, (now,))
        self._next_purge = now + self._purge_interval

    # --- group commit (see callkeeper.store.batch) -----------------------------------------------
    async def _commit(self, batch: list[_Write]) -> list[bool]:
        with self._errors("write"):
            return await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Write]) -> list[bool]:
        db = (await self._connection()).writer
        now = self._clock()
        purge = now >= self._next_purge
        if len(batch) == 1 and not purge:  # one autocommit statement: one thread hop
            return [await self._apply(db, batch[0])]
        results: list[bool] = []
        await db.execute("BEGIN IMMEDIATE")
        try:
            for is_put, group in itertools.groupby(batch, key=lambda op: isinstance(op, _Put)):
                ops = list(group)
                if is_put:
                    rows = [(p.namespace, p.key, p.value, p.expires_at) for p in _puts(ops)]
                    await db.executemany(_UPSERT, rows)
                    results.extend(True for _ in rows)
                else:
                    results.extend([await self._apply(db, op) for op in ops])
            if purge:
                await db.execute(_PURGE, (now,))
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await db.execute("ROLLBACK")
            raise
        if purge:
            self._next_purge = now + self._purge_interval
        return results

    @staticmethod
    async def _apply(db: aiosqlite.Connection, op: _Write) -> bool:
        if isinstance(op, _Put):
            await db.execute(_UPSERT, (op.namespace, op.key, op.value, op.expires_at))
            return True
        async with db.execute(_DELETE, (op.namespace, op.key, op.now)) as cursor:
            return cursor.rowcount > 0


def _puts(ops: list[_Write]) -> list[_Put]:
    return [op for op in ops if isinstance(op, _Put)]
