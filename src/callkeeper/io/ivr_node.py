"""`callkeeper ivr --node NAME --config FILE`: the asyncio side of an IVR node.

It owns what the pure `callkeeper.ivr.node.IvrNode` may not touch: the clock (the loop's), one UDP
socket for SIP, one RTP socket per call, the prompts' audio, and the shared store that holds the
sessions' checkpoints (namespace ``ivr``, key = session id, so another node reads them after this
one dies). Inputs go into the core with `now`; its commands come out of `next_command()` and are
carried out here; one loop timer is re-armed at the core's `get_timer()`.

Media: a single 20 ms ticker drives every call's `media.player.Player` (100 calls cost one wake-up
per frame time, not 100). Received RTP is parsed; telephone-events (RFC 4733) become digits
through `media.dtmf.TelephoneEventReceiver`, G.711 audio is kept while a record step records.

Store writes for one session are applied in the order the core issued them (a chain of tasks
per session), different sessions' writes overlap (the store batches them into one commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from callkeeper.config import Config
from callkeeper.ivr import node_commands as nc
from callkeeper.ivr.envelope import CHECKPOINT_NAMESPACE, decode_envelope
from callkeeper.ivr.node import IvrNode
from callkeeper.ivr.node_model import NodeSettings
from callkeeper.ivr.script import Script
from callkeeper.ivr.session import decode_checkpoint
from callkeeper.media import rtp
from callkeeper.media.dtmf import TelephoneEventReceiver
from callkeeper.media.g711 import Codec, decode
from callkeeper.media.player import PTIME_SECONDS, SAMPLES_PER_FRAME, Player, encode_frames
from callkeeper.media.prompts import PromptError, decode_wav, encode_wav
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.sip.transport import Transmit
from callkeeper.store import Store, StoreError, open_store

log = structlog.get_logger("callkeeper.ivr")

CHECKPOINT_TTL = 3600.0
"""Seconds a checkpoint outlives its last write: an abandoned session's id then means nothing."""
PROGRESS_EVERY = 0.5  # seconds of prompt audio between `prompt_progress` reports
SHUTDOWN_WAIT = 1.0  # seconds to wait for the de-registration's answer


class NodeStartupError(Exception):
    """The node cannot start (one line for the CLI)."""


@dataclass(slots=True)
class _Media:
    sock: socket.socket
    remote: tuple[str, int] | None = None
    codec: Codec = Codec.PCMU
    payload_type: int = 0
    telephone_event: int | None = None
    ssrc: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    sequence: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    timestamp: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    last_sent: float | None = None
    player: Player | None = None
    prompt_start_offset: float = 0.0
    frames_reported: int = 0
    dtmf: TelephoneEventReceiver = field(default_factory=TelephoneEventReceiver)
    recording: list[np.ndarray] | None = None
    record_file: str | None = None


def node_settings(config: Config, node: str, listen: tuple[str, int]) -> NodeSettings:
    """What the pure node needs from the config; raises NodeStartupError with the key at fault."""
    udp = [address for address in config.sip.listen if address.transport == "udp"]
    if not udp:
        raise NodeStartupError("sip.listen: the IVR node needs a udp: address of the call manager")
    host = udp[0].host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    users = {user.name: user for user in config.users}
    user = users.get(config.ivr.user)
    password = None
    if user is not None:
        if user.password is None and user.ha1 is not None:
            raise NodeStartupError(
                f"users: the IVR user {config.ivr.user!r} needs a password (not ha1) to register"
            )
        password = user.password
    elif not config.sip.trusted_sources:
        raise NodeStartupError(f"ivr.user: no [[users]] entry named {config.ivr.user!r}")
    return NodeSettings(
        node=node,
        user=config.ivr.user,
        password=password,
        domain=config.sip.domain,
        registrar=(host, udp[0].port),
        local=listen,
        media_host=listen[0],
    )


