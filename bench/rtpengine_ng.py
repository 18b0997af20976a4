"""rtpengine for benches: start it userspace-only (no kernel module), talk the NG protocol, stop it.

NG = `"<cookie> <bencoded dict>"` over UDP; the reply echoes the cookie. The start command is
tests/support/rtpengine_command.py's (the tests use the same one), at `--log-level=4`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from callkeeper.io.ng import Bencodable, bdecode, bencode
from support.rtpengine_command import rtpengine_command


class NgClient:
    """One request at a time over UDP, with a timeout and retries."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))

    def __call__(self, command: str, **params: Bencodable) -> dict[str, object]:
        cookie = secrets.token_hex(6).encode()
        request = {"command": command, **{key.replace("_", "-"): v for key, v in params.items()}}
        message = cookie + b" " + bencode(request)
        for _ in range(3):
            self.sock.sendto(message, self.address)
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65535)
                except TimeoutError:
                    break
                got, _, body = data.partition(b" ")
                if got != cookie:
                    continue  # a late reply to an earlier, retried request
                reply = bdecode(body)
                if not isinstance(reply, dict):
                    raise RuntimeError(f"rtpengine: unexpected reply {reply!r}")
                return {k: v.decode() if isinstance(v, bytes) else v for k, v in reply.items()}
        raise RuntimeError(f"rtpengine does not answer {command!r} on {self.address}")

    def close(self) -> None:
        self.sock.close()


def start_rtpengine(
    ng_port: int, port_min: int, port_max: int, workdir: Path, cpu: str | None = "0"
) -> subprocess.Popen[bytes]:
    """Userspace-only rtpengine in the foreground (our child), pinned to `cpu`; waits for NG."""
    pidfile = workdir / f"rtpengine-{ng_port}.pid"
    command = rtpengine_command(
        "rtpengine",
        ng_port=ng_port,
        port_min=port_min,
        port_max=port_max,
        pidfile=pidfile,
        log_level=4,  # warnings: the recipe's 6 logs every offer/answer
    )
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    log = (workdir / "rtpengine.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    log.close()
    client = NgClient(ng_port, timeout=0.3)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"rtpengine exited ({process.returncode}); see {workdir}")
            try:
                if client("ping").get("result") == "pong":
                    return process
            except RuntimeError:
                if time.monotonic() > deadline:
                    stop_process(process)
                    raise
    finally:
        client.close()


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM our child by its PID, SIGKILL it after `grace`, and reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)


def sdp(port: int, session: int, host: str = "127.0.0.1") -> str:
    """A phone's PCMU offer/answer: audio at host:port."""
    return (
        f"v=0\r\no=- {session} {session} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def sdp_port(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise RuntimeError(f"no m=audio line in rtpengine's SDP: {text!r}")
