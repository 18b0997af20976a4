#!/bin/sh
# Regenerate the prompts of the sample IVR script, src/callkeeper/ivr/samples/prompts/
# (8 kHz, 16-bit, mono WAV; the same voice and telephone band as scripts/make_prompts.sh).
#
# Needs espeak-ng and sox (`apt-get install espeak-ng sox`). Dither is off (-D) so that a re-run
# with the same tool versions gives byte-identical files.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../src/callkeeper/ivr/samples/prompts"}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "make_ivr_prompts: $tool is not installed" >&2; exit 1; }
done

OUTFMT="-D -r 8000 -b 16 -c 1 -e signed-integer"
TELEPHONE="highpass 200 lowpass 3400 norm -3"

speak() { # speak NAME TEXT: $out/NAME.wav with 0.3 s of lead-in and 0.4 s of tail
  espeak-ng -v en-us -s 150 -p 45 -w "$tmp/$1.raw.wav" "$2"
  sox -D "$tmp/$1.raw.wav" "$tmp/$1.speech.wav" pad 0.3 0.4
  sox -D "$tmp/$1.speech.wav" $OUTFMT "$out/$1.wav" $TELEPHONE
  printf '%s: %s bytes, %s s\n' "$1.wav" "$(wc -c <"$out/$1.wav")" "$(soxi -D "$out/$1.wav")"
}

speak welcome "Welcome to callkeeper support."
speak menu "For billing, press 1. For technical support, press 2."
speak menu_retry "Sorry, I did not get that. For billing, press 1. For technical support, press 2."
speak account "Please enter your four digit account number, then press hash."
speak account_retry "That was not four digits. Please enter your four digit account number."
speak unknown_account "We could not find that account."
speak billing "Thank you. Connecting you to billing."
speak goodbye "Thank you for calling. Goodbye."