class IvrNodeProcess:
    def __init__(self, config: Config, node_name: str, script: Script, store: Store) -> None:
        self.config = config
        self.node_name = node_name
        self.script = script
        self.store = store
        self.loop = asyncio.get_running_loop()
        self.node: IvrNode | None = None
        self.sip: asyncio.DatagramTransport | None = None
        self.media: dict[str, _Media] = {}
        self._pending_sockets: dict[str, socket.socket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._store_tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._frames: dict[tuple[str, Codec], tuple[bytes, ...]] = {}
        self._pcm: dict[str, np.ndarray] = {}
        self.recordings = config.media.voicemail_dir.parent / "ivr-recordings"

    # --- start and stop -------------------------------------------------------------------------
    async def start(self, listen: tuple[str, int]) -> None:
        self._preload_prompts()
        protocol = _SipProtocol(self)
        try:
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: protocol, local_addr=listen
            )
        except OSError as error:
            raise NodeStartupError(
                f"cannot bind udp:{listen[0]}:{listen[1]}: {error.strerror}"
            ) from None
        self.sip = transport
        sockname = transport.get_extra_info("sockname")
        local = (str(sockname[0]), int(sockname[1]))
        settings = node_settings(self.config, self.node_name, local)
        self.node = IvrNode(
            settings, counter_ids(secrets.token_hex(4)), self.script, self._media_port
        )
        log.info(
            "ivr node started",
            node=self.node_name,
            sip=f"{local[0]}:{local[1]}",
            registrar=f"{settings.registrar[0]}:{settings.registrar[1]}",
            script=self.script.name,
        )
        self.node.start(self.loop.time())
        self.pump()

    async def close(self) -> None:
        node = self.node
        if node is not None:
            node.stop(self.loop.time())
            self.pump()
            deadline = self.loop.time() + SHUTDOWN_WAIT
            while node.unregistering and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
        if self._ticker is not None:
            self._ticker.cancel()
        for call in list(self.media):
            self._close_media(call)
        for sock in self._pending_sockets.values():
            sock.close()
        tails = list(self._store_tails.values()) + list(self._tasks)
        if tails:
            await asyncio.wait(tails, timeout=2.0)
        if self.sip is not None:
            self.sip.close()
        if self._timer is not None:
            self._timer.cancel()

    def _preload_prompts(self) -> None:
        for name, file in self.script.prompt_files.items():
            try:
                self._pcm[file] = decode_wav(Path(file).read_bytes())
            except (OSError, PromptError) as error:
                raise NodeStartupError(f"prompt {name!r} ({file}): {error}") from None

    # --- the core ---------------------------------------------------------------------------------
    def on_sip(self, data: bytes, source: tuple[str, int]) -> None:
        assert self.node is not None
        self.node.receive_datagram(data, source, self.loop.time())
        self.pump()

    def pump(self) -> None:
        """Carry out the core's commands, log its events, re-arm the timer."""
        node = self.node
        if node is None:
            return
        while (command := node.next_command()) is not None:
            try:
                self._carry_out(command)
            except Exception:  # one bad command must not stop the node
                log.exception("ivr command failed", node=self.node_name, command=repr(command))
        while (event := node.next_event()) is not None:
            _log_event(self.node_name, event)
        self._arm(node.get_timer())

    def _arm(self, when: float | None) -> None:
        if when == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        assert self.node is not None
        self.node.handle_timer(self.loop.time())
        self.pump()

    def _carry_out(self, command: object) -> None:
        if isinstance(command, Transmit):
            if self.sip is not None and not self.sip.is_closing():
                self.sip.sendto(command.data, command.flow.remote)
        elif isinstance(command, nc.OpenMedia):
            self._open_media(command)
        elif isinstance(command, nc.UpdateMedia):
            media = self.media.get(command.call)
            if media is not None:
                media.remote = command.remote
                media.codec, media.payload_type = command.codec, command.payload_type
                media.telephone_event = command.telephone_event
        elif isinstance(command, nc.PlayPrompt):
            self._play(command)
        elif isinstance(command, nc.StopPrompt):
            media = self.media.get(command.call)
            if media is not None:
                media.player = None
        elif isinstance(command, nc.StartRecord):
            media = self.media.get(command.call)
            if media is not None:
                media.recording, media.record_file = [], command.file
        elif isinstance(command, nc.StopRecord):
            self._stop_recording(command.call)
        elif isinstance(command, nc.CloseMedia):
            self._close_media(command.call)
        elif isinstance(command, nc.LoadCheckpoint):
            self._spawn(self._load(command))
        elif isinstance(command, nc.SaveCheckpoint):
            self._chain(command.session, functools.partial(self._save, command))
        elif isinstance(command, nc.DeleteCheckpoint):
            self._chain(command.session, functools.partial(self._delete, command))

    # --- the store ---------------------------------------------------------------------------------
    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _chain(self, session: str, operation: Callable[[], Awaitable[None]]) -> None:
        """Run `operation` after the session's previous store operation (keeps their order)."""
        previous = self._store_tails.get(session)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await operation()

        task = asyncio.ensure_future(run())
        self._store_tails[session] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._store_tails.get(session) is finished:
                del self._store_tails[session]

        task.add_done_callback(done)

    async def _save(self, command: nc.SaveCheckpoint) -> None:
        try:
            await self.store.put(
                CHECKPOINT_NAMESPACE, command.session, command.data, ttl=CHECKPOINT_TTL
            )
        except StoreError as error:
            log.warning("ivr.checkpoint_failed", node=self.node_name, session=command.session,
                        error=str(error))  # fmt: skip
            return
        envelope = decode_envelope(command.data)
        state = decode_checkpoint(envelope.data)
        log.info(
            "ivr.checkpoint",
            node=self.node_name,
            session=command.session,
            step=state.step,
            phase=state.phase.value,
            digits=state.digits,
            offset=round(state.prompt_offset, 2),
        )

    async def _delete(self, command: nc.DeleteCheckpoint) -> None:
        try:
            data = await self.store.get(CHECKPOINT_NAMESPACE, command.session)
            if data is None:
                return
            try:
                owner = decode_envelope(data).owner
            except ValueError:
                owner = command.owner
            if owner != command.owner:
                log.info("ivr.checkpoint_kept", node=self.node_name, session=command.session,
                         owner=owner, reason="another node resumed the session")  # fmt: skip
                return
            await self.store.delete(CHECKPOINT_NAMESPACE, command.session)
            log.info("ivr.checkpoint_deleted", node=self.node_name, session=command.session)
        except StoreError as error:
            log.warning("ivr.checkpoint_failed", node=self.node_name, session=command.session,
                        error=str(error))  # fmt: skip

    async def _load(self, command: nc.LoadCheckpoint) -> None:
        previous = self._store_tails.get(command.session)
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            data = await self.store.get(CHECKPOINT_NAMESPACE, command.session)
        except StoreError as error:
            log.warning("ivr.checkpoint_failed", node=self.node_name, session=command.session,
                        error=str(error))  # fmt: skip
            data = None
        if self.node is not None:
            self.node.checkpoint_loaded(command.call, data, self.loop.time())
            self.pump()

    # --- media ----------------------------------------------------------------------------------------
    def _media_port(self, call: str) -> int:
        """The core's port source: bind the call's RTP socket now, so its port is known."""
        assert self.node is not None
        sock = socket.socket(socket.AF_INET6 if ":" in self.node.settings.media_host
                             else socket.AF_INET, socket.SOCK_DGRAM)  # fmt: skip
        sock.setblocking(False)
        sock.bind((self.node.settings.media_host, 0))
        old = self._pending_sockets.pop(call, None)
        if old is not None:
            old.close()
        self._pending_sockets[call] = sock
        return int(sock.getsockname()[1])

    def _open_media(self, command: nc.OpenMedia) -> None:
        sock = self._pending_sockets.pop(command.call, None)
        if sock is None:
            return
        media = _Media(
            sock,
            remote=command.remote,
            codec=command.codec,
            payload_type=command.payload_type,
            telephone_event=command.telephone_event,
        )
        self.media[command.call] = media
        self.loop.add_reader(sock.fileno(), self._on_rtp, command.call, media)

    def _on_rtp(self, call: str, media: _Media) -> None:
        for _ in range(64):
            try:
                data, _source = media.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                packet = rtp.parse(data)
            except ValueError:
                continue
            if media.telephone_event is not None and packet.payload_type == media.telephone_event:
                pressed = media.dtmf.receive(packet)
                if pressed is not None and self.node is not None:
                    self.node.digit(call, pressed.digit, self.loop.time(), via="rtp")
                    self.pump()
            elif media.recording is not None and packet.payload_type == media.payload_type:
                media.recording.append(decode(packet.payload, media.codec))

    def _close_media(self, call: str) -> None:
        sock = self._pending_sockets.pop(call, None)
        if sock is not None:
            sock.close()
        self._stop_recording(call)
        media = self.media.pop(call, None)
        if media is None:
            return
        with contextlib.suppress(Exception):
            self.loop.remove_reader(media.sock.fileno())
        media.sock.close()

    def _stop_recording(self, call: str) -> None:
        media = self.media.get(call)
        if media is None or media.recording is None or media.record_file is None:
            return
        chunks, file = media.recording, media.record_file
        media.recording = media.record_file = None
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        path = Path(file) if Path(file).is_absolute() else self.recordings / file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_wav(samples))
        except OSError as error:
            log.warning("ivr.record_failed", node=self.node_name, file=str(path),
                        error=error.strerror)  # fmt: skip
            return
        log.info("ivr.recorded", node=self.node_name, call=call, file=str(path),
                 seconds=round(len(samples) / 8000, 2))  # fmt: skip

    def _prompt_frames(self, file: str, codec: Codec) -> tuple[bytes, ...]:
        frames = self._frames.get((file, codec))
        if frames is None:
            pcm = self._pcm.get(file)
            if pcm is None:
                pcm = decode_wav(Path(file).read_bytes())
                self._pcm[file] = pcm
            frames = encode_frames(pcm, codec)
            self._frames[(file, codec)] = frames
        return frames

    def _play(self, command: nc.PlayPrompt) -> None:
        media = self.media.get(command.call)
        if media is None:
            return
        frames = self._prompt_frames(command.file, media.codec)
        skip = min(int(command.offset / PTIME_SECONDS), len(frames))
        now = self.loop.time()
        if media.last_sent is not None:  # the silence since the last packet, in samples
            gap = max(int((now - media.last_sent) * 8000) - SAMPLES_PER_FRAME, 0)
            media.timestamp = (media.timestamp + gap) & 0xFFFFFFFF
        media.player = Player(
            codec=media.codec,
            ssrc=media.ssrc,
            sequence=media.sequence,
            timestamp=media.timestamp,
            start=now,
            announcement=frames[skip:],
        )
        media.prompt_start_offset = skip * PTIME_SECONDS
        media.frames_reported = 0
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        """Send every playing call's due frames; sleep to the next frame time."""
        while True:
            now = self.loop.time()
            playing = False
            finished: list[str] = []
            progress: list[tuple[str, float]] = []
            for call, media in self.media.items():
                player = media.player
                if player is None:
                    continue
                playing = True
                while (packet := player.next_packet(now)) is not None:
                    if packet.payload_type != media.payload_type:
                        packet = dataclasses.replace(packet, payload_type=media.payload_type)
                    if media.remote is not None:
                        with contextlib.suppress(OSError):
                            media.sock.sendto(packet.serialize(), media.remote)
                    media.sequence = (packet.sequence + 1) & 0xFFFF
                    media.timestamp = (packet.timestamp + SAMPLES_PER_FRAME) & 0xFFFFFFFF
                    media.last_sent = now
                sent = player.packets_sent + player.frames_skipped
                if sent - media.frames_reported >= PROGRESS_EVERY / PTIME_SECONDS:
                    media.frames_reported = sent
                    progress.append((call, media.prompt_start_offset + sent * PTIME_SECONDS))
                if player.finished:
                    media.player = None
                    finished.append(call)
            if self.node is not None and (finished or progress):
                for call, offset in progress:
                    self.node.prompt_progress(call, offset, now)
                for call in finished:
                    self.node.prompt_finished(call, now)
                self.pump()
            if not playing:
                return
            await asyncio.sleep(PTIME_SECONDS - (self.loop.time() - now) % PTIME_SECONDS)


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, process: IvrNodeProcess) -> None:
        self.process = process

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.process.on_sip(data, (str(addr[0]), int(addr[1])))  # type: ignore[arg-type]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable (the call manager restarting): the timers retry


