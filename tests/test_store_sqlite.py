"""SQLite specifics: WAL across processes, kill -9, locking, group commit, paths, bad files.

The processes here are real: a child Python process opens the same file with `open_store` and
talks to the test over stdin/stdout lines, so every step is synchronised by a message, not a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callkeeper.store import SqliteStore, StoreError, open_store

# A child "node": opens the store at argv[1] and obeys one command per stdin line.
CHILD = r"""
import asyncio, sys
from callkeeper.store import open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.scan("warm-up")  # connect before saying ready
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            verb, *args = line.split()
            if verb == "put":  # put NAMESPACE KEY VALUE [TTL]
                ttl = float(args[3]) if len(args) > 3 else None
                await store.put(args[0], args[1], args[2].encode(), ttl=ttl)
            elif verb == "many":  # many NAMESPACE PREFIX COUNT  (one transaction per put)
                for i in range(int(args[2])):
                    await store.put(args[0], f"{args[1]}{i}", b"v%d" % i)
            elif verb == "burst":  # burst NAMESPACE PREFIX COUNT  (concurrent: group commit)
                await asyncio.gather(
                    *(store.put(args[0], f"{args[1]}{i}", b"v%d" % i) for i in range(int(args[2])))
                )
            print("ok", verb, flush=True)
    finally:
        await store.close()

