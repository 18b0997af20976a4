"""G.711 against the ITU-T G.191 reference: known code points, the reference's own formulas for
every 16-bit sample, the round-trip bounds of the quantizer, and sox as an independent encoder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from callkeeper.media import g711
from callkeeper.media.g711 import Codec

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


# Code points every G.711 implementation agrees on (ITU-T G.711 Tables 1a/2a, as 16-bit values).
@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7F, 0x55),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (8, 0xFE, 0xD5),
        (-8, 0x7E, 0x55),
        (1000, 0xCE, 0xFA),
        (-1000, 0x4E, 0x7A),
    ],
)
def test_known_code_points(sample: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16)
    assert g711.ulaw_encode(pcm)[0] == ulaw
    assert g711.alaw_encode(pcm)[0] == alaw


@pytest.mark.parametrize(
    ("code", "codec", "value"),
    [
        (0xFF, Codec.PCMU, 0),
        (0x7F, Codec.PCMU, 0),
        (0xFE, Codec.PCMU, 8),
        (0xCE, Codec.PCMU, 988),
        (0x80, Codec.PCMU, 32124),
        (0x00, Codec.PCMU, -32124),
        (0xD5, Codec.PCMA, 8),
        (0x55, Codec.PCMA, -8),
        (0xFA, Codec.PCMA, 1008),
        (0xAA, Codec.PCMA, 32256),
        (0x2A, Codec.PCMA, -32256),
    ],
)
def test_known_decoded_values(code: int, codec: Codec, value: int) -> None:
    assert g711.decode(bytes([code]), codec)[0] == value


def test_ulaw_decoder_matches_the_g711_table_formula() -> None:
    # G.711 Table 2a: decoder output for segment e, step q is sign·((2q+33)·2^e − 33), in 14-bit
    # units; ×4 for a 16-bit sample. Codes are transmitted with all bits inverted.
    for code in range(256):
        inverted = code ^ 0xFF
        sign = -1 if inverted & 0x80 else 1
        exponent = (inverted >> 4) & 7
        step = inverted & 0xF
        expected = sign * (((2 * step + 33) << exponent) - 33) * 4
        assert g711.ulaw_decode(bytes([code]))[0] == expected, hex(code)


def test_alaw_decoder_matches_the_g711_table_formula() -> None:
    # G.711 Table 1a: even bits inverted; segment 0 is linear, then doubling; output in 13-bit
    # units is the mid-point of the quantization interval; ×8 for a 16-bit sample.
    for code in range(256):
        value = code ^ 0x55
        sign = 1 if value & 0x80 else -1
        exponent = (value >> 4) & 7
        step = value & 0xF
        magnitude = 2 * step + 1 if exponent == 0 else (2 * step + 33) << (exponent - 1)
        assert g711.alaw_decode(bytes([code]))[0] == sign * magnitude * 8, hex(code)


@pytest.mark.parametrize("codec", list(Codec))
def test_every_sample_encodes_to_a_neighbouring_level(codec: Codec) -> None:
    # The quantizer's defining property, for all 65536 samples: encoding is monotonic, and
    # decode(encode(x)) is one of the two reconstruction levels around x (never further), so the
    # error is within one step of x's segment; beyond the largest level it clips.
    samples = ALL_SAMPLES.astype(np.int32)
    restored = g711.decode(g711.encode(ALL_SAMPLES, codec), codec).astype(np.int32)
    assert np.all(np.diff(restored) >= 0), "encoding must be monotonic"
    levels = np.unique(g711.decode(bytes(range(256)), codec).astype(np.int32))
    above = np.clip(np.searchsorted(levels, samples), 0, len(levels) - 1)
    below = np.clip(above - 1, 0, len(levels) - 1)
    assert np.all((restored == levels[below]) | (restored == levels[above]))
    assert restored.min() == levels[0] and restored.max() == levels[-1]
    gap = levels[above] - levels[below]
    inside = (samples > levels[0]) & (samples < levels[-1])
    assert np.all(np.abs(samples - restored)[inside] <= gap[inside])


@pytest.mark.parametrize("codec", list(Codec))
def test_decode_then_encode_is_identity_on_codes(codec: Codec) -> None:
    # Every code decodes to a level that encodes back to the same code, except the two codes of
    # zero in µ-law (0x7F "-0" and 0xFF "+0") which both mean 0.
    decoded = g711.decode(bytes(range(256)), codec)
    again = np.frombuffer(g711.encode(decoded, codec), dtype=np.uint8)
    mismatched = {code for code in range(256) if again[code] != code}
    assert mismatched == ({0x7F} if codec is Codec.PCMU else set())


@given(arrays(np.int16, st.integers(0, 400)))
def test_encode_and_decode_keep_length_and_sign(pcm: np.ndarray) -> None:
    for codec in Codec:
        payload = g711.encode(pcm, codec)
        assert len(payload) == len(pcm)
        restored = g711.decode(payload, codec)
        assert restored.dtype == np.int16
        assert np.all(np.sign(restored[np.abs(pcm) > 16]) == np.sign(pcm[np.abs(pcm) > 16]))


def test_codec_payload_types_and_silence() -> None:
    assert (Codec.PCMU.value, Codec.PCMA.value) == (0, 8)
    for codec in Codec:
        assert g711.encode(np.zeros(3, dtype=np.int16), codec) == bytes([codec.silence]) * 3
    assert g711.ulaw_decode(np.array([0xFF], dtype=np.uint8))[0] == 0
    assert g711.alaw_decode(bytearray([0xD5]))[0] == 8


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
@pytest.mark.parametrize(
    ("codec", "sox_encoding", "resolution"), [(Codec.PCMU, "u-law", 4), (Codec.PCMA, "a-law", 8)]
)
def test_agrees_with_sox(tmp_path: Path, codec: Codec, sox_encoding: str, resolution: int) -> None:
    """sox (libsox's copy of Sun's g711.c) as an independent implementation.

    sox rounds a sample to the law's input resolution (14 bits µ-law, 13 bits A-law) where the
    ITU reference truncates, so the sweep uses samples on that grid, where both are exact. On it,
    A-law agrees everywhere and µ-law for x >= 0; Sun's µ-law takes a negative magnitude as
    -(x >> 2) where the ITU takes (~x) >> 2, one step more, so sox's code for x is the ITU's for
    x - 1. Decoding agrees for all 256 codes.
    """
    grid = np.arange(-32768, 32768, resolution, dtype=np.int32).astype(np.int16)
    raw = tmp_path / "in.raw"
    raw.write_bytes(grid.astype("<i2").tobytes())
    encoded = tmp_path / "out.g711"
    subprocess.run(
        ["sox", "-D", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", str(raw),
         "-t", "raw", "-e", sox_encoding, str(encoded)],
        check=True, capture_output=True,
    )  # fmt: skip
    by_sox = np.frombuffer(encoded.read_bytes(), dtype=np.uint8)
    ours = np.frombuffer(g711.encode(grid, codec), dtype=np.uint8)
    assert len(by_sox) == len(grid)
    if codec is Codec.PCMA:
        assert np.array_equal(by_sox, ours)
    else:
        positive = grid >= 0
        assert np.array_equal(by_sox[positive], ours[positive])
        negative = (grid < 0) & (grid > -32768)
        shifted = np.frombuffer(g711.encode(grid[negative] - 1, codec), dtype=np.uint8)
        assert np.array_equal(by_sox[negative], shifted)

    codes = tmp_path / "codes.g711"
    codes.write_bytes(bytes(range(256)))
    decoded = tmp_path / "decoded.raw"
    subprocess.run(
        ["sox", "-t", "raw", "-r", "8000", "-e", sox_encoding, "-c", "1", str(codes),
         "-t", "raw", "-e", "signed", "-b", "16", str(decoded)],
        check=True, capture_output=True,
    )  # fmt: skip
    by_sox_decoded = np.frombuffer(decoded.read_bytes(), dtype="<i2")
    assert np.array_equal(by_sox_decoded, g711.decode(bytes(range(256)), codec))
