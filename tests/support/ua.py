"""A small blocking SIP user agent for tests, written independently of callkeeper's stack
(regexes and hashlib), so that tests check callkeeper against the RFC, not against itself."""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
import time
from dataclasses import dataclass

_counter = itertools.count(1)

SDP_OFFER = (
    "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=sendrecv\r\n"
)


@dataclass
class Message:
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    @property
    def status(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3}) ", self.text)
        return int(match.group(1)) if match else None

    @property
    def method(self) -> str | None:
        match = re.match(r"([A-Z]+) \S+ SIP/2\.0", self.text)
        return match.group(1) if match else None

    def header(self, name: str) -> str | None:
        match = re.search(rf"(?im)^{re.escape(name)}[ \t]*:[ \t]*(.*?)\r?$", self.text)
        return match.group(1) if match else None

    def headers(self, name: str) -> list[str]:
        return re.findall(rf"(?im)^{re.escape(name)}[ \t]*:[ \t]*(.*?)\r?$", self.text)

    @property
    def body(self) -> str:
        return self.text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in self.text else ""

    @property
    def to_tag(self) -> str | None:
        to = self.header("To") or ""
        match = re.search(r";tag=([^;>\s]+)", to)
        return match.group(1) if match else None


def digest_answer(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """RFC 7616/2617 digest with qop=auth (MD5 or SHA-256, whichever the challenge names)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    algorithm = params.get("algorithm", "MD5")
    hash_name = "sha256" if algorithm.upper().startswith("SHA-256") else "md5"

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    realm, nonce = params["realm"], params["nonce"]
    cnonce, nc = "0a4f113b", "00000001"
    ha1 = h(f"{user}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={nc}{opaque}'
    )


class UdpAgent:
    """Sends requests from its own UDP port and reads what comes back."""

    def __init__(
        self, server_port: int, user: str = "tester", bind_host: str = "127.0.0.1"
    ) -> None:
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind_host, 0))
        self.host = bind_host
        self.port = int(self.sock.getsockname()[1])
        self.user = user
        self.inbox: list[Message] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str | None = None,
        to: str | None = None,
        to_tag: str | None = None,
        body: str = "",
        extra: str = "",
        branch: str | None = None,
    ) -> tuple[bytes, str, str, str]:
        """Build a request; returns (bytes, call_id, from_tag, branch)."""
        n = next(_counter)
        call_id = call_id or f"ua-{n}-{time.monotonic_ns()}@127.0.0.1"
        from_tag = from_tag or f"ft{n}"
        branch = branch or f"z9hG4bK-ua-{n}-{time.monotonic_ns()}"
        to_value = to or f"<{uri}>"
        if to_tag:
            to_value += f";tag={to_tag}"
        content = "Content-Type: application/sdp\r\n" if body else ""
        text = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@127.0.0.1>;tag={from_tag}\r\n"
            f"To: {to_value}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{self.user}@{self.host}:{self.port}>\r\n"
            f"{extra}{content}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        return text.encode(), call_id, from_tag, branch

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def receive(self, timeout: float = 3.0) -> Message | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return Message(data)

    def final_response(self, call_id: str, method: str, timeout: float = 5.0) -> Message | None:
        """The first final response for (Call-ID, method), skipping provisional ones."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is None:
                return None
            if message.status is None:
                self.inbox.append(message)  # a request for us (BYE ...): keep it
                continue
            cseq = message.header("CSeq") or ""
            if (
                message.header("Call-ID") == call_id
                and cseq.endswith(method)
                and message.status >= 200
            ):
                return message
        return None

    def ack(
        self,
        uri: str,
        call_id: str,
        from_tag: str,
        to_tag: str | None,
        cseq: int = 1,
        body: str = "",
        branch: str | None = None,
    ) -> None:
        data, *_ = self.request(
            "ACK",
            uri,
            call_id=call_id,
            cseq=cseq,
            from_tag=from_tag,
            to_tag=to_tag,
            body=body,
            branch=branch,
        )
        self.send(data)