asyncio.run(main())
"""


class Child:
    """A writer process sharing the database file with the test."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        child = cls(process)
        assert await child.read_line() == "ready"
        return child

    async def read_line(self) -> str:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        except TimeoutError:
            raise AssertionError(f"child silent for 30 s; stderr: {await self.stderr()}") from None
        if not line:
            raise AssertionError(f"child exited; stderr: {await self.stderr()}")
        return line.decode().strip()

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        return (await self.process.stderr.read()).decode(errors="replace")

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def do(self, command: str) -> None:
        await self.send(command)
        assert await self.read_line() == f"ok {command.split()[0]}"

    async def kill_9(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # by PID: no close(), no atexit, no flush
        assert await self.process.wait() == -signal.SIGKILL

    async def finish(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert await asyncio.wait_for(self.process.wait(), 30) == 0, await self.stderr()


@pytest.fixture
async def child_factory() -> AsyncIterator[list[Child]]:
    children: list[Child] = []
    yield children
    for child in children:
        if child.process.returncode is None:
            child.process.kill()
            await child.process.wait()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


# --- across processes --------------------------------------------------------------------------
async def test_another_process_reads_each_checkpoint_once_it_is_written(
    db_url: str, child_factory: list[Child]
) -> None:
    child = await Child.start(db_url)
    child_factory.append(child)
    async with open_store(db_url) as reader:
        for digit in "3141":
            await child.do(f"put ivr call-9 digits-{digit}")
            assert await reader.get("ivr", "call-9") == f"digits-{digit}".encode()
    await child.finish()


async def test_writes_survive_kill_9_of_the_writer(
    db_url: str, tmp_path: Path, child_factory: list[Child]
) -> None:
    child = await Child.start(db_url)
    child_factory.append(child)
    await child.do("burst bindings phone 300")
    await child.do("put bindings alice sip:alice@10.0.0.5 3600")
    await child.do("put ivr call-1 step-7")
    await child.kill_9()
    # The commits sit in the write-ahead log, not yet in the main file: reopening must replay it.
    assert (tmp_path / "shared.db-wal").stat().st_size > 0

    async with open_store(db_url) as restarted:
        bindings = dict(await restarted.scan("bindings"))
        assert len(bindings) == 301
        assert bindings["phone299"] == b"v299"
        assert bindings["alice"] == b"sip:alice@10.0.0.5"
        assert await restarted.get("ivr", "call-1") == b"step-7"


async def test_two_processes_writing_at_once_both_succeed(
    db_url: str, child_factory: list[Child]
) -> None:
    child = await Child.start(db_url)
    child_factory.append(child)
    async with open_store(db_url) as parent:
        # Both sides commit one transaction per put, so they contend for the write lock
        # hundreds of times; the busy timeout makes them take turns instead of failing.
        await child.send("many bindings child- 300")

        async def parent_writes() -> None:
            for i in range(300):
                await parent.put("bindings", f"parent-{i}", b"p%d" % i)

        await parent_writes()
        assert await child.read_line() == "ok many"
        entries = dict(await parent.scan("bindings"))
    assert len(entries) == 600
    assert entries["child-299"] == b"v299"
    assert entries["parent-299"] == b"p299"
    await child.finish()


# --- configuration of the connection ------------------------------------------------------------
async def test_the_database_uses_wal_and_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "pragmas.db"
    async with SqliteStore(path) as store:
        await store.put("ns", "k", b"v")
        connections = await store._connection()  # peek: these are per-connection settings
        sync = await connections.writer.execute_fetchall("PRAGMA synchronous")
        assert list(sync) == [(1,)]  # 1 = NORMAL
        query_only = await connections.reader.execute_fetchall("PRAGMA query_only")
        assert list(query_only) == [(1,)]
    with sqlite3.connect(path) as outside:
        assert outside.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persistent
        assert outside.execute("PRAGMA user_version").fetchone() == (1,)


async def test_a_write_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with SqliteStore(path, busy_timeout=20) as store:
        await store.put("ns", "first", b"1")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            write = asyncio.create_task(store.put("ns", "second", b"2"))
            ticks = 0
            while ticks < 20:  # the loop keeps running while SQLite waits on its thread
                await asyncio.sleep(0.01)
                ticks += 1
            assert not write.done()
            assert await store.get("ns", "first") == b"1"  # WAL: readers are not blocked
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await asyncio.wait_for(write, 10)  # lock released: the waiting write goes through
        assert await store.get("ns", "second") == b"2"


async def test_a_lock_held_past_the_busy_timeout_fails_every_waiting_write(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SqliteStore(path, busy_timeout=0.2) as store:
        await store.put("ns", "a", b"1")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                await store.put("ns", "b", b"2")  # a lone write
            results = await asyncio.gather(
                store.put("ns", "c", b"3"), store.delete("ns", "a"), return_exceptions=True
            )  # a batch
            assert [type(r) for r in results] == [StoreError, StoreError]
            assert all("locked" in str(r) for r in results)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The store recovers: nothing half-written, and new writes go through.
        assert await store.scan("ns") == [("a", b"1")]
        await store.put("ns", "b", b"2")
        assert await store.scan("ns") == [("a", b"1"), ("b", b"2")]


# --- group commit -------------------------------------------------------------------------------
async def test_concurrent_writes_share_transactions(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "batch.db") as store:
        await asyncio.gather(*(store.put("bindings", f"u{i}", b"x") for i in range(1000)))
        assert store.batcher.writes == 1000
        assert store.batcher.batches < 100, (
            f"{store.batcher.batches} transactions for 1000 concurrent puts"
        )
        assert len(await store.scan("bindings")) == 1000


async def test_a_batch_applies_writes_in_call_order(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "order.db") as store:
        await store.put("ns", "warm", b"")  # connected, so the next four share one batch
        batches = store.batcher.batches
        results = await asyncio.gather(
            store.put("ns", "k", b"first"),
            store.delete("ns", "k"),
            store.put("ns", "k", b"second"),
            store.delete("ns", "absent"),
        )
        assert store.batcher.batches == batches + 1
        assert results == [None, True, None, False]
        assert await store.get("ns", "k") == b"second"


async def test_close_commits_writes_that_were_already_accepted(tmp_path: Path) -> None:
    path = tmp_path / "close.db"
    store = SqliteStore(path)
    writes = [asyncio.create_task(store.put("ns", f"k{i}", b"v")) for i in range(50)]
    await asyncio.sleep(0)  # the puts are queued
    await store.close()
    await asyncio.gather(*writes)
    async with SqliteStore(path) as reopened:
        assert len(await reopened.scan("ns")) == 50


# --- paths and bad files ------------------------------------------------------------------------
async def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "ck.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.put("ns", "k", b"v")
    assert path.is_file()


async def test_a_relative_path_is_relative_to_the_current_directory_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///callkeeper-data/ck.db")
    monkeypatch.chdir("/")  # a later chdir does not move the database
    async with store:
        await store.put("ns", "k", b"v")
    assert (tmp_path / "callkeeper-data" / "ck.db").is_file()


async def test_an_uncreatable_directory_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    async with open_store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'ck.db'}") as store:
        with pytest.raises(StoreError, match="cannot create the directory"):
            await store.put("ns", "k", b"v")


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(4096))
    async with open_store(f"sqlite:///{path}") as store:
        with pytest.raises(StoreError, match="not a database"):
            await store.get("ns", "k")


async def test_a_database_from_a_newer_callkeeper_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as future:
        future.execute("PRAGMA user_version = 99")
    async with open_store(f"sqlite:///{path}") as store:
        with pytest.raises(StoreError, match="upgrade callkeeper"):
            await store.scan("ns")
