"""The IVR script format: the sample loads, and every kind of mistake is `file:line: reason`."""

from __future__ import annotations

from pathlib import Path

import pytest

from callkeeper.ivr.errors import ScriptError
from callkeeper.ivr.script import (
    CollectStep,
    is_script_text,
    load_script,
    parse_script,
    render,
    shipped_prompt,
)
from callkeeper.ivr.toml_lines import TomlLines, toml_error_line

SAMPLE = Path(__file__).resolve().parents[1] / "src/callkeeper/ivr/samples/support.toml"

# A valid script that only uses prompts shipped with callkeeper, so it needs no files.
HEAD = """\
[script]
name = "t"
start = "menu"
"""
MENU = """
[[steps]]
id = "menu"
kind = "collect"
prompt = "goodbye"
into = "choice"
next = "route"
"""
ROUTE = """
[[steps]]
id = "route"
kind = "branch"
on = "choice"
cases = { "1" = "bye" }
default = "bye"
"""
BYE = """
[[steps]]
id = "bye"
kind = "hangup"
"""
VALID = HEAD + MENU + ROUTE + BYE


def parse(text: str, base: Path = Path("/nonexistent")) -> object:
    return parse_script(text, source="ivr/t.toml", base_dir=base)


def test_the_sample_script_loads_with_its_prompts_and_no_warnings() -> None:
    script = load_script(SAMPLE)
    assert script.name == "support" and script.start == "welcome"
    assert script.warnings == ()
    assert not script.resume_from_offset
    account = script.step("account")
    assert isinstance(account, CollectStep)
    assert (account.min_digits, account.max_digits, account.terminator, account.retries) == (
        4,
        4,
        "#",
        2,
    )
    # Its own prompts beside it; `transferring` is a shipped one.
    assert Path(script.prompt_files["account"]) == SAMPLE.parent / "prompts" / "account.wav"
    assert script.prompt_files["transferring"] == str(shipped_prompt("transferring"))
    for file in script.prompt_files.values():
        assert Path(file).is_file()
        assert Path(file).stat().st_size < 150_000


def test_a_minimal_script_is_valid() -> None:
    script = parse(VALID)
    assert list(script.steps) == ["menu", "route", "bye"]  # type: ignore[attr-defined]


