"""The built-in voicemail's storage and recorder: WAV files with JSON metadata on disk.

A message is two files in the user's folder under `media.voicemail_dir`: `ID.wav` (16-bit,
8 kHz, mono) and `ID.json` (caller, time, length, the call it came from). Files, not the
store: messages are large, append-only and read by people (the API serves the WAV as is).
The user's folder name is the user name escaped so that no name can leave the directory.

`Recording` turns the caller's G.711 RTP payloads into PCM and decides when the message is
over (maximum length, or a stretch of silence); the relay feeds it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np
import structlog

from callkeeper.calls.media_anchor import Record
from callkeeper.media.g711 import Codec, decode
from callkeeper.media.prompts import encode_wav

log = structlog.get_logger(__name__)
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SAMPLE_RATE = 8000
# Below this RMS (of 16-bit samples) a 20 ms frame counts as silence: comfortably above the
# noise floor of a quiet line, far below speech (typically 1,000-5,000).
SILENCE_RMS = 200.0


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    user: str
    caller: str | None
    call_id: str
    created: float  # Unix time
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "caller": self.caller,
            "call": self.call_id,
            "created": self.created,
            "seconds": round(self.seconds, 3),
        }


class VoicemailStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def folder(self, user: str) -> Path:
        return self.directory / ("u-" + quote(user, safe=""))

    def save(self, user: str, caller: str | None, call_id: str, pcm: np.ndarray) -> Message:
        """Write one message (WAV first, then its metadata: a listed message is complete)."""
        message = Message(
            uuid.uuid4().hex, user, caller, call_id, time.time(), len(pcm) / SAMPLE_RATE
        )
        folder = self.folder(user)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / f"{message.id}.wav", encode_wav(pcm))
        _write_atomically(
            folder / f"{message.id}.json", json.dumps(message.as_json()).encode("utf-8")
        )
        return message

    def messages(self, user: str) -> list[dict[str, Any]]:
        """The user's messages, oldest first."""
        folder = self.folder(user)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.glob("*.json"):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # half-written by a crash, or edited by hand: not a message
        return sorted(found, key=lambda message: message.get("created", 0))

    def wav_path(self, user: str, message_id: str) -> Path | None:
        if _ID_RE.fullmatch(message_id) is None:
            return None
        path = self.folder(user) / f"{message_id}.wav"
        return path if path.is_file() else None

    def counts(self, users: list[str]) -> dict[str, int]:
        return {user: len(self.messages(user)) for user in users}


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)


@dataclass
class Recording:
    """One message being recorded: G.711 payloads in, PCM out, and when to stop."""

    codec: Codec
    max_seconds: float
    silence_seconds: float
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    silent_samples: int = 0  # trailing silence so far
    heard_voice: bool = False

    def feed(self, payload: bytes) -> bool:
        """Add one packet's audio; True when the message is over (too long, or silent)."""
        pcm = decode(payload, self.codec)
        self.chunks.append(pcm)
        self.samples += len(pcm)
        rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0
        if rms < SILENCE_RMS:
            self.silent_samples += len(pcm)
        else:
            self.silent_samples = 0
            self.heard_voice = True
        if self.samples >= self.max_seconds * SAMPLE_RATE:
            return True
        return self.silent_samples >= self.silence_seconds * SAMPLE_RATE

    def pcm(self, *, trim_silence: bool = False) -> np.ndarray:
        """The message; `trim_silence` drops the trailing silence that ended it."""
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(self.chunks).astype(np.int16)
        if trim_silence and self.silent_samples:
            pcm = pcm[: max(0, len(pcm) - self.silent_samples)]
        return pcm


class VoicemailService:
    """Stores what the relay recorded and tells the core (MWI, and ending the call when the
    recording stopped by itself). `on_recorded` is the relay's hook."""

    def __init__(
        self, store: VoicemailStore, core: VoicemailCore, poke: Callable[[], None]
    ) -> None:
        self.store = store
        self.core = core
        self.poke = poke
        self.loop = asyncio.get_running_loop()

    def restore(self, users: list[str]) -> None:
        self.core.restore_voicemail({u: n for u, n in self.store.counts(users).items() if n})

    def on_recorded(self, record: Record, recording: Recording, stopped_by_itself: bool) -> None:
        now = self.loop.time()
        if recording.heard_voice:  # a caller who said nothing left no message
            pcm = recording.pcm(trim_silence=True)
            message = self.store.save(record.user, record.caller, record.call_id, pcm)
            log.info(
                "voicemail stored",
                user=record.user,
                caller=record.caller,
                seconds=round(message.seconds, 2),
                message=message.id,
            )
            waiting = len(self.store.messages(record.user))
            self.core.voicemail_recorded(record.user, waiting, now)
        if stopped_by_itself:
            self.core.recording_stopped(record.call_id, now)
        self.poke()


class VoicemailCore(Protocol):
    def voicemail_recorded(self, user: str, waiting: int, now: float) -> None: ...
    def recording_stopped(self, call_id: str, now: float) -> None: ...
    def restore_voicemail(self, waiting: dict[str, int]) -> None: ...
