#!/bin/sh
# Regenerate the prompts shipped in src/callkeeper/media/prompts/ (8 kHz, 16-bit, mono WAV).
#
# Speech comes from espeak-ng, music from sox's `synth`; both are Debian packages
# (`apt-get install espeak-ng sox`). See prompt_tools.sh for the shared voice and format.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../src/callkeeper/media/prompts"}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# shellcheck source=prompt_tools.sh
. "$here/prompt_tools.sh"
need_tools make_prompts

speech reconnecting "The other party's phone has lost its connection. Please hold while we reconnect you."
speech transferring "Transferring your call."
speech goodbye "We could not reconnect your call. Goodbye."
speech greeting "Please leave a message after the tone."

for name in reconnecting transferring goodbye; do
  sox -D "$tmp/$name.speech.wav" $OUTFMT "$out/$name.wav" $TELEPHONE
done

# Greeting + 0.5 s of 1 kHz beep (at the same -3 dBFS peak as the speech) after a short pause.
sox -D "$tmp/greeting.speech.wav" $OUTFMT "$tmp/greeting.8k.wav" $TELEPHONE
sox -D -n $OUTFMT "$tmp/beep.wav" synth 0.5 sine 1000 fade q 0.01 0.5 0.01 gain -3
sox -D "$tmp/greeting.8k.wav" "$tmp/beep.wav" $OUTFMT "$out/voicemail_greeting.wav"

# Music: a slow I–vi–IV–V progression in C, each chord 2.5 s with soft attack and release, so
# the 10 s loop has no click at its seam (it starts and ends in silence).
chord() { # chord NAME NOTE...
  name=$1; shift
  tones=""
  for note in "$@"; do tones="$tones sine $note"; done
  # shellcheck disable=SC2086
  sox -D -n $OUTFMT "$tmp/chord_$name.wav" synth 2.5 $tones remix - fade h 0.4 2.5 0.8
}
chord 1 C3 C4 E4 G4
chord 2 A2 A3 C4 E4
chord 3 F2 F3 A3 C4
chord 4 G2 G3 B3 D4
sox -D "$tmp/chord_1.wav" "$tmp/chord_2.wav" "$tmp/chord_3.wav" "$tmp/chord_4.wav" \
  $OUTFMT "$out/music.wav" norm -9

for name in reconnecting transferring goodbye voicemail_greeting music; do
  report "$out/$name.wav"
done
