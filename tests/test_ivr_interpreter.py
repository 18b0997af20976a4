"""The IVR interpreter: the transition table, collect/record rules, checkpoints and failover."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from callkeeper.ivr.interpreter import Interpreter
from callkeeper.ivr.script import Script, load_script, parse_script
from callkeeper.ivr.session import (
    HISTORY_LIMIT,
    Session,
    decode_checkpoint,
    encode_checkpoint,
    new_session,
)
from callkeeper.ivr.states import TRANSITIONS, Action, Phase, Trigger
from callkeeper.media.dtmf import DtmfDigit

SAMPLE = Path(__file__).resolve().parents[1] / "src/callkeeper/ivr/samples/support.toml"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def drain(ivr: Interpreter) -> tuple[list[IvrCommand], list[IvrEvent]]:
    commands: list[IvrCommand] = []
    events: list[IvrEvent] = []
    while (command := ivr.next_command()) is not None:
        commands.append(command)
    while (event := ivr.next_event()) is not None:
        events.append(event)
    return commands, events


def last_checkpoint(commands: list[IvrCommand]) -> bytes:
    return [c for c in commands if isinstance(c, Checkpoint)][-1].data


def script(steps: str, head: str = "") -> Script:
    return parse_script(f'[script]\nname = "t"\nstart = "a"\n{head}\n{steps}')


def started(s: Script, now: float = 0.0, **options: object) -> Interpreter:
    ivr = Interpreter(s, new_session("s1", s.name, s.start), **options)  # type: ignore[arg-type]
    ivr.start(now)
    return ivr


# --- the table -------------------------------------------------------------------------------
def test_the_transition_table_is_total_and_an_ended_session_ignores_everything() -> None:
    assert set(TRANSITIONS) == {(p, t) for p in Phase for t in Trigger}
    assert {TRANSITIONS[Phase.ENDED, t] for t in Trigger} == {Action.IGNORE}
    assert all(TRANSITIONS[p, Trigger.HANGUP] is Action.END for p in Phase if p is not Phase.ENDED)


# --- the sample, end to end, with a node that dies ---------------------------------------------
def test_sample_failover_mid_account_number_keeps_the_digits() -> None:
    support = load_script(SAMPLE)
    clock = Clock()
    node1 = Interpreter(support, new_session("call-1", "support", support.start, {"caller": "bob"}))
    node1.start(clock.now)
    commands, events = drain(node1)
    assert commands[0] == PlayPrompt("welcome", support.prompt_files["welcome"], 0.0)
    assert events == [StepEntered("call-1", "welcome", "play")]
    node1.prompt_finished(clock.advance(3.0))
    commands, _ = drain(node1)
    assert [type(c) for c in commands] == [StartCollect, PlayPrompt, Checkpoint]
    node1.digit(DtmfDigit("1"), clock.advance(1.0))  # barges into the menu
    commands, events = drain(node1)
    assert StopPrompt() in commands
    assert DigitsCollected("call-1", "menu", "choice", "1") in events
    assert [e.step for e in events if isinstance(e, StepEntered)] == ["route", "account"]
    assert PlayPrompt("account", support.prompt_files["account"], 0.0) in commands
    node1.prompt_progress(2.5)
    node1.prompt_finished(clock.advance(5.0))
    node1.digit("1", clock.advance(1.0))
    node1.digit("2", clock.advance(1.0))
    commands, _ = drain(node1)
    checkpoint = last_checkpoint(commands)
    assert decode_checkpoint(checkpoint).digits == "12"
    del node1  # kill -9

    clock.advance(4.0)
    node2 = Interpreter.resumed(support, checkpoint, clock.now)
    commands, events = drain(node2)
    assert events[:2] == [
        SessionResumed("call-1", "account", "12", 0.0),
        StepEntered("call-1", "account", "collect", resumed=True),
    ]
    assert commands[:2] == [
        StartCollect("account", 4, 4, "#", 8.0, "12"),
        PlayPrompt("account", support.prompt_files["account"], 0.0),  # replayed from the start
    ]
    node2.prompt_finished(clock.advance(5.0))
    node2.digit("3", clock.advance(1.0))
    node2.digit("4", clock.advance(1.0))  # max reached: no terminator needed
    commands, events = drain(node2)
    assert DigitsCollected("call-1", "account", "account", "1234") in events
    assert [e.step for e in events if isinstance(e, StepEntered)] == [
        "check_account",
        "to_billing",
        "thanks_billing",
    ]
    node2.prompt_finished(clock.advance(3.5))
    commands, events = drain(node2)
    assert commands == [Transfer("billing"), DiscardCheckpoint("call-1")]
    ended = events[-1]
    assert isinstance(ended, SessionEnded) and ended.reason == "transferred"
    assert ended.transfer_target == "billing"
    assert dict(ended.variables) == {
        "caller": "bob",
        "choice": "1",
        "account": "1234",
        "queue": "billing",
        "note": "account 1234",
    }
    assert node2.finished and node2.get_timer() is None
    assert node2.session.history[:3] == ("welcome", "menu", "route")


def test_sample_unknown_account_says_goodbye_and_hangs_up() -> None:
    support = load_script(SAMPLE)
    ivr = started(support)
    ivr.prompt_finished(1)
    for key in "1" + "0000":
        ivr.digit(key, 2)
    ivr.prompt_finished(3)  # unknown_account
    ivr.prompt_finished(4)  # goodbye
    commands, events = drain(ivr)
    assert commands[-2:] == [Hangup("caller done"), DiscardCheckpoint("s1")]
    assert isinstance(events[-1], SessionEnded) and events[-1].reason == "caller done"


def test_sample_support_choice_transfers_to_support() -> None:
    ivr = started(load_script(SAMPLE))
    ivr.prompt_finished(1)
    ivr.prompt_finished(2)
    ivr.digit("2", 3)
    ivr.prompt_finished(4)
    assert Transfer("support") in drain(ivr)[0]


# --- collect ---------------------------------------------------------------------------------
COLLECT = """
[[steps]]
id = "a"
kind = "collect"
prompt = "goodbye"
retry_prompt = "music"
min = 2
max = 4
timeout = 5
retries = 1
into = "v"
next = "ok"
{extra}

