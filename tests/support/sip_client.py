"""Minimal raw SIP clients for tests: build an OPTIONS, send over UDP/TCP, read the answer.

Deliberately independent of callkeeper's own parser, so the tests check the wire, not our code
against itself.
"""

from __future__ import annotations

import itertools
import re
import socket
import time

_counter = itertools.count(1)


def options_request(port: int, local_port: int, transport: str = "UDP", extra: str = "") -> bytes:
    n = next(_counter)
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK-test-{n}-{time.monotonic_ns()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@127.0.0.1>;tag=t{n}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: test-{n}-{time.monotonic_ns()}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def status_of(data: bytes) -> int | None:
    match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(match.group(1)) if match else None


def header_of(data: bytes, name: str) -> str | None:
    match = re.search(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:[ \t]*(.*?)\r$", data)
    return match.group(1).decode() if match else None


class UdpClient:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, timeout: float = 2.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return data

    def options(self, port: int, timeout: float = 2.0) -> int | None:
        """Send an OPTIONS and return the final status (ignoring provisional ones)."""
        self.send(options_request(port, self.port), port)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv(left)
            status = status_of(data) if data else None
            if status is not None and status >= 200:
                return status
        return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpClient:
    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = int(self.sock.getsockname()[1])
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self, timeout: float = 5.0) -> bytes | None:
        """One SIP message framed by Content-Length, or None on timeout/close."""
        deadline = time.monotonic() + timeout
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buffer[:end]
                match = re.search(rb"(?im)^content-length[ \t]*:[ \t]*(\d+)", head)
                length = int(match.group(1)) if match else 0
                total = end + 4 + length
                if len(self.buffer) >= total:
                    message, self.buffer = self.buffer[:total], self.buffer[total:]
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                return None

    def read_exactly(self, count: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                break
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def closed_by_peer(self, timeout: float) -> bool:
        """True when the server closes the connection within `timeout` (EOF or reset)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            if not chunk:
                return True
            self.buffer += chunk
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TcpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
