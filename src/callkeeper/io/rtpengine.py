"""The rtpengine backend (`media.mode = "rtpengine"`): slots set up in advance, commands carried out.

`calls/rtpengine_anchor.py` plans (pure); this module talks NG to rtpengine:

- a pool of ready *slots* (see the anchor's docstring): each is an rtpengine call opened with an
  `offer` from tag `a` and an `answer` from tag `b` carrying placeholder SDP, with the
  `port-latching` flag so the two port pairs rtpengine picked stay fixed whatever SDP follows.
  The pool is refilled every `REFILL_INTERVAL`, at once when half of it is gone, and slots
  unused for `SLOT_MAX_IDLE` seconds are replaced (rtpengine deletes calls that carry no media
  for `--timeout`, 60 s by default);
- `Negotiate` → an `offer` from the side's tag to the other (`trust-address`: the addresses are
  the SDP's, not the NG sender's); `PlayMedia` → `block media` from the other side, then `play
  media` of the prompt files one after the other (rtpengine says how long each lasts), then the
  loop with `repeat-times`; `StopMedia` → `stop media` and `unblock media`; `DeleteSlot` →
  `delete`.

Keys: rtpengine started with `--dtmf-log-dest=HOST:PORT` sends one JSON datagram per RFC 4733
event it forwards (`{"callid": SLOT, "source_tag": "a", "event": 5, ...}`); with
`media.rtpengine_dtmf` set, `DtmfLog` listens there and hands each key, with the leg that sent it,
to the core (the feature code mid-call), as the relay does with the events it sees itself.

Commands for one slot run one after the other, in the order the core queued them; different
slots run concurrently. An NG failure during a call is logged and counted; the call goes on
(its media may not), never an exception into the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from callkeeper.calls.rtpengine_anchor import (
    SIDE_TAGS,
    DeleteSlot,
    Negotiate,
    PlayMedia,
    RtpengineAnchor,
    Slot,
    StopMedia,
)
from callkeeper.io.ng import Bencodable, NgClient, NgError
from callkeeper.media.dtmf import digit_for_event
from callkeeper.media.prompts import PROMPT_NAMES
from callkeeper.sdp import SdpError, parse_sdp

log = structlog.get_logger(__name__)

SLOT_POOL = 64  # ready slots kept: a burst of this many new calls costs no NG round trip
SLOT_MAX_IDLE = 30.0  # s: well inside rtpengine's default --timeout of 60 s
REFILL_INTERVAL = 0.1  # s between looks at the pool (sooner when half of it is gone)
REFILL_BACKOFF_MAX = 5.0  # s between attempts while rtpengine does not answer
REFILL_BATCH = 16  # slots set up concurrently
MUSIC_REPEATS = 10_000  # "until stopped": hours of the music loop
FLAGS: list[Bencodable] = ["trust-address", "port-latching"]
PLACEHOLDER_PORT = 9  # discard: nothing is sent before the real SDP arrives


def prompt_path(name: str) -> Path:
    """The shipped WAV rtpengine reads (it must run where callkeeper's package is installed)."""
    if name not in PROMPT_NAMES:
        raise KeyError(f"no shipped prompt named {name!r}")
    return Path(str(resources.files("callkeeper.media").joinpath("prompts", f"{name}.wav")))


def _placeholder_sdp() -> str:
    return (
        "v=0\r\no=callkeeper 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {PLACEHOLDER_PORT} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )


def _rtp_endpoint(sdp: object) -> tuple[str, int]:
    """rtpengine's address and port in the SDP it returned (first audio stream)."""
    text = sdp.decode(errors="replace") if isinstance(sdp, bytes) else str(sdp)
    try:
        session = parse_sdp(text.encode())
    except SdpError as error:
        raise NgError(f"rtpengine returned SDP we cannot read: {error}") from None
    for media in session.media:
        host = session.address_of(media)
        if media.port and host:
            return host, media.port
    raise NgError("rtpengine returned SDP without an audio stream")


def _other(tag: str) -> str:
    return SIDE_TAGS[1 - SIDE_TAGS.index(tag)]


class RtpengineMedia:
    """A driver sink for the anchor's commands, and the keeper of its slot pool."""

    def __init__(
        self,
        client: NgClient,
        anchor: RtpengineAnchor,
        loop: asyncio.AbstractEventLoop,
        pool_size: int = SLOT_POOL,
    ) -> None:
        self.client = client
        self.anchor = anchor
        self.loop = loop
        self.pool_size = pool_size
        self.failures = 0  # NG commands that failed during calls
        self._tails: dict[str, asyncio.Task[None]] = {}  # slot → its last queued command
        self._players: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refill: asyncio.Task[None] | None = None
        self._running_low = asyncio.Event()
        self._prefix = secrets.token_hex(4)
        self._count = 0

    async def start(self) -> None:
        """Check rtpengine answers and fill the pool; NgError when it cannot."""
        await self.client.request("ping")
        await self._fill()
        self._refill = self.loop.create_task(self._keep_filled())

    async def drained(self) -> None:
        """Until every command queued so far has been carried out (or has failed)."""
        await asyncio.gather(*self._tails.values(), *self._tasks, return_exceptions=True)

    def close(self) -> None:
        for task in (*self._tasks, *self._players.values(), *self._tails.values()):
            task.cancel()
        if self._refill is not None:
            self._refill.cancel()
        self.client.close()

    # --- the pool -------------------------------------------------------------------------------
    async def _keep_filled(self) -> None:
        pause = REFILL_INTERVAL
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._running_low.wait(), pause)
            self._running_low.clear()
            for slot in self.anchor.take_stale_slots(self.loop.time() - SLOT_MAX_IDLE):
                self._spawn(self._delete(slot.id))
            try:
                await self._fill()
            except NgError as error:
                self.failures += 1
                if pause == REFILL_INTERVAL:  # once per outage, not at every retry
                    log.warning("rtpengine: cannot set up media slots", error=str(error))
                pause = min(pause * 2, REFILL_BACKOFF_MAX)
            else:
                pause = REFILL_INTERVAL

    async def _fill(self) -> None:
        while (missing := self.pool_size - self.anchor.free_slots) > 0:
            batch = min(missing, REFILL_BATCH)
            results = await asyncio.gather(
                *(self._new_slot() for _ in range(batch)), return_exceptions=True
            )
            self.anchor.add_slots([slot for slot in results if isinstance(slot, Slot)])
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _new_slot(self) -> Slot:
        self._count += 1
        call_id = f"ck-{self._prefix}-{self._count}"
        common: dict[str, Bencodable] = {
            "call_id": call_id,
            "flags": FLAGS,
            "sdp": _placeholder_sdp(),
        }
        offer = await self.client.request("offer", from_tag="a", **common)
        try:
            answer = await self.client.request("answer", from_tag="a", to_tag="b", **common)
            address, port_b = _rtp_endpoint(offer.get("sdp"))
            _, port_a = _rtp_endpoint(answer.get("sdp"))
        except NgError:
            self._spawn(
                self._delete(call_id)
            )  # half set up: do not leave it to rtpengine's timeout
            raise
        return Slot(call_id, address, (port_a, port_b), self.loop.time())

    # --- commands ---------------------------------------------------------------------------
    def __call__(self, command: object) -> None:
        """A driver sink: anything that is not an rtpengine command is someone else's."""
        if isinstance(command, Negotiate):
            self._queue(command.slot, self._negotiate(command))
            if self.anchor.free_slots < self.pool_size // 2:
                self._running_low.set()  # a burst of new calls: refill now, not at the next look
        elif isinstance(command, PlayMedia):
            self._queue(command.slot, self._start_player(command))
        elif isinstance(command, StopMedia):
            self._queue(command.slot, self._stop_player(command.slot, command.tag))
        elif isinstance(command, DeleteSlot):
            for tag in SIDE_TAGS:
                player = self._players.pop((command.slot, tag), None)
                if player is not None:
                    player.cancel()
            self._queue(command.slot, self._delete(command.slot), last=True)

    def _queue(self, slot: str, work: Coroutine[Any, Any, None], *, last: bool = False) -> None:
        previous = self._tails.get(slot)
        task = self.loop.create_task(self._after(previous, work))
        if last:
            self._tails.pop(slot, None)
            self._track(task)
        else:
            self._tails[slot] = task
            task.add_done_callback(lambda done: self._forget_tail(slot, done))

    def _forget_tail(self, slot: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(slot) is task:
            del self._tails[slot]

    async def _after(
        self, previous: asyncio.Task[None] | None, work: Coroutine[Any, Any, None]
    ) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        try:
            await work
        except NgError as error:
            self.failures += 1
            log.warning("rtpengine command failed", error=str(error))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self._track(self.loop.create_task(self._after(None, work)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _negotiate(self, command: Negotiate) -> None:
        await self.client.request(
            "offer",
            call_id=command.slot,
            from_tag=command.tag,
            to_tag=_other(command.tag),
            sdp=command.sdp,
            flags=FLAGS,
        )

    async def _delete(self, slot: str) -> None:
        await self.client.request("delete", call_id=slot)

    async def _start_player(self, command: PlayMedia) -> None:
        key = (command.slot, command.tag)
        old = self._players.pop(key, None)
        if old is not None:
            old.cancel()
        self._players[key] = self.loop.create_task(self._play(command))

    async def _play(self, command: PlayMedia) -> None:
        """The prompts one after the other, then the loop; cancelled by a stop or the call's end."""
        target = {"call_id": command.slot, "from_tag": command.tag}
        try:
            # Whatever still arrives from the other side (a phone cut off from us but not from
            # rtpengine) must not mix into the prompts; `connect` unblocks it.
            await self.client.request(
                "block media", call_id=command.slot, from_tag=_other(command.tag)
            )
            for name in command.prompts:
                reply = await self.client.request(
                    "play media", file=str(prompt_path(name)), **target
                )
                duration = reply.get("duration")
                await asyncio.sleep(duration / 1000 if isinstance(duration, int) else 0)
            if command.loop is not None:
                await self.client.request(
                    "play media",
                    file=str(prompt_path(command.loop)),
                    repeat_times=MUSIC_REPEATS,
                    **target,
                )
        except NgError as error:
            self.failures += 1
            log.warning("rtpengine: cannot play media", error=str(error), slot=command.slot)

    async def _stop_player(self, slot: str, tag: str) -> None:
        player = self._players.pop((slot, tag), None)
        if player is not None:
            player.cancel()
        with contextlib.suppress(NgError):  # "not playing": the prompt had ended by itself
            await self.client.request("stop media", call_id=slot, from_tag=tag)
        await self.client.request("unblock media", call_id=slot, from_tag=_other(tag))


class DtmfLog(asyncio.DatagramProtocol):
    """rtpengine's DTMF log (`--dtmf-log-dest`): each key, with the leg that sent it, to `on_key`.

    Only rtpengine's host may report (a key is a command: the feature code moves calls); a
    datagram from elsewhere, one that is not rtpengine's JSON, or one naming a slot or side no
    call holds is dropped and counted."""

    def __init__(
        self, anchor: RtpengineAnchor, on_key: Callable[[str, str], None], rtpengine_host: str
    ) -> None:
        self.anchor = anchor
        self.on_key = on_key
        self.rtpengine_host = rtpengine_host
        self.dropped = 0
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def listen(
        cls,
        address: tuple[str, int],
        anchor: RtpengineAnchor,
        on_key: Callable[[str, str], None],
        rtpengine_host: str,
    ) -> DtmfLog:
        loop = asyncio.get_running_loop()
        _, log_socket = await loop.create_datagram_endpoint(
            lambda: cls(anchor, on_key, rtpengine_host), local_addr=address
        )
        return log_socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if addr[0] != self.rtpengine_host:
            self.dropped += 1
            return
        try:
            report = json.loads(data)
            slot, tag, event = report["callid"], report["source_tag"], report["event"]
        except (ValueError, TypeError, KeyError):
            self.dropped += 1
            return
        leg = (
            self.anchor.leg_on(slot, tag)
            if isinstance(slot, str) and isinstance(tag, str)
            else None
        )
        key = digit_for_event(event) if isinstance(event, int) else None
        if leg is None or key is None:
            self.dropped += 1
            return
        self.on_key(leg, key)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