[[steps]]
id = "ok"
kind = "hangup"
reason = "ok"

[[steps]]
id = "failed"
kind = "hangup"
reason = "failed"

[[steps]]
id = "timed_out"
kind = "hangup"
reason = "timed out"
"""


def collect(extra: str = "") -> Interpreter:
    ivr = started(script(COLLECT.format(extra=extra)))
    drain(ivr)
    return ivr


def ended_reason(ivr: Interpreter) -> str | None:
    return ivr.session.ended


@pytest.mark.parametrize(
    ("extra", "keys", "expected"),
    [
        ("", "12#", "ok"),  # the terminator with enough digits
        ("", "1234", "ok"),  # max digits
        ("", "1#", "no valid input"),  # too few: retry, then too few again
        ('on_fail = "failed"', "1#1#", "failed"),
        ('choices = ["12"]', "13#12#", "ok"),  # a wrong choice uses the retry
        ('choices = ["12"]\non_fail = "failed"', "13#14#", "failed"),
        ('terminator = ""', "12#4", "ok"),  # '#' is a digit like any other then
        ("", "!x12#", "ok"),  # flash and non-keys are ignored
    ],
)
def test_collect_outcomes(extra: str, keys: str, expected: str) -> None:
    ivr = collect(extra)
    for key in keys:
        ivr.digit(key, 10)
        if ivr.phase is Phase.PROMPTING and ivr.session.retries_left == 0 and key == "#":
            ivr.prompt_finished(11)
    if not ivr.finished:
        ivr.digit("#", 12)
        ivr.digit("#", 12)
    assert ended_reason(ivr) == expected


def test_collect_timeouts_retry_with_the_retry_prompt_then_go_to_on_timeout() -> None:
    ivr = collect('on_timeout = "timed_out"\non_fail = "failed"')
    assert ivr.get_timer() is None  # the timeout runs from the end of the prompt
    ivr.prompt_finished(10)
    assert ivr.get_timer() == 15
    ivr.handle_timer(14.9)  # early: nothing
    ivr.digit("1", 14)
    assert ivr.get_timer() == 19  # again from each digit
    drain(ivr)
    ivr.handle_timer(19)
    commands, events = drain(ivr)
    assert CollectFailed("s1", "a", "timeout", 0) in events
    assert commands[0] == StartCollect("a", 2, 4, "#", 5.0, "")
    assert isinstance(commands[1], PlayPrompt) and commands[1].name == "music"
    assert ivr.session.retries_left == 0 and ivr.session.digits == ""
    ivr.prompt_finished(20)
    ivr.handle_timer(25)
    assert ended_reason(ivr) == "timed out"


def test_a_timeout_with_enough_digits_succeeds() -> None:
    ivr = collect()
    ivr.prompt_finished(0)
    ivr.digit("1", 1)
    ivr.digit("2", 2)
    ivr.handle_timer(7)
    assert ivr.session.variables == {"v": "12"} and ended_reason(ivr) == "ok"


def test_a_collect_without_prompt_arms_at_once_and_late_prompt_reports_are_ignored() -> None:
    ivr = started(
        script(
            '[[steps]]\nid = "a"\nkind = "collect"\ninto = "v"\nmin = 0\nnext = "b"\n'
            '[[steps]]\nid = "b"\nkind = "hangup"\n'
        ),
        now=5,
    )
    assert ivr.phase is Phase.COLLECTING and ivr.get_timer() == 10
    ivr.prompt_finished(6)
    ivr.prompt_progress(1.0)
    ivr.handle_timer(10)  # min 0: nothing entered is a valid answer
    assert ivr.session.variables == {"v": ""}
    assert ivr.finished


# --- play, set, branch, transfer, record ---------------------------------------------------------
def test_a_play_step_ignores_digits_and_timers() -> None:
    ivr = started(
        script('[[steps]]\nid = "a"\nkind = "play"\nprompt = "music"\nnext = "b"\n' + HANGUP_B)
    )
    ivr.digit("1", 1)
    ivr.handle_timer(100)
    assert ivr.phase is Phase.PLAYING
    ivr.prompt_finished(2)
    assert ivr.finished


HANGUP_B = '[[steps]]\nid = "b"\nkind = "hangup"\n'
RECORD = (
    """
