"""A real Debian `redis-server` on a free loopback port, for tests and benchmarks.

Started in the foreground with no persistence (the recipe in shared/peers/redis/start-redis.sh),
stopped by its PID. Readiness is a PING over raw RESP, so this helper needs nothing but the stdlib.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from support.ports import free_port
from support.processes import end_child


class RedisServerMissing(RuntimeError):
    """redis-server is not installed."""


class RedisServer:
    """``with RedisServer(workdir) as server: ... server.url ...``"""

    def __init__(self, workdir: Path, start_timeout: float = 10.0) -> None:
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing(
                "redis-server is not installed: run `make test` (it installs Debian's "
                "redis-server) or `apt-get install redis-server`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port can be taken before redis binds it: retry
            self.port = free_port()
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [
                        binary,
                        "--port", str(self.port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--daemonize", "no",
                        "--protected-mode", "yes",
                        "--dir", str(self.workdir),
                        "--logfile", "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}:\n{self.log()}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self.command(b"PING") == b"+PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def command(self, *args: bytes) -> bytes:
        """One command over raw RESP; returns the first reply line (enough for PING/FLUSHALL)."""
        request = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def flush(self) -> None:
        reply = self.command(b"FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def stop(self) -> None:
        process, self.process = self.process, None
        end_child(process, grace=5, after_kill=5)  # redis saves nothing (--save '')

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