_EVENT_NAMES: dict[type, str] = {
    nc.Registered: "ivr.registered",
    nc.RegistrationFailed: "ivr.registration_failed",
    nc.FlowLost: "ivr.flow_lost",
    nc.CallAnswered: "ivr.answered",
    nc.SessionResumed: "ivr.resumed",
    nc.SessionRestarted: "ivr.session_restarted",
    nc.StepEntered: "ivr.step",
    nc.CollectStarted: "ivr.collect",
    nc.DigitsCollected: "ivr.collected",
    nc.CollectFailed: "ivr.collect_failed",
    nc.DigitReceived: "ivr.digit",
    nc.SessionEnded: "ivr.ended",
    nc.CallEnded: "ivr.call_ended",
}
_WARNINGS = (nc.RegistrationFailed, nc.FlowLost, nc.SessionRestarted)


def _log_event(node: str, event: nc.NodeEvent) -> None:
    fields = dataclasses.asdict(event)
    name = _EVENT_NAMES.get(type(event), type(event).__name__)
    if isinstance(event, _WARNINGS):
        log.warning(name, node=node, **fields)
    else:
        log.info(name, node=node, **fields)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise NodeStartupError(f"--listen: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def run_ivr_node(
    config: Config, node_name: str, script: Script, listen: tuple[str, int] | None = None
) -> None:
    """Run until SIGTERM/SIGINT; raises NodeStartupError when the node cannot start."""
    if listen is None:
        settings_host = node_settings(config, node_name, ("127.0.0.1", 0)).registrar[0]
        listen = (settings_host, 0)
    try:
        store = open_store(config.store.url)
    except ValueError as error:
        raise NodeStartupError(f"store.url: {error}") from None
    process = IvrNodeProcess(config, node_name, script, store)
    try:
        await process.start(listen)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("ivr node shutting down", node=node_name, calls=len(process.media))
        await process.close()
    finally:
        await store.close()
    log.info("ivr node stopped", node=node_name)