[[steps]]
id = "a"
kind = "record"
max_seconds = 30
next = "b"
{extra}
"""
    + HANGUP_B
)


@pytest.mark.parametrize(
    ("extra", "file", "variables"),
    [
        ("", "s1-a.wav", {}),
        ('into = "msg"\nfile = "vm-${caller}.wav"', "vm-bob.wav", {"msg": "vm-bob.wav"}),
    ],
)
def test_record_until_the_limit(extra: str, file: str, variables: dict[str, str]) -> None:
    s = script(RECORD.format(extra=extra))
    ivr = Interpreter(s, new_session("s1", "t", "a", {"caller": "bob"}))
    ivr.start(0)
    assert ivr.get_timer() == 30
    ivr.digit("5", 1)  # not the terminator
    ivr.handle_timer(30)
    commands, events = drain(ivr)
    assert StartRecord(file, 30.0) in commands and StopRecord() in commands
    assert RecordingFinished("s1", "a", file) in events
    assert {k: v for k, v in ivr.session.variables.items() if k != "caller"} == variables


def test_record_stops_on_the_terminator_and_a_hangup_keeps_the_file_name() -> None:
    ivr = started(script(RECORD.format(extra='into = "msg"')))
    ivr.digit("#", 3)
    assert ivr.finished and StopRecord() in drain(ivr)[0]
    ivr = started(script(RECORD.format(extra='into = "msg"\nterminator = ""')))
    ivr.digit("#", 3)
    assert ivr.phase is Phase.RECORDING
    ivr.hangup(4)
    _, events = drain(ivr)
    assert events[-1] == SessionEnded("s1", "caller hung up", {"msg": "s1-a.wav"})


def test_set_branch_and_transfer_run_through_with_templates() -> None:
    s = script(
        '[[steps]]\nid = "a"\nkind = "set"\nvalues = { x = "4", y = "n${x}" }\nnext = "c"\n'
        '[[steps]]\nid = "c"\nkind = "branch"\non = "y"\ncases = { n4 = "t" }\ndefault = "b"\n'
        '[[steps]]\nid = "t"\nkind = "transfer"\nto = "+1555${x}"\n' + HANGUP_B
    )
    ivr = started(s)
    commands, events = drain(ivr)
    assert [e.step for e in events if isinstance(e, StepEntered)] == ["a", "c", "t"]
    assert commands[-2:] == [Transfer("+15554"), DiscardCheckpoint("s1")]
    assert len([c for c in commands if isinstance(c, Checkpoint)]) == 2


def test_hangup_before_start_and_late_inputs_after_the_end() -> None:
    ivr = Interpreter(script(HANGUP_B.replace('"b"', '"a"')), new_session("s1", "t", "a"))
    ivr.digit("1", 0)
    ivr.hangup(1)
    assert ivr.finished and ended_reason(ivr) == "caller hung up"
    ivr.hangup(2)
    ivr.digit("1", 2)
    ivr.handle_timer(3)
    assert drain(ivr)[0] == [DiscardCheckpoint("s1")]


# --- checkpoints and resume --------------------------------------------------------------------
def test_progress_checkpoints_every_second_of_audio() -> None:
    ivr = collect()
    ivr.prompt_progress(0.5)
    ivr.prompt_progress(-1.0)
    assert drain(ivr)[0] == []
    ivr.prompt_progress(1.0)
    ivr.prompt_progress(1.5)
    ivr.prompt_progress(2.0)
    commands, _ = drain(ivr)
    assert [decode_checkpoint(c.data).prompt_offset for c in commands] == [1.0, 2.0]  # type: ignore[union-attr]


def test_resume_from_offset_plays_on_where_the_prompt_was() -> None:
    s = script(
        '[[steps]]\nid = "a"\nkind = "play"\nprompt = "music"\nnext = "c"\n'
        + COLLECT.format(extra="").replace('id = "a"', 'id = "c"'),
        head="resume_from_offset = true",
    )
    ivr = started(s)
    ivr.prompt_progress(4.0)
    data = ivr.checkpoint()
    resumed = Interpreter.resumed(s, data, 50)
    commands, events = drain(resumed)
    assert commands[0] == PlayPrompt("music", s.prompt_files["music"], 4.0)
    assert events[0] == SessionResumed("s1", "a", "", 4.0)
    # A collect whose prompt had finished is not replayed: the timeout is re-armed.
    resumed.prompt_finished(51)
    resumed.prompt_finished(60)
    resumed.digit("9", 61)
    again = Interpreter.resumed(s, resumed.checkpoint(), 70)
    commands, _ = drain(again)
    assert not any(isinstance(c, PlayPrompt) for c in commands)
    assert again.phase is Phase.COLLECTING and again.get_timer() == 75
    # ... unless the node says to replay from the start.
    replay = Interpreter.resumed(s, resumed.checkpoint(), 70, resume_from_offset=False)
    assert any(isinstance(c, PlayPrompt) for c in drain(replay)[0])


def test_resume_keeps_retries_and_replays_the_retry_prompt() -> None:
    ivr = collect()
    ivr.digit("1", 1)
    ivr.digit("#", 2)  # too few: the retry
    resumed = Interpreter.resumed(ivr._script, ivr.checkpoint(), 3)
    commands, _ = drain(resumed)
    assert isinstance(commands[1], PlayPrompt) and commands[1].name == "music"
    assert resumed.session.retries_left == 0


def test_resume_of_record_and_run_through_steps_runs_them_again() -> None:
    s = script(RECORD.format(extra=""))
    ivr = started(s)
    resumed = Interpreter.resumed(s, ivr.checkpoint(), 100)
    assert resumed.get_timer() == 130 and StartRecord("s1-a.wav", 30.0) in drain(resumed)[0]
    branch = script('[[steps]]\nid = "a"\nkind = "branch"\non = "x"\ndefault = "b"\n' + HANGUP_B)
    session = msgspec.structs.replace(new_session("s1", "t", "a"), phase=Phase.PLAYING)
    resumed = Interpreter.resumed(branch, encode_checkpoint(session), 1)
    assert resumed.finished


def test_bad_checkpoints_and_wrong_driving_raise() -> None:
    s = script(RECORD.format(extra=""))
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        Interpreter.resumed(s, b"\x00garbage", 0)
    with pytest.raises(CheckpointError, match="is for script 'other'"):
        Interpreter(s, new_session("s1", "other", "a"))
    fresh = Interpreter(s, new_session("s1", "t", "a"))
    with pytest.raises(CheckpointError, match="checkpoint is for script 'other'"):
        fresh.resume(encode_checkpoint(new_session("s1", "other", "a")), 0)
    with pytest.raises(CheckpointError, match="step 'zz' is not in the script"):
        fresh.resume(encode_checkpoint(new_session("s1", "t", "zz")), 0)
    ended = msgspec.structs.replace(new_session("s1", "t", "a"), ended="hangup")
    with pytest.raises(CheckpointError, match="already ended"):
        fresh.resume(encode_checkpoint(ended), 0)
    newer = msgspec.structs.replace(new_session("s1", "t", "a"), version=99)
    with pytest.raises(CheckpointError, match="newer"):
        decode_checkpoint(encode_checkpoint(newer))
    bad_digits = msgspec.msgpack.encode(
        {"session_id": "s", "script": "t", "step": "a", "digits": "x"}
    )
    with pytest.raises(CheckpointError):
        decode_checkpoint(bad_digits)
    fresh.start(0)
    with pytest.raises(InterpreterError, match="cannot start: the session is recording"):
        fresh.start(0)
    with pytest.raises(InterpreterError, match="cannot resume"):
        fresh.resume(fresh.checkpoint(), 0)


def test_history_is_bounded() -> None:
    s = script(
        '[[steps]]\nid = "a"\nkind = "play"\nprompt = "music"\nnext = "a"\n',
    )
    ivr = started(s)
    for now in range(HISTORY_LIMIT + 10):
        ivr.prompt_finished(now)
    assert ivr.session.history == ("a",) * HISTORY_LIMIT


sessions = st.builds(
    Session,
    session_id=st.text(max_size=20),
    script=st.text(max_size=20),
    step=st.text(max_size=20),
    phase=st.sampled_from(Phase),
    prompt_offset=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    prompt_done=st.booleans(),
    digits=st.text(alphabet="0123456789*#ABCD", max_size=64),
    retries_left=st.integers(0, 1000),
    variables=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5),
    history=st.lists(st.text(max_size=10), max_size=HISTORY_LIMIT).map(tuple),
    ended=st.none() | st.text(max_size=20),
)


@given(sessions)
def test_checkpoint_round_trip(session: Session) -> None:
    assert decode_checkpoint(encode_checkpoint(session)) == session


@given(st.binary(max_size=200))
def test_random_bytes_are_checkpoint_errors_or_sessions(data: bytes) -> None:
    with contextlib.suppress(CheckpointError):
        decode_checkpoint(data)


INPUT = st.one_of(
    st.tuples(st.just("digit"), st.sampled_from("0123456789#*!x")),
    st.tuples(st.just("finished"), st.just("")),
    st.tuples(st.just("timer"), st.just("")),
    st.tuples(st.just("progress"), st.just("")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(INPUT, max_size=40), st.integers(0, 40))
def test_any_input_sequence_checkpoints_and_resumes_anywhere(
    inputs: list[tuple[str, str]], cut: int
) -> None:
    support = load_script(SAMPLE)
    clock = Clock()
    ivr = started(support, clock.now)
    checkpoints: list[bytes] = []
    for index, (kind, key) in enumerate(inputs):
        now = clock.advance(1.5)
        if kind == "digit":
            ivr.digit(key, now)
        elif kind == "finished":
            ivr.prompt_finished(now)
        elif kind == "timer":
            ivr.handle_timer(ivr.get_timer() or now)
        else:
            ivr.prompt_progress(index * 0.7)
        checkpoints += [c.data for c in drain(ivr)[0] if isinstance(c, Checkpoint)]
    if checkpoints:
        data = checkpoints[min(cut, len(checkpoints) - 1)]
        session = decode_checkpoint(data)
        resumed = Interpreter.resumed(support, data, clock.advance(10))
        assert resumed.session.digits == session.digits
        assert resumed.session.variables == session.variables
        if resumed.session.step == session.step:
            # (A checkpoint taken on entering a branch/set step resumes by running it again,
            # so the session may already stand at the next step, with that step's retries.)
            assert resumed.session.retries_left == session.retries_left