BAD_CASES = [
    # (description, text, expected message)
    (
        "branch to nowhere",
        HEAD + MENU + ROUTE.replace('default = "bye"', 'default = "nowhere"') + BYE,
        "ivr/t.toml:17: step 'route': branch to unknown step 'nowhere'",
    ),
    (
        "a case to nowhere",
        HEAD + MENU + ROUTE.replace('"1" = "bye"', '"1" = "nowhere"') + BYE,
        "ivr/t.toml:16: step 'route': branch to unknown step 'nowhere'",
    ),
    (
        "next to nowhere",
        HEAD + MENU.replace('next = "route"', 'next = "rout"') + ROUTE + BYE,
        "ivr/t.toml:10: step 'menu': next to unknown step 'rout'",
    ),
    (
        "on_fail to nowhere",
        HEAD + MENU + 'on_fail = "x"\n' + ROUTE + BYE,
        "ivr/t.toml:11: step 'menu': on_fail to unknown step 'x'",
    ),
    (
        "unknown step kind",
        HEAD + MENU + ROUTE + BYE.replace('"hangup"', '"dance"'),
        "ivr/t.toml:21: step 'bye': unknown step kind 'dance' (expected one of: play, collect,"
        " branch, set, transfer, record, hangup)",
    ),
    (
        "no kind",
        HEAD + MENU + ROUTE + BYE.replace('kind = "hangup"\n', ""),
        "ivr/t.toml:19: step 'bye': missing key 'kind'",
    ),
    (
        "unknown key",
        HEAD + MENU.replace('into = "choice"', 'into = "choice"\ndigits = 3') + ROUTE + BYE,
        "ivr/t.toml:10: step 'menu': unknown key 'digits'",
    ),
    (
        "missing key",
        HEAD + MENU.replace('next = "route"\n', "") + ROUTE + BYE,
        "ivr/t.toml:5: step 'menu': missing key 'next'",
    ),
    (
        "missing prompt file",
        HEAD + MENU.replace('"goodbye"', '"welcome"') + ROUTE + BYE,
        "ivr/t.toml:8: step 'menu': prompt file /nonexistent/prompts/welcome.wav not found",
    ),
    (
        "missing prompt file by path",
        HEAD + MENU.replace('"goodbye"', '"sounds/hi.wav"') + ROUTE + BYE,
        "ivr/t.toml:8: step 'menu': prompt file /nonexistent/sounds/hi.wav not found",
    ),
    (
        "min > max",
        HEAD + MENU + "min = 5\nmax = 4\n" + ROUTE + BYE,
        "ivr/t.toml:11: step 'menu': min (5) is greater than max (4)",
    ),
    (
        "a choice of the wrong length",
        HEAD + MENU + 'choices = ["1", "22"]\n' + ROUTE + BYE,
        "ivr/t.toml:11: step 'menu': choice '22' does not have 1..1 digits",
    ),
    (
        "a choice that is not keys",
        HEAD + MENU + 'choices = ["x"]\n' + ROUTE + BYE,
        "ivr/t.toml:11: step 'menu': choices: choice 'x' is not a string of DTMF keys",
    ),
    (
        "bad terminator",
        HEAD + MENU + 'terminator = "##"\n' + ROUTE + BYE,
        "ivr/t.toml:11: step 'menu': terminator: must be one DTMF key",
    ),
    (
        "wrong type",
        HEAD + MENU + 'timeout = "soon"\n' + ROUTE + BYE,
        "ivr/t.toml:11: step 'menu': timeout: Input should be a valid number",
    ),
    (
        "duplicate id",
        HEAD + MENU + ROUTE + BYE + BYE,
        "ivr/t.toml:24: duplicate step id 'bye'",
    ),
    (
        "unknown start",
        HEAD.replace('"menu"', '"begin"') + MENU + ROUTE + BYE,
        "ivr/t.toml:3: script: start is unknown step 'begin'",
    ),
    (
        "no [script] table",
        MENU + ROUTE + BYE,
        "ivr/t.toml:1: missing table [script]",
    ),
    (
        "unknown script key",
        HEAD + "author = 'me'\n" + MENU + ROUTE + BYE,
        "ivr/t.toml:4: unknown key 'author'",
    ),
    (
        "unknown top-level table",
        VALID + "[extra]\nx = 1\n",
        "ivr/t.toml:22: unknown key 'extra'",
    ),
    (
        "no steps",
        "steps = []\n" + HEAD,
        "ivr/t.toml:1: steps: List should have at least 1 item",
    ),
    (
        "not TOML",
        HEAD + "[[steps]\n",
        "ivr/t.toml:4: not valid TOML: ",
    ),
    (
        "a bad template",
        HEAD
        + MENU
        + ROUTE
        + BYE.replace("hangup", "transfer").replace('"\n', '"\nto = "${x"\n', 1),
        "ivr/t.toml:21: step 'bye': to: bad template '${x'",
    ),
    (
        "a bad template in set",
        HEAD
        + MENU
        + ROUTE.replace('default = "bye"', 'default = "s"')
        + BYE
        + '[[steps]]\nid = "s"\nkind = "set"\nvalues = { a = "$" }\nnext = "bye"\n',
        "ivr/t.toml:25: step 's': values: bad template '$'",
    ),
    (
        "a step without an id",
        HEAD + MENU + ROUTE + BYE.replace('id = "bye"\n', ""),
        "ivr/t.toml:19: step #3: missing key 'id'",
    ),
    (
        "a loop that never waits",
        HEAD
        + MENU
        + ROUTE.replace('default = "bye"', 'default = "again"')
        + BYE
        + '[[steps]]\nid = "again"\nkind = "set"\nvalues = { a = "1" }\nnext = "route"\n',
        "ivr/t.toml:13: step 'route': steps route -> again -> route loop without waiting",
    ),
    (
        "several problems: the first line wins, the rest are counted",
        HEAD + MENU.replace('next = "route"', 'next = "x"') + ROUTE + BYE.replace("bye", "b"),
        "ivr/t.toml:10: step 'menu': next to unknown step 'x' (and 2 more)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES]
)
def test_bad_scripts_say_file_line_and_reason(text: str, expected: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse(text)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


def test_inline_steps_fall_back_to_the_steps_line() -> None:
    text = 'steps = [{ id = "a", kind = "hangup", color = "red" }]\n' + HEAD
    with pytest.raises(ScriptError, match=r"^ivr/t.toml:1: step 'a': unknown key 'color'$"):
        parse(text)


def test_a_cases_sub_table_is_located() -> None:
    route = ROUTE.replace('cases = { "1" = "bye" }\n', "").replace(
        'default = "bye"', 'default = "bye"\n[steps.cases]\n"1" = "nowhere"'
    )
    with pytest.raises(ScriptError, match=r"^ivr/t.toml:17: step 'route': branch to unknown"):
        parse(HEAD + MENU + route + BYE)


def test_unreachable_steps_and_unset_variables_are_warnings() -> None:
    text = (
        HEAD
        + MENU
        + ROUTE.replace('on = "choice"', 'on = "caller"')
        + BYE
        + '[[steps]]\nid = "lost"\nkind = "hangup"\n'
    )
    script = parse(text)
    assert script.warnings == (  # type: ignore[attr-defined]
        "ivr/t.toml:15: step 'route': branch on variable 'caller' that no step sets",
        "ivr/t.toml:23: step 'lost' is never reached from 'menu'",
    )


def test_prompts_resolve_beside_the_script_first(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "goodbye.wav").write_bytes(b"RIFF")
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "hi.wav").write_bytes(b"RIFF")
    text = HEAD + MENU + 'retry_prompt = "sounds/hi.wav"\n' + ROUTE + BYE
    script = parse(text, tmp_path)
    assert script.prompt_files == {  # type: ignore[attr-defined]
        "goodbye": str(tmp_path / "prompts" / "goodbye.wav"),
        "sounds/hi.wav": str(tmp_path / "sounds" / "hi.wav"),
    }


def test_load_script_errors(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"^/nonexistent/x.toml: file not found$"):
        load_script(Path("/nonexistent/x.toml"))
    with pytest.raises(ScriptError, match=r": cannot read: Is a directory$"):
        load_script(tmp_path)
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe[script]")
    with pytest.raises(ScriptError, match=r"b.toml: cannot read: not UTF-8 text$"):
        load_script(binary)
    good = tmp_path / "good.toml"
    good.write_text(VALID)
    assert load_script(good).source == str(good)


def test_script_detection_by_content() -> None:
    assert is_script_text(VALID)
    assert is_script_text(SAMPLE.read_text())
    assert not is_script_text("[sip]\ndomain = 'x'\n[ivr]\nscript = 'a.toml'\n")
    assert not is_script_text("[[script]]\n")


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("${queue}", {"queue": "billing"}, "billing"),
        ("account $account!", {"account": "1234"}, "account 1234!"),
        ("${missing}x", {}, "x"),
        ("$$5", {}, "$5"),
    ],
)
def test_render(template: str, variables: dict[str, str], expected: str) -> None:
    assert render(template, variables) == expected


def test_toml_lines_fallbacks() -> None:
    lines = TomlLines("# top\nname = 1\n[a]\nx = 1\n[[b]]\ny = 2\n[b.sub]\nz = 3\n[c]\n")
    assert lines.locate([]) == 1
    assert lines.locate(["name"]) == 2
    assert lines.locate(["a"]) == 3
    assert lines.locate(["a", "x"]) == 4
    assert lines.locate(["a", "nothing"]) == 3
    assert lines.locate(["b", 0, "y"]) == 6
    assert lines.locate(["b", 0, "z"]) == 5  # keys of a sub-table are not the item's own
    assert lines.locate(["b", 0, "sub"]) == 7
    assert lines.locate(["b", 5, "y"]) == 1
    assert lines.locate(["zzz", "k"]) == 1
    assert toml_error_line("Expected ']' (at line 3, column 7)") == 3
    assert toml_error_line("Invalid value (at end of document)") is None
