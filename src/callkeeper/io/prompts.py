"""Reading the prompts shipped inside the package (the pure side is `callkeeper.media.prompts`)."""

from __future__ import annotations

from importlib import resources

from callkeeper.media.g711 import Pcm
from callkeeper.media.prompts import PROMPT_NAMES, decode_wav


def load_prompt(name: str) -> bytes:
    """The WAV file of a shipped prompt (`reconnecting`, `music`, ... see `PROMPT_NAMES`)."""
    if name not in PROMPT_NAMES:
        raise KeyError(f"no shipped prompt named {name!r}; have {', '.join(PROMPT_NAMES)}")
    return (
        resources.files("callkeeper.media").joinpath("prompts").joinpath(f"{name}.wav").read_bytes()
    )


def load_prompt_samples(name: str) -> Pcm:
    """The samples of a shipped prompt, validated as 8 kHz mono 16-bit."""
    return decode_wav(load_prompt(name))
