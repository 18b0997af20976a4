# Shared by make_prompts.sh and make_ivr_prompts.sh (sourced, not run): one voice, one
# telephone band, one output format for every shipped prompt.
#
# Dither is off (-D) so that a re-run with the same tool versions gives byte-identical files and
# `git diff` shows only real changes. The sourcing script sets $tmp (a scratch folder).

# Telephone band: 8 kHz, a high-pass to drop rumble G.711 phones cannot play, peaks at -3 dBFS.
OUTFMT="-D -r 8000 -b 16 -c 1 -e signed-integer"
TELEPHONE="highpass 200 lowpass 3400 norm -3"

need_tools() { # need_tools SCRIPT: stop with a message naming SCRIPT if a tool is missing
  for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "$1: $tool is not installed" >&2; exit 1; }
  done
}

speech() { # speech NAME TEXT: $tmp/NAME.speech.wav at espeak-ng's rate, 0.3 s lead-in, 0.4 s tail
  espeak-ng -v en-us -s 150 -p 45 -w "$tmp/$1.raw.wav" "$2"
  sox -D "$tmp/$1.raw.wav" "$tmp/$1.speech.wav" pad 0.3 0.4
}

report() { # report FILE: its size and length
  printf '%s: %s bytes, %s s\n' "$(basename "$1")" "$(wc -c <"$1")" "$(soxi -D "$1")"
}
