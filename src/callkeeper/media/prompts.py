"""8 kHz 16-bit mono WAV in and out, for the shipped prompts and voicemail recordings.

Everything the relay plays is 8 kHz mono 16-bit PCM, since that is what G.711 carries; a prompt
in any other format is a packaging mistake and is refused here, at load time, rather than played
at the wrong speed. The RIFF parser is written out (about 40 lines) instead of using the stdlib
`wave` module so that a malformed file becomes one `PromptError` with a clear message, and so
that WAVE_FORMAT_EXTENSIBLE files (what some tools write) are read on every supported Python.
Reading the files is the io layer's job (`callkeeper.io.prompts`); this module is bytes in,
samples out.
"""

from __future__ import annotations

import struct

import numpy as np

from callkeeper.media.g711 import Pcm

SAMPLE_RATE = 8000
CHANNELS = 1
BITS_PER_SAMPLE = 16

RECONNECTING = "reconnecting"
TRANSFERRING = "transferring"
GOODBYE = "goodbye"
VOICEMAIL_GREETING = "voicemail_greeting"
MUSIC = "music"
PROMPT_NAMES = (RECONNECTING, TRANSFERRING, GOODBYE, VOICEMAIL_GREETING, MUSIC)
"""The prompts shipped in `callkeeper/media/prompts/` (as `<name>.wav`)."""

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_KSDATAFORMAT_SUBTYPE_PCM = bytes.fromhex("0100000000001000800000aa00389b71")
_CHUNK = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")


class PromptError(ValueError):
    """A WAV file that is malformed or not 8 kHz mono 16-bit PCM."""


def decode_wav(data: bytes) -> Pcm:
    """The samples of an 8 kHz mono 16-bit PCM WAV file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PromptError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int, int, int] | None = None
    samples: bytes | None = None
    offset = 12
    while offset + _CHUNK.size <= len(data):
        chunk_id, size = _CHUNK.unpack_from(data, offset)
        body = data[offset + _CHUNK.size : offset + _CHUNK.size + size]
        if len(body) < size:
            raise PromptError(f"chunk {chunk_id!r} is truncated")
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(body)
        elif chunk_id == b"data":
            samples = body
        offset += _CHUNK.size + size + (size & 1)  # chunks are padded to an even length
    if fmt is None:
        raise PromptError("no fmt chunk")
    if samples is None:
        raise PromptError("no data chunk")
    _, channels, rate, _, _, bits = fmt
    if (rate, channels, bits) != (SAMPLE_RATE, CHANNELS, BITS_PER_SAMPLE):
        raise PromptError(
            f"need {SAMPLE_RATE} Hz mono {BITS_PER_SAMPLE}-bit, got {rate} Hz, "
            f"{channels} channel(s), {bits}-bit"
        )
    usable = len(samples) - len(samples) % 2
    return np.frombuffer(samples[:usable], dtype="<i2").astype(np.int16)


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int, int]:
    if len(body) < _FMT.size:
        raise PromptError("fmt chunk is truncated")
    fields: tuple[int, int, int, int, int, int] = _FMT.unpack_from(body)
    tag = fields[0]
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40 or body[24:40] != _KSDATAFORMAT_SUBTYPE_PCM:
            raise PromptError("extensible WAV that is not PCM")
    elif tag != _WAVE_FORMAT_PCM:
        raise PromptError(f"WAV format {tag:#06x} is not PCM")
    return fields


def encode_wav(pcm: Pcm) -> bytes:
    """An 8 kHz mono 16-bit PCM WAV file holding `pcm` (a voicemail recording)."""
    samples = np.asarray(pcm, dtype=np.int16).astype("<i2").tobytes()
    block_align = CHANNELS * BITS_PER_SAMPLE // 8
    fmt = _FMT.pack(
        _WAVE_FORMAT_PCM,
        CHANNELS,
        SAMPLE_RATE,
        SAMPLE_RATE * block_align,
        block_align,
        BITS_PER_SAMPLE,
    )
    return b"".join(
        [
            _CHUNK.pack(b"RIFF", 4 + _CHUNK.size * 2 + len(fmt) + len(samples)),
            b"WAVE",
            _CHUNK.pack(b"fmt ", len(fmt)),
            fmt,
            _CHUNK.pack(b"data", len(samples)),
            samples,
        ]
    )
