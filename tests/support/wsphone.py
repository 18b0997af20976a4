"""Run JsSIP under node (tests/support/jssip/wsphone.js) as a real SIP-over-WebSocket phone.

JsSIP is the SIP stack of most browser softphones; what it does on the wire is what callkeeper
meets from WebRTC clients: a `*.invalid` Via host and Contact, RFC 5626 `+sip.instance` and
`reg-id` on REGISTER, every request and response over its one WebSocket. The script reports
events as JSON lines on stdout and takes commands on stdin (see wsphone.js).
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

JSSIP_DIR = Path(__file__).resolve().parent / "jssip"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or not (JSSIP_DIR / "node_modules" / "jssip").is_dir():
        pytest.fail(
            "node and JsSIP are needed: run `make test-deps` (npm ci in tests/support/jssip)"
        )
    return node


@dataclass
class WsPhone:
    """One JsSIP user agent registering `user` over `url`. Use as a context manager."""

    url: str
    user: str
    password: str
    domain: str = "127.0.0.1"
    process: subprocess.Popen[str] | None = None
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    history: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def start(self) -> WsPhone:
        script = str(JSSIP_DIR / "wsphone.js")
        self.process = subprocess.Popen(
            [node_binary(), script, self.url, self.user, self.password, self.domain],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event called `name` (earlier ones of other names are kept in `history`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no {name!r} from JsSIP {self.user} in {timeout} s; "
                    f"events {self.history}; output:\n{''.join(self.output)[-2000:]}"
                ) from None
            self.history.append(event)
            if event["event"] == name:
                return event

    def command(self, text: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: the WebSocket's TCP connection closes without a WebSocket close or an
        un-REGISTER, as when a laptop's browser dies. Only this process, by its PID."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> WsPhone:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
