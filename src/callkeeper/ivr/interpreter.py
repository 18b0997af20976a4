"""Runs one caller through an IVR script, sans-IO, checkpointing as it goes.

Inputs are method calls that carry `now` (`start`, `digit`, `prompt_finished`, `handle_timer`,
`hangup`, `resume`, plus `prompt_progress`); outputs are queued `commands` for the IVR node
(`next_command()`), `events` for logs and the API (`next_event()`), and one deadline
(`get_timer()`). The protocol is the table in `states.py`.

Checkpoints. A `Checkpoint` command carries the encoded `Session` at every step entered, every
digit, every retry and when a prompt ends; while a prompt plays, `prompt_progress` adds one every
`progress_every` seconds of audio (not every frame: that would be a store write per 20 ms). When
the session ends, `DiscardCheckpoint` replaces them. A node that takes a call over builds a fresh
`Interpreter` and calls `resume(checkpoint, now)`:

- the current prompt is replayed from its start — or from the checkpointed offset when the
  script says `resume_from_offset = true` (or the node passes `resume_from_offset=True`), in
  which case a collect prompt that had already finished is not replayed at all;
- digits already entered in the current collect are kept (a caller who typed 2 of 4 account
  digits types only the last 2), and so are the variables and the retries left;
- a record step starts its recording again; a branch/set/transfer/hangup step runs again.

Collect rules. The prompt plays; a digit during it stops it (barge-in). The `timeout` runs from
the end of the prompt (or the start, without one) and again from each digit. The attempt ends
when `max` digits are in, on the terminator, or at the timeout; it succeeds with at least `min`
digits that are one of `choices` (when given). A failed attempt uses a retry (the digits are
cleared, `retry_prompt` or `prompt` plays again) or, with none left, goes to `on_timeout` (a
timeout) or `on_fail`, or hangs up with "no valid input". Keys other than ``0-9 * # A-D`` (hook
flash) are ignored: input from the network never raises.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import msgspec

from callkeeper.ivr.commands import (
    Checkpoint,
    DiscardCheckpoint,
    Hangup,
    IvrCommand,
    PlayPrompt,
    StartCollect,
    StartRecord,
    StopPrompt,
    StopRecord,
    Transfer,
)
from callkeeper.ivr.errors import CheckpointError, InterpreterError
from callkeeper.ivr.events import (
    CollectFailed,
    DigitsCollected,
    IvrEvent,
    RecordingFinished,
    SessionEnded,
    SessionResumed,
    StepEntered,
)
from callkeeper.ivr.script import (
    DTMF_KEYS,
    BranchStep,
    CollectStep,
    HangupStep,
    PlayStep,
    RecordStep,
    Script,
    SetStep,
    Step,
    TransferStep,
    render,
)
from callkeeper.ivr.session import HISTORY_LIMIT, Session, decode_checkpoint, encode_checkpoint
from callkeeper.ivr.states import TRANSITIONS, Action, Phase, Trigger
from callkeeper.media.dtmf import DtmfDigit

DEFAULT_PROGRESS_EVERY = 1.0
"""Seconds of prompt audio between progress checkpoints."""

CAUSE_TIMEOUT = "timeout"
CAUSE_INVALID = "invalid"
NO_VALID_INPUT = "no valid input"
CALLER_HUNG_UP = "caller hung up"
TRANSFERRED = "transferred"


class Interpreter:
    """One session of `script`. Call `start(now)` for a new session (`new_session(...)`), or
    `resume(checkpoint, now)` on a node that takes over a session another node checkpointed."""

    def __init__(
        self,
        script: Script,
        session: Session,
        *,
        resume_from_offset: bool | None = None,
        progress_every: float = DEFAULT_PROGRESS_EVERY,
    ) -> None:
        if session.script != script.name:
            raise CheckpointError(
                f"session {session.session_id!r} is for script {session.script!r}, "
                f"not {script.name!r}"
            )
        self._script = script
        self._session = session
        self._resume_from_offset = (
            script.resume_from_offset if resume_from_offset is None else resume_from_offset
        )
        self._progress_every = progress_every
        self._checkpointed_offset = 0.0
        self._deadline: float | None = None
        self._commands: deque[IvrCommand] = deque()
        self._events: deque[IvrEvent] = deque()
        self._actions: dict[Action, Callable[[str, float], None]] = {
            Action.IGNORE: lambda key, now: None,
            Action.ADVANCE: self._advance,
            Action.ARM: self._arm,
            Action.BARGE_IN: self._barge_in,
            Action.TAKE_DIGIT: self._take_digit,
            Action.NOTE_OFFSET: self._note_offset,
            Action.COLLECT_TIMEOUT: self._collect_timeout,
            Action.RECORD_DIGIT: self._record_digit,
            Action.RECORD_DONE: self._record_done,
            Action.END: lambda key, now: self._end(CALLER_HUNG_UP),
        }

    @classmethod
    def resumed(
        cls,
        script: Script,
        checkpoint: bytes,
        now: float,
        *,
        resume_from_offset: bool | None = None,
        progress_every: float = DEFAULT_PROGRESS_EVERY,
    ) -> Interpreter:
        """A new interpreter that has `resume`d `checkpoint` (raises `CheckpointError`)."""
        session = msgspec.structs.replace(decode_checkpoint(checkpoint), phase=Phase.IDLE)
        interpreter = cls(
            script, session, resume_from_offset=resume_from_offset, progress_every=progress_every
        )
        interpreter.resume(checkpoint, now)
        return interpreter

    # --- state ----------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        return self._session

    @property
    def phase(self) -> Phase:
        return self._session.phase

    @property
    def finished(self) -> bool:
        return self._session.phase is Phase.ENDED

    def checkpoint(self) -> bytes:
        """The session as checkpoint bytes now (the node may store it whenever it likes)."""
        return encode_checkpoint(self._session)

    # --- outputs ----------------------------------------------------------------------------
    def next_command(self) -> IvrCommand | None:
        return self._commands.popleft() if self._commands else None

    def next_event(self) -> IvrEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When to call `handle_timer` next (a collect timeout or a recording's limit)."""
        return self._deadline

    # --- inputs -----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin a new session at its step (the script's `start` for `new_session`)."""
        self._require_idle("start")
        self._run(self._session.step, now)

    def resume(self, checkpoint: bytes, now: float) -> None:
        """Continue the session in `checkpoint` (see the module docstring). Raises
        `CheckpointError` for bytes that are not a live session of this script."""
        self._require_idle("resume")
        session = decode_checkpoint(checkpoint)
        if session.script != self._script.name:
            raise CheckpointError(
                f"checkpoint is for script {session.script!r}, not {self._script.name!r}"
            )
        if session.step not in self._script.steps:
            raise CheckpointError(f"checkpoint step {session.step!r} is not in the script")
        if session.ended is not None:
            raise CheckpointError(f"session {session.session_id!r} already ended")
        step = self._script.step(session.step)
        keep_offset = self._resume_from_offset and isinstance(step, PlayStep | CollectStep)
        offset = session.prompt_offset if keep_offset else 0.0
        self._session = msgspec.structs.replace(session, prompt_offset=offset)
        self._events.append(
            SessionResumed(session.session_id, session.step, session.digits, offset)
        )
        self._run(session.step, now, resuming=True)

    def digit(self, digit: str | DtmfDigit, now: float) -> None:
        """The caller pressed a key (from RFC 4733 events or SIP INFO)."""
        key = digit.digit if isinstance(digit, DtmfDigit) else digit
        if len(key) == 1 and key.upper() in DTMF_KEYS:
            self._fire(Trigger.DIGIT, key.upper(), now)

    def prompt_finished(self, now: float) -> None:
        self._fire(Trigger.PROMPT_FINISHED, "", now)

    def prompt_progress(self, offset: float) -> None:
        """The prompt has played up to `offset` seconds into its file."""
        if offset >= 0:
            self._fire(Trigger.PROMPT_PROGRESS, "", offset)

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._fire(Trigger.TIMER, "", now)

    def hangup(self, now: float) -> None:
        """The caller hung up (or the call was lost): end the session, drop its checkpoint."""
        self._fire(Trigger.HANGUP, "", now)

    # --- the machinery ----------------------------------------------------------------------
    def _require_idle(self, what: str) -> None:
        if self._session.phase is not Phase.IDLE:
            raise InterpreterError(f"cannot {what}: the session is {self._session.phase.value}")

    def _fire(self, trigger: Trigger, key: str, now: float) -> None:
        self._actions[TRANSITIONS[self._session.phase, trigger]](key, now)

    def _update(self, **changes: object) -> None:
        self._session = msgspec.structs.replace(self._session, **changes)

    def _save(self) -> None:
        self._checkpointed_offset = self._session.prompt_offset
        self._commands.append(
            Checkpoint(self._session.session_id, self._session.step, self.checkpoint())
        )

    def _run(self, step_id: str, now: float, *, resuming: bool = False) -> None:
        """Enter `step_id` and run through steps that do not wait, until one does or the
        session ends. (The script's validation rules out loops of non-waiting steps.)"""
        next_id: str | None = step_id
        while next_id is not None:
            step = self._script.step(next_id)
            if not resuming:
                self._update(
                    step=step.id,
                    prompt_offset=0.0,
                    prompt_done=False,
                    digits="",
                    retries_left=step.retries if isinstance(step, CollectStep) else 0,
                    history=(*self._session.history, step.id)[-HISTORY_LIMIT:],
                )
            self._events.append(
                StepEntered(self._session.session_id, step.id, step.kind, resumed=resuming)
            )
            next_id = self._execute(step, now, resuming)
            resuming = False

    def _execute(self, step: Step, now: float, resuming: bool) -> str | None:
        """Do what `step` says; the next step's id for steps that run through, else None."""
        if isinstance(step, PlayStep):
            self._update(phase=Phase.PLAYING)
            self._play(step.prompt)
        elif isinstance(step, CollectStep):
            self._begin_collect(step, now, resuming)
        elif isinstance(step, RecordStep):
            variables = self._session.variables
            file = self._record_file(step)
            if step.into is not None:
                variables = {**variables, step.into: file}
            self._update(phase=Phase.RECORDING, variables=variables)
            self._deadline = now + step.max_seconds
            self._commands.append(StartRecord(file, step.max_seconds))
            self._save()
        elif isinstance(step, BranchStep):
            self._save()
            value = self._session.variables.get(step.on, "")
            return step.cases.get(value, step.default)
        elif isinstance(step, SetStep):
            variables = dict(self._session.variables)
            for name, template in step.values.items():
                variables[name] = render(template, variables)
            self._update(variables=variables)
            self._save()
            return step.next
        elif isinstance(step, TransferStep):
            target = render(step.to, self._session.variables)
            self._commands.append(Transfer(target))
            self._end(TRANSFERRED, transfer_target=target)
        else:
            assert isinstance(step, HangupStep)
            self._commands.append(Hangup(step.reason))
            self._end(step.reason)
        return None

    def _record_file(self, step: RecordStep) -> str:
        if step.file is None:
            return f"{self._session.session_id}-{step.id}.wav"
        return render(step.file, self._session.variables)

    def _play(self, prompt: str) -> None:
        self._commands.append(
            PlayPrompt(prompt, self._script.prompt_files[prompt], self._session.prompt_offset)
        )
        self._save()

    def _current(self) -> Step:
        return self._script.step(self._session.step)

    def _collect_step(self) -> CollectStep:
        step = self._current()
        assert isinstance(step, CollectStep)
        return step

    def _begin_collect(self, step: CollectStep, now: float, resuming: bool = False) -> None:
        session = self._session
        self._commands.append(
            StartCollect(
                step.id,
                step.min_digits,
                step.max_digits,
                step.terminator,
                step.timeout,
                session.digits,
            )
        )
        retrying = session.retries_left < step.retries
        prompt = step.retry_prompt if retrying and step.retry_prompt else step.prompt
        skip_prompt = resuming and self._resume_from_offset and session.prompt_done
        if prompt is None or skip_prompt:
            self._update(phase=Phase.COLLECTING, prompt_done=True)
            self._deadline = now + step.timeout
            self._save()
        else:
            self._update(phase=Phase.PROMPTING, prompt_done=False)
            self._play(prompt)

    # --- actions (the table's right-hand side) ------------------------------------------------
    def _advance(self, key: str, now: float) -> None:
        step = self._current()
        assert isinstance(step, PlayStep)
        self._run(step.next, now)

    def _arm(self, key: str, now: float) -> None:
        self._update(phase=Phase.COLLECTING, prompt_done=True)
        self._deadline = now + self._collect_step().timeout
        self._save()

    def _barge_in(self, key: str, now: float) -> None:
        self._commands.append(StopPrompt())
        self._update(phase=Phase.COLLECTING, prompt_done=True)
        self._take_digit(key, now)

    def _take_digit(self, key: str, now: float) -> None:
        step = self._collect_step()
        if step.terminator and key == step.terminator:
            self._finish_collect(step, now, timed_out=False)
            return
        digits = self._session.digits + key
        self._update(digits=digits)
        self._deadline = now + step.timeout
        if len(digits) >= step.max_digits:
            self._finish_collect(step, now, timed_out=False)
        else:
            self._save()

    def _note_offset(self, key: str, offset: float) -> None:
        self._update(prompt_offset=offset)
        if abs(offset - self._checkpointed_offset) >= self._progress_every:
            self._save()

    def _collect_timeout(self, key: str, now: float) -> None:
        self._finish_collect(self._collect_step(), now, timed_out=True)

    def _finish_collect(self, step: CollectStep, now: float, *, timed_out: bool) -> None:
        self._deadline = None
        value = self._session.digits
        if len(value) < step.min_digits:
            cause = CAUSE_TIMEOUT if timed_out else CAUSE_INVALID
        elif step.choices is not None and value not in step.choices:
            cause = CAUSE_INVALID
        else:
            self._update(variables={**self._session.variables, step.into: value})
            self._events.append(
                DigitsCollected(self._session.session_id, step.id, step.into, value)
            )
            self._run(step.next, now)
            return
        retries_left = max(self._session.retries_left - 1, 0)
        self._events.append(CollectFailed(self._session.session_id, step.id, cause, retries_left))
        if self._session.retries_left > 0:
            self._update(retries_left=retries_left, digits="", prompt_offset=0.0)
            self._begin_collect(step, now)
            return
        target = step.on_timeout if cause == CAUSE_TIMEOUT and step.on_timeout else step.on_fail
        if target is not None:
            self._run(target, now)
        else:
            self._commands.append(Hangup(NO_VALID_INPUT))
            self._end(NO_VALID_INPUT)

    def _record_digit(self, key: str, now: float) -> None:
        step = self._current()
        assert isinstance(step, RecordStep)
        if step.terminator and key == step.terminator:
            self._record_done(key, now)

    def _record_done(self, key: str, now: float) -> None:
        step = self._current()
        assert isinstance(step, RecordStep)
        self._deadline = None
        self._commands.append(StopRecord())
        file = self._record_file(step)
        self._events.append(RecordingFinished(self._session.session_id, step.id, file))
        self._run(step.next, now)

    def _end(self, reason: str, transfer_target: str | None = None) -> None:
        self._deadline = None
        self._update(phase=Phase.ENDED, ended=reason)
        self._commands.append(DiscardCheckpoint(self._session.session_id))
        self._events.append(
            SessionEnded(
                self._session.session_id,
                reason,
                dict(self._session.variables),
                transfer_target,
            )
        )
