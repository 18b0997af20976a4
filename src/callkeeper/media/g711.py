"""G.711 µ-law (PCMU) and A-law (PCMA) companding, bit-exact with the ITU-T G.191 reference.

Prompts, music on hold and voicemail recordings are 8 kHz 16-bit PCM; phones speak G.711. The
stdlib's `audioop` did this until Python 3.13 removed it, so we build the ITU reference
(`g711.c` of the G.191 Software Tools Library) once into lookup tables — 64 K entries for each
encoder (one per int16 value), 256 for each decoder — and then every conversion is a single numpy
`take`, fast enough to encode a whole prompt at start-up or a 20 ms frame per packet.

Note on other implementations: Sun's widely copied `g711.c` (used by sox, libsndfile and
`audioop`) agrees with the ITU reference for A-law, and for µ-law on non-negative samples; for
negative samples it computes the magnitude as `-(x >> 2)` where the ITU computes `(~x) >> 2`,
so its µ-law magnitude is one 14-bit step larger. Both decode identically. We follow the ITU.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
"""8 kHz, 16-bit signed linear samples, one channel."""

Encoded = npt.NDArray[np.uint8]
"""One G.711 byte per sample."""

ULAW_SILENCE = 0xFF
"""µ-law code of a zero sample (what a silent frame is filled with)."""

ALAW_SILENCE = 0xD5
"""A-law code of a zero sample."""


class Codec(IntEnum):
    """The two G.711 laws, valued by their static RTP payload type (RFC 3551 §6)."""

    PCMU = 0
    PCMA = 8

    @property
    def silence(self) -> int:
        """The byte that encodes a zero sample in this law."""
        return ULAW_SILENCE if self is Codec.PCMU else ALAW_SILENCE


def _ulaw_compress_reference(sample: int) -> int:
    """ITU-T G.191 `ulaw_compress` for one 16-bit sample (used only to build the table)."""
    magnitude = ((~sample) >> 2) if sample < 0 else (sample >> 2)
    magnitude = min(magnitude + 33, 0x1FFF)
    segment = 1
    shifted = magnitude >> 6
    while shifted:
        segment += 1
        shifted >>= 1
    high_nibble = 0x8 - segment
    low_nibble = 0xF - ((magnitude >> segment) & 0xF)
    code = (high_nibble << 4) | low_nibble
    return code | 0x80 if sample >= 0 else code


def _ulaw_expand_reference(code: int) -> int:
    """ITU-T G.191 `ulaw_expand` for one code byte."""
    sign = -1 if code < 0x80 else 1
    inverted = ~code
    exponent = (inverted >> 4) & 0x7
    mantissa = inverted & 0xF
    step = 4 << (exponent + 1)
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def _alaw_compress_reference(sample: int) -> int:
    """ITU-T G.191 `alaw_compress` for one 16-bit sample."""
    value = ((~sample) >> 4) if sample < 0 else (sample >> 4)
    if value > 15:
        exponent = 1
        while value > 16 + 15:
            value >>= 1
            exponent += 1
        value = value - 16 + (exponent << 4)
    if sample >= 0:
        value |= 0x80
    return value ^ 0x55


def _alaw_expand_reference(code: int) -> int:
    """ITU-T G.191 `alaw_expand` for one code byte."""
    value = (code ^ 0x55) & 0x7F
    exponent = value >> 4
    mantissa = value & 0xF
    if exponent > 0:
        mantissa += 16
    mantissa = (mantissa << 4) + 0x8
    if exponent > 1:
        mantissa <<= exponent - 1
    return mantissa if code > 127 else -mantissa


def _encoder_table(compress: Callable[[int], int]) -> Encoded:
    # Indexed by the sample's bit pattern as uint16, so int16 input views straight into it.
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    return np.array([compress(int(s)) for s in samples], dtype=np.uint8)


def _decoder_table(expand: Callable[[int], int]) -> Pcm:
    return np.array([expand(code) for code in range(256)], dtype=np.int16)


_ULAW_ENCODE = _encoder_table(_ulaw_compress_reference)
_ALAW_ENCODE = _encoder_table(_alaw_compress_reference)
_ULAW_DECODE = _decoder_table(_ulaw_expand_reference)
_ALAW_DECODE = _decoder_table(_alaw_expand_reference)
for _table in (_ULAW_ENCODE, _ALAW_ENCODE, _ULAW_DECODE, _ALAW_DECODE):
    _table.flags.writeable = False


def ulaw_encode(pcm: Pcm) -> Encoded:
    """µ-law codes for 16-bit samples (one byte per sample)."""
    return _ULAW_ENCODE.take(np.asarray(pcm, dtype=np.int16).view(np.uint16))


def ulaw_decode(codes: Encoded | bytes) -> Pcm:
    """16-bit samples for µ-law codes."""
    return _ULAW_DECODE.take(_as_codes(codes))


def alaw_encode(pcm: Pcm) -> Encoded:
    """A-law codes for 16-bit samples (one byte per sample)."""
    return _ALAW_ENCODE.take(np.asarray(pcm, dtype=np.int16).view(np.uint16))


def alaw_decode(codes: Encoded | bytes) -> Pcm:
    """16-bit samples for A-law codes."""
    return _ALAW_DECODE.take(_as_codes(codes))


def encode(pcm: Pcm, codec: Codec) -> bytes:
    """A G.711 payload for `pcm` in the given law (what goes into an RTP packet)."""
    table = _ULAW_ENCODE if codec is Codec.PCMU else _ALAW_ENCODE
    return table.take(np.asarray(pcm, dtype=np.int16).view(np.uint16)).tobytes()


def decode(payload: bytes, codec: Codec) -> Pcm:
    """16-bit samples for a G.711 payload in the given law (a voicemail recording, a test)."""
    table = _ULAW_DECODE if codec is Codec.PCMU else _ALAW_DECODE
    return table.take(_as_codes(payload))


def _as_codes(codes: Encoded | bytes) -> Encoded:
    if isinstance(codes, bytes | bytearray | memoryview):
        return np.frombuffer(codes, dtype=np.uint8)
    return np.asarray(codes, dtype=np.uint8)
