"""The interpreter's protocol as data: `{(phase, trigger): action}`.

A session is in one `Phase` at a time; the interpreter's inputs become `Trigger`s, and the table
says which `Action` the interpreter takes. The table is total — every pair is listed, so a test
can walk them all and a late input (a digit after the session ended, a `prompt_finished` for a
prompt a digit already stopped) is an explicit `IGNORE`, not an accident. `start` and `resume`
are not in the table: they are only valid in `IDLE` and raise `InterpreterError` elsewhere.
Steps that do not wait (branch, set, transfer, hangup) run through inside one action and have
no phase of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Phase(enum.Enum):
    IDLE = "idle"  # not started (or not resumed) yet
    PLAYING = "playing"  # a play step's prompt is playing
    PROMPTING = "prompting"  # a collect step's prompt is playing; a digit barges in
    COLLECTING = "collecting"  # a collect step waits for digits, the timeout armed
    RECORDING = "recording"  # a record step is recording, max_seconds armed
    ENDED = "ended"


class Trigger(enum.Enum):
    DIGIT = "digit"
    PROMPT_FINISHED = "prompt finished"
    PROMPT_PROGRESS = "prompt progress"
    TIMER = "timer"  # the armed deadline passed
    HANGUP = "caller hung up"


class Action(enum.Enum):
    IGNORE = "ignore"
    ADVANCE = "go to the play step's next"
    ARM = "prompt done: wait for digits"
    BARGE_IN = "stop the prompt, take the digit"
    TAKE_DIGIT = "take the digit"
    NOTE_OFFSET = "remember how far the prompt got"
    COLLECT_TIMEOUT = "collect timed out"
    RECORD_DIGIT = "stop recording on the terminator"
    RECORD_DONE = "recording done: go to next"
    END = "end the session"


P, T, A = Phase, Trigger, Action

TRANSITIONS: Mapping[tuple[Phase, Trigger], Action] = {
    (P.IDLE, T.DIGIT): A.IGNORE,
    (P.IDLE, T.PROMPT_FINISHED): A.IGNORE,
    (P.IDLE, T.PROMPT_PROGRESS): A.IGNORE,
    (P.IDLE, T.TIMER): A.IGNORE,
    (P.IDLE, T.HANGUP): A.END,
    (P.PLAYING, T.DIGIT): A.IGNORE,  # no type-ahead: a play step is listened to
    (P.PLAYING, T.PROMPT_FINISHED): A.ADVANCE,
    (P.PLAYING, T.PROMPT_PROGRESS): A.NOTE_OFFSET,
    (P.PLAYING, T.TIMER): A.IGNORE,
    (P.PLAYING, T.HANGUP): A.END,
    (P.PROMPTING, T.DIGIT): A.BARGE_IN,
    (P.PROMPTING, T.PROMPT_FINISHED): A.ARM,
    (P.PROMPTING, T.PROMPT_PROGRESS): A.NOTE_OFFSET,
    (P.PROMPTING, T.TIMER): A.IGNORE,
    (P.PROMPTING, T.HANGUP): A.END,
    (P.COLLECTING, T.DIGIT): A.TAKE_DIGIT,
    (P.COLLECTING, T.PROMPT_FINISHED): A.IGNORE,  # the prompt a barge-in stopped
    (P.COLLECTING, T.PROMPT_PROGRESS): A.IGNORE,
    (P.COLLECTING, T.TIMER): A.COLLECT_TIMEOUT,
    (P.COLLECTING, T.HANGUP): A.END,
    (P.RECORDING, T.DIGIT): A.RECORD_DIGIT,
    (P.RECORDING, T.PROMPT_FINISHED): A.IGNORE,
    (P.RECORDING, T.PROMPT_PROGRESS): A.IGNORE,
    (P.RECORDING, T.TIMER): A.RECORD_DONE,
    (P.RECORDING, T.HANGUP): A.END,
    (P.ENDED, T.DIGIT): A.IGNORE,
    (P.ENDED, T.PROMPT_FINISHED): A.IGNORE,
    (P.ENDED, T.PROMPT_PROGRESS): A.IGNORE,
    (P.ENDED, T.TIMER): A.IGNORE,
    (P.ENDED, T.HANGUP): A.IGNORE,
}

del P, T, A
