#!/bin/sh
# Regenerate the prompts of the sample IVR script, src/callkeeper/ivr/samples/prompts/
# (8 kHz, 16-bit, mono WAV; the same voice and telephone band as scripts/make_prompts.sh).
#
# Needs espeak-ng and sox (`apt-get install espeak-ng sox`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../src/callkeeper/ivr/samples/prompts"}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# shellcheck source=prompt_tools.sh
. "$here/prompt_tools.sh"
need_tools make_ivr_prompts

speak() { # speak NAME TEXT: $out/NAME.wav
  speech "$1" "$2"
  sox -D "$tmp/$1.speech.wav" $OUTFMT "$out/$1.wav" $TELEPHONE
  report "$out/$1.wav"
}

speak welcome "Welcome to callkeeper support."
speak menu "For billing, press 1. For technical support, press 2."
speak menu_retry "Sorry, I did not get that. For billing, press 1. For technical support, press 2."
speak account "Please enter your four digit account number, then press hash."
speak account_retry "That was not four digits. Please enter your four digit account number."
speak unknown_account "We could not find that account."
speak billing "Thank you. Connecting you to billing."
speak goodbye "Thank you for calling. Goodbye."
