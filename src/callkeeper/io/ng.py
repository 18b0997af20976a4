"""rtpengine's NG control protocol: `"<cookie> <bencoded dict>"` over UDP, the reply echoing the cookie.

`NgClient` keeps any number of requests in flight on one socket, matched by cookie. A request
that gets no reply is sent again with the same cookie (rtpengine answers a repeated cookie from
its cache instead of running the command twice), then fails with `NgError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

Bencodable = bytes | str | int | list["Bencodable"] | dict[str, "Bencodable"]

REQUEST_TIMEOUT = 0.5  # s per attempt: rtpengine on the same network answers in about 1 ms
ATTEMPTS = 3


class NgError(Exception):
    """rtpengine did not answer, or answered `result: error` (its reason is the message)."""


def bencode(value: Bencodable) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    return b"d" + b"".join(bencode(key) + bencode(value[key]) for key in sorted(value)) + b"e"


def bdecode(data: bytes) -> object:
    """Raises ValueError on anything that is not exactly one bencoded value."""
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as error:
        raise ValueError(f"not bencode: {error}") from None
    if end != len(data):
        raise ValueError("trailing bytes after the bencoded value")
    return value


def _decode(data: bytes, at: int) -> tuple[object, int]:
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if lead in (b"l", b"d"):
        items: list[object] = []
        at += 1
        while data[at : at + 1] != b"e":
            if at >= len(data):
                raise ValueError("unterminated list or dictionary")
            item, at = _decode(data, at)
            items.append(item)
        if lead == b"l":
            return items, at + 1
        keys = [bytes(key).decode() if isinstance(key, bytes) else str(key) for key in items[::2]]
        return dict(zip(keys, items[1::2], strict=False)), at + 1
    colon = data.index(b":", at)
    length = int(data[at:colon])
    if length < 0 or colon + 1 + length > len(data):
        raise ValueError("string runs past the end")
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


def text_values(reply: dict[str, object]) -> dict[str, object]:
    return {key: v.decode() if isinstance(v, bytes) else v for key, v in reply.items()}


class NgClient(asyncio.DatagramProtocol):
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[bytes, asyncio.Future[dict[str, object]]] = {}
        self.errors = 0  # replies we could not read, requests never answered

    @classmethod
    async def open(cls, address: tuple[str, int]) -> NgClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(lambda: cls(address), remote_addr=address)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        cookie, _, body = data.partition(b" ")
        future = self._waiting.get(cookie)
        if future is None or future.done():
            return  # the reply to an attempt we already gave up on or got
        try:
            reply = bdecode(body)
        except ValueError as error:
            self.errors += 1
            future.set_exception(NgError(f"unreadable reply: {error}"))
            return
        if not isinstance(reply, dict):
            future.set_exception(NgError(f"unexpected reply {reply!r}"))
            return
        future.set_result(text_values(reply))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable (rtpengine not running): the request will time out and retry.
        pass

    async def request(self, command: str, **params: Bencodable) -> dict[str, object]:
        """Send one NG command (`call_id=` becomes `call-id`) and return rtpengine's reply."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise NgError("the NG socket is closed")
        cookie = secrets.token_hex(8).encode()
        message = {"command": command, **{key.replace("_", "-"): v for key, v in params.items()}}
        datagram = cookie + b" " + bencode(message)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._waiting[cookie] = future
        try:
            for _ in range(ATTEMPTS):
                transport.sendto(datagram)
                with contextlib.suppress(TimeoutError):
                    reply = await asyncio.wait_for(asyncio.shield(future), REQUEST_TIMEOUT)
                    break
            else:
                self.errors += 1
                raise NgError(f"no answer to {command!r} from {self.address[0]}:{self.address[1]}")
        finally:
            del self._waiting[cookie]
            future.cancel()
        if reply.get("result") == "error":
            raise NgError(str(reply.get("error-reason", "unknown error")))
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
