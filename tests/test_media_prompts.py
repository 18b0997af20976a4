"""WAV decoding/encoding, and the shipped prompts: format, size, and that they hold what they say."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from callkeeper.io.prompts import load_prompt, load_prompt_samples
from callkeeper.media.prompts import PROMPT_NAMES, PromptError, decode_wav, encode_wav


@given(arrays(np.int16, st.integers(0, 500)))
def test_encode_decode_round_trip(pcm: np.ndarray) -> None:
    wav = encode_wav(pcm)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert struct.unpack_from("<I", wav, 4)[0] == len(wav) - 8
    assert np.array_equal(decode_wav(wav), pcm)


def fmt_chunk(
    tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16, extra: bytes = b""
) -> bytes:
    body = (
        struct.pack(
            "<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits
        )
        + extra
    )
    return b"fmt " + struct.pack("<I", len(body)) + body


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def data_chunk(samples: bytes) -> bytes:
    padded = samples + (b"\x00" if len(samples) % 2 else b"")
    return b"data" + struct.pack("<I", len(samples)) + padded


PCM_SUBTYPE = bytes.fromhex("0100000000001000800000aa00389b71")


def test_chunks_in_any_order_with_odd_padding_and_extensible_format() -> None:
    odd = b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    extensible = fmt_chunk(0xFFFE, extra=struct.pack("<HHI", 22, 16, 4) + PCM_SUBTYPE)
    wav = riff(odd, data_chunk(b"\x01\x00\xff\xff\x7f"), extensible)
    assert decode_wav(wav).tolist() == [1, -1]  # the dangling half sample is ignored


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (b"RIFX" + bytes(8), "not a RIFF"),
        (b"RIFF", "not a RIFF"),
        (riff(data_chunk(b"\x00\x00")), "no fmt"),
        (riff(fmt_chunk()), "no data"),
        (riff(fmt_chunk(), b"data" + struct.pack("<I", 10) + b"\x00\x00"), "truncated"),
        (
            riff(b"fmt " + struct.pack("<I", 4) + b"\x01\x00\x01\x00", data_chunk(b"")),
            "fmt chunk is truncated",
        ),
        (riff(fmt_chunk(tag=3), data_chunk(b"")), "not PCM"),
        (riff(fmt_chunk(tag=0xFFFE), data_chunk(b"")), "extensible WAV that is not PCM"),
        (riff(fmt_chunk(rate=16000), data_chunk(b"")), "16000 Hz"),
        (riff(fmt_chunk(channels=2), data_chunk(b"")), "2 channel"),
        (riff(fmt_chunk(bits=8), data_chunk(b"")), "8-bit"),
    ],
)
def test_bad_wavs_are_prompt_errors(wav: bytes, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        decode_wav(wav)


@given(st.binary(max_size=100))
def test_random_bytes_are_prompt_errors_or_samples(data: bytes) -> None:
    with contextlib.suppress(PromptError):
        decode_wav(b"RIFF" + struct.pack("<I", len(data) + 4) + b"WAVE" + data)


def dominant_frequency(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 8000 / len(pcm))


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_shipped_prompts_are_small_valid_and_not_silent(name: str) -> None:
    wav = load_prompt(name)
    assert len(wav) < 200_000
    pcm = load_prompt_samples(name)
    assert len(pcm) > 8000  # more than a second
    assert np.abs(pcm.astype(np.int32)).max() > 8000  # normalized, audible
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert rms > 500


def test_unknown_prompt() -> None:
    with pytest.raises(KeyError):
        load_prompt("nope")


def test_speech_prompts_have_their_expected_length() -> None:
    # espeak-ng at 150 words/min: the long sentence takes longer than the short ones.
    seconds = {name: len(load_prompt_samples(name)) / 8000 for name in PROMPT_NAMES}
    assert seconds["reconnecting"] > seconds["goodbye"] > seconds["transferring"] > 1.0


def test_greeting_ends_with_a_1khz_beep() -> None:
    pcm = load_prompt_samples("voicemail_greeting")
    beep = pcm[-4000:]  # the last 0.5 s
    assert abs(dominant_frequency(beep) - 1000) < 20
    assert np.sqrt(np.mean(beep.astype(np.float64) ** 2)) > 5000


def test_music_loops_without_a_click() -> None:
    pcm = load_prompt_samples("music").astype(np.int32)
    assert 9.5 <= len(pcm) / 8000 <= 10.5
    # Faded in and out: the seam between the end and the start of the loop is quiet.
    assert np.abs(pcm[:40]).max() < 500 and np.abs(pcm[-40:]).max() < 500
    # Four chords, each with a different lowest note in the 87..131 Hz range (A2, F2, G2, C3).
    roots = []
    for chord in np.split(pcm[:80000], 4):
        spectrum = np.abs(np.fft.rfft(chord * np.hanning(len(chord))))
        freqs = np.fft.rfftfreq(len(chord), 1 / 8000)
        strong = freqs[spectrum > spectrum.max() * 0.3]
        roots.append(round(float(strong.min())))
    assert [abs(r - f) < 3 for r, f in zip(roots, [131, 110, 87, 98], strict=True)] == [True] * 4
