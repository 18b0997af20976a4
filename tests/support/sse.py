"""`GET /api/v1/events` as a test reads it: a thread collects every server-sent event."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from support.server import ServerProcess, wait_until


class EventStream:
    """`GET /api/v1/events` read by a thread: every event with the monotonic time it arrived."""

    def __init__(self, server: ServerProcess) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=60)
        self.connection.request("GET", "/api/v1/events")
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name = ""
        # close() may shut the stream under the reader: the response's fp goes away mid-read.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            while line := self.response.fp.readline():
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    name = text[7:]
                elif text.startswith("data: "):
                    with self._lock:
                        self.events.append((name, json.loads(text[6:]), time.monotonic()))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.connection.sock is not None:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self._thread.join(5)

    def all(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [data for n, data, _ in self.events if n == name]

    def wait(
        self, name: str, match: Callable[[dict[str, Any]], bool] = lambda d: True, timeout=10.0
    ) -> dict[str, Any]:
        found = wait_until(
            lambda: next((d for d in self.all(name) if match(d)), None),
            timeout,
            what=f"SSE {name}; seen {self.names()}",
        )
        return found  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        with self._lock:
            return [n for n, _, _ in self.events]
