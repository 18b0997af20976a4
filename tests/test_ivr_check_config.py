"""`callkeeper check-config` on IVR scripts: given directly, or named by a config's [ivr] script."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from callkeeper.cli import main
from callkeeper.config import ConfigError, load_config

SAMPLES = Path(__file__).resolve().parents[1] / "src/callkeeper/ivr/samples"
BAD_BRANCH = """\
[script]
name = "t"
start = "menu"

[[steps]]
id = "menu"
kind = "branch"
on = "x"
default = "nowhere"
"""


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_sample_script_directly(capsys: pytest.CaptureFixture[str]) -> None:
    assert check(SAMPLES / "support.toml", capsys) == (0, f"{SAMPLES / 'support.toml'}: ok\n", "")


def test_a_config_naming_the_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(SAMPLES, tmp_path / "ivr")
    config = tmp_path / "callkeeper.toml"
    config.write_text('[ivr]\nscript = "ivr/support.toml"\n')
    assert check(config, capsys)[0] == 0
    assert load_config(config).ivr.script == tmp_path / "ivr" / "support.toml"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (BAD_BRANCH, "t.toml:9: step 'menu': branch to unknown step 'nowhere'"),
        (
            BAD_BRANCH.replace('kind = "branch"', 'kind = "dance"'),
            "t.toml:7: step 'menu': unknown step kind 'dance'",
        ),
        (
            BAD_BRANCH.replace('on = "x"', 'on = "x"\nprompt = "absent"'),
            "t.toml:9: step 'menu': unknown key 'prompt'",
        ),
        (
            '[script]\nname = "t"\nstart = "p"\n[[steps]]\nid = "p"\nkind = "play"\n'
            'prompt = "absent"\nnext = "p"\n',
            "t.toml:7: step 'p': prompt file",
        ),
        ("[script]\nname = \n", "t.toml:2: not valid TOML"),
    ],
)
def test_a_bad_script_fails_with_file_line_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], script: str, expected: str
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(script)
    code, out, err = check(path, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"callkeeper: {tmp_path}/{expected}"), err
    assert err.count("\n") == 1
    # The same script named by a config: the error still points into the script.
    (tmp_path / "ivr").mkdir()
    (tmp_path / "ivr" / "t.toml").write_text(script)
    config = tmp_path / "callkeeper.toml"
    config.write_text('[ivr]\nscript = "ivr/t.toml"\n')
    code, _, err = check(config, capsys)
    assert code == 2 and err.startswith(f"callkeeper: {tmp_path}/ivr/{expected}"), err
    with pytest.raises(ConfigError):
        load_config(config)


def test_a_config_naming_a_missing_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "callkeeper.toml"
    config.write_text('[ivr]\nscript = "nope.toml"\n')
    code, _, err = check(config, capsys)
    assert (code, err) == (2, f"callkeeper: ivr.script: file {tmp_path}/nope.toml does not exist\n")


def test_warnings_are_printed_but_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.toml"
    path.write_text(
        BAD_BRANCH.replace('"nowhere"', '"menu2"')
        + '[[steps]]\nid = "menu2"\nkind = "play"\nprompt = "music"\nnext = "menu"\n'
        + '[[steps]]\nid = "lost"\nkind = "hangup"\n'
    )
    code, out, err = check(path, capsys)
    assert code == 0 and out == f"{path}: ok\n"
    assert err.splitlines() == [
        f"callkeeper: warning: {path}:8: step 'menu': branch on variable 'x' that no step sets",
        f"callkeeper: warning: {path}:16: step 'lost' is never reached from 'menu'",
    ]


def test_plain_configs_and_missing_files_still_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[sip]\ndomain = "example.org"\n')
    assert check(config, capsys)[0] == 0
    code, _, err = check(tmp_path / "absent.toml", capsys)
    assert code == 2 and "file not found" in err
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe")
    code, _, err = check(binary, capsys)
    assert code == 2 and "cannot read" in err
