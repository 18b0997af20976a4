"""A userspace rtpengine (Debian's rtpengine-daemon, no kernel module) for one test, on free ports.

The start command is support/rtpengine_command.py's (the recipe's), with `--log-level=5`.
"""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from callkeeper.io.ng import bdecode, bencode
from support.ports import free_port, udp_port_free
from support.processes import end_child
from support.rtpengine_command import rtpengine_command

PORT_SPAN = 600  # callkeeper keeps 64 slots of 2 port pairs ready; the rest for the calls


def rtpengine_binary() -> str:
    path = shutil.which("rtpengine")
    if path is None:
        pytest.fail("rtpengine is not installed (make test-deps installs rtpengine-daemon)")
    return path


def _free_range(span: int) -> tuple[int, int]:
    """An even-based port range in 33000-59999 with nearly every UDP port free right now
    (rtpengine skips the few a neighbour holds; they are in the ephemeral range)."""
    for _ in range(100):
        low = random.randrange(33000, 60000 - span, 2)
        if sum(udp_port_free(port) for port in range(low, low + span)) >= 0.9 * span:
            return low, low + span - 1
    raise RuntimeError("no free port range for rtpengine")


@dataclass
class Rtpengine:
    workdir: Path
    ng_port: int = 0
    ports: tuple[int, int] = (0, 0)
    options: tuple[str, ...] = ()  # more command-line options (--dtmf-log-dest=...)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"udp:127.0.0.1:{self.ng_port}"

    def __enter__(self) -> Rtpengine:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ng_port = free_port()
        self.ports = _free_range(PORT_SPAN)
        log = (self.workdir / "rtpengine.log").open("wb")
        self.process = subprocess.Popen(
            rtpengine_command(
                rtpengine_binary(),
                ng_port=self.ng_port,
                port_min=self.ports[0],
                port_max=self.ports[1],
                pidfile=self.workdir / "rtpengine.pid",
                log_level=5,
                options=self.options,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 15
        while self.ng("ping", timeout=0.2).get("result") != "pong":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"rtpengine did not start:\n{self.log()}")
        return self

    def ng(self, command: str, timeout: float = 2.0, **params: str) -> dict[str, object]:
        """One NG request; {} when there is no answer within `timeout`."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            body = {"command": command, **{k.replace("_", "-"): v for k, v in params.items()}}
            # a fresh cookie each time: rtpengine answers a known cookie from its reply cache
            cookie = secrets.token_hex(6).encode()
            sock.sendto(cookie + b" " + bencode(body), ("127.0.0.1", self.ng_port))
            try:
                reply = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                return {}
        value = bdecode(reply.partition(b" ")[2])
        assert isinstance(value, dict)
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in value.items()}

    def calls(self) -> list[str]:
        listed = self.ng("list", limit="1000").get("calls", [])
        assert isinstance(listed, list)
        return [c.decode() if isinstance(c, bytes) else str(c) for c in listed]

    def log(self) -> str:
        path = self.workdir / "rtpengine.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        end_child(self.process, after_kill=5)
