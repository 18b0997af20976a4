"""The built-in voicemail's files and recorder (io/voicemail.py)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

from callkeeper.io.voicemail import Recording, VoicemailStore
from callkeeper.media.g711 import Codec, encode


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def frames(pcm: np.ndarray, codec: Codec = Codec.PCMU) -> list[bytes]:
    return [encode(pcm[i : i + 160], codec) for i in range(0, len(pcm), 160)]


def test_a_message_is_a_wav_and_its_metadata(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    message = store.save("alice", "carol", "call-1", tone(1.5))
    assert message.seconds == 1.5
    wav = store.wav_path("alice", message.id)
    assert wav is not None
    with wave.open(str(wav)) as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (8000, 1, 2)
        assert reader.getnframes() == 12000
    (listed,) = store.messages("alice")
    assert listed["caller"] == "carol" and listed["call"] == "call-1" and listed["seconds"] == 1.5
    assert json.loads((wav.with_suffix(".json")).read_text())["id"] == message.id
    assert store.counts(["alice", "bob"]) == {"alice": 1, "bob": 0}


def test_user_names_and_ids_cannot_leave_the_directory(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path / "vm")
    message = store.save("../evil", None, "c", tone(0.1))
    assert store.folder("../evil").resolve().parent == (tmp_path / "vm").resolve()
    assert store.wav_path("../evil", message.id) is not None
    assert store.wav_path("../evil", "../../etc/passwd") is None
    assert store.messages("nobody") == []


def test_a_half_written_metadata_file_is_not_a_message(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    store.save("alice", None, "c", tone(0.1))
    (store.folder("alice") / "broken.json").write_text("{not json")
    assert len(store.messages("alice")) == 1


def test_recording_stops_after_the_silence_that_follows_speech() -> None:
    recording = Recording(Codec.PCMA, max_seconds=60, silence_seconds=1.0)
    stopped = [recording.feed(frame) for frame in frames(tone(2.0), Codec.PCMA)]
    assert not any(stopped) and recording.heard_voice
    silence = np.zeros(8000 * 2, dtype=np.int16)
    stopped = [recording.feed(frame) for frame in frames(silence, Codec.PCMA)]
    assert stopped.index(True) == 49  # 50 frames of 20 ms = 1 s of silence
    pcm = recording.pcm()
    assert len(pcm) == 32000  # every frame fed is kept (the relay stops feeding on True)
    assert len(recording.pcm(trim_silence=True)) == 16000  # without the silence after
    assert abs(int(np.abs(pcm[:16000]).max()) - 8000) < 300  # the tone survived G.711


def test_recording_stops_at_the_maximum_length() -> None:
    recording = Recording(Codec.PCMU, max_seconds=1.0, silence_seconds=30)
    stopped = [recording.feed(frame) for frame in frames(tone(2.0))]
    assert stopped.index(True) == 49
    assert Recording(Codec.PCMU, 1, 1).pcm().size == 0
