"""The IVR script format: TOML, validated with pydantic, errors as ``file:line: reason``.

A script is a `[script]` table and a list of `[[steps]]`; each step has an `id` and a `kind`::

    [script]
    name = "support"
    start = "welcome"              # the first step
    resume_from_offset = false     # on failover, replay the current prompt from its start

    [[steps]]
    id = "menu"
    kind = "collect"               # play | collect | branch | set | transfer | record | hangup
    prompt = "menu"                # prompts/menu.wav next to the script, or a shipped prompt
    min = 1
    max = 1
    into = "choice"
    next = "route"

Kinds and their keys (the `Step` models below say the same in code):

- ``play``: `prompt`, `next`.
- ``collect``: `into` (variable), `next`; `prompt`, `retry_prompt` (played instead of `prompt`
  on a retry), `min` (1), `max` (1), `timeout` (5 s, from the end of the prompt and again after
  each digit), `terminator` ("#"; "" for none), `retries` (0), `choices` (valid values),
  `on_timeout`, `on_fail` (where to go when retries are used up; without them: hang up).
- ``branch``: `on` (variable), `cases` (value → step), `default` (step).
- ``set``: `values` (variable → template), `next`.
- ``transfer``: `to` (a user or number, a template) — through the call manager; ends the script.
- ``record``: `next`; `into` (variable that receives the file name), `file` (template, default
  ``<session>-<step>.wav``), `max_seconds` (60), `terminator` ("#").
- ``hangup``: `reason` ("hangup").

Templates are `string.Template` text: ``"account ${account}"``; a variable never set is "".
A prompt is a name (``menu`` → ``prompts/menu.wav`` beside the script, else a prompt shipped in
`callkeeper/media/prompts`) or a file path (``sounds/menu.wav``), relative to the script file.

What is an error: TOML syntax, an unknown key or step kind, a missing key, a duplicate step id,
a `next`/branch target that is not a step, a prompt file that does not exist, `min` > `max`, a
bad template or terminator, and a loop of steps that never waits for the caller (branch/set
only: the interpreter would spin). What is a warning (`Script.warnings`): a step that cannot be
reached from `start`, a branch on a variable no step sets (the IVR node may set it).
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from callkeeper.ivr.errors import ScriptError
from callkeeper.ivr.toml_lines import TomlLines, toml_error_line
from callkeeper.media.dtmf import EVENTS
from callkeeper.media.prompts import PROMPT_NAMES

STEP_KINDS = ("play", "collect", "branch", "set", "transfer", "record", "hangup")
DTMF_KEYS = EVENTS
"""The keys a caller can press: ``0-9 * # A-D``."""

_ID = r"^[A-Za-z0-9_.\-]+$"
_VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]*$"
StepId = Annotated[str, Field(pattern=_ID, max_length=64)]
VariableName = Annotated[str, Field(pattern=_VARIABLE, max_length=64)]
PromptRef = Annotated[str, Field(min_length=1, max_length=255)]


def check_terminator(value: str) -> str:
    if value and (len(value) != 1 or value not in DTMF_KEYS):
        raise ValueError(f"must be one DTMF key ({DTMF_KEYS}) or empty, not {value!r}")
    return value


def check_template(text: str) -> str:
    if not string.Template(text).is_valid():
        raise ValueError(f"bad template {text!r}: write variables as ${{name}} and a $ as $$")
    return text


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, variables: Mapping[str, str]) -> str:
    """`template` with ``${name}`` replaced from `variables` (a variable never set is "")."""
    return string.Template(template).substitute(_Missing(variables))


Template = Annotated[str, Field(max_length=1024)]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: StepId

    def targets(self) -> Iterator[tuple[str, str]]:
        """(key, step id) for every step this one can go to."""
        return iter(())


class PlayStep(_Step):
    kind: Literal["play"]
    prompt: PromptRef
    next: StepId

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next


class CollectStep(_Step):
    kind: Literal["collect"]
    into: VariableName
    next: StepId
    prompt: PromptRef | None = None
    retry_prompt: PromptRef | None = None
    min_digits: int = Field(default=1, alias="min", ge=0, le=64)
    max_digits: int = Field(default=1, alias="max", ge=1, le=64)
    timeout: float = Field(default=5.0, gt=0, le=600)
    terminator: str = "#"
    retries: int = Field(default=0, ge=0, le=20)
    choices: tuple[str, ...] | None = None
    on_timeout: StepId | None = None
    on_fail: StepId | None = None

    @field_validator("terminator")
    @classmethod
    def _one_key(cls, value: str) -> str:
        return check_terminator(value)

    @field_validator("choices")
    @classmethod
    def _keys_only(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for choice in value or ():
            if not choice or any(key not in DTMF_KEYS for key in choice):
                raise ValueError(f"choice {choice!r} is not a string of DTMF keys")
        return value

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next
        if self.on_timeout is not None:
            yield "on_timeout", self.on_timeout
        if self.on_fail is not None:
            yield "on_fail", self.on_fail


class BranchStep(_Step):
    kind: Literal["branch"]
    on: VariableName
    cases: dict[str, StepId] = Field(default_factory=dict)
    default: StepId

    def targets(self) -> Iterator[tuple[str, str]]:
        for target in self.cases.values():
            yield "cases", target
        yield "default", self.default


class SetStep(_Step):
    kind: Literal["set"]
    values: dict[VariableName, Template] = Field(min_length=1)
    next: StepId

    @field_validator("values")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            check_template(text)
        return value

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next


class TransferStep(_Step):
    kind: Literal["transfer"]
    to: Annotated[Template, Field(min_length=1)]

    @field_validator("to")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)


class RecordStep(_Step):
    kind: Literal["record"]
    next: StepId
    into: VariableName | None = None
    file: Template | None = None
    max_seconds: float = Field(default=60.0, gt=0, le=3600)
    terminator: str = "#"

    @field_validator("terminator")
    @classmethod
    def _one_key(cls, value: str) -> str:
        return check_terminator(value)

    @field_validator("file")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    def targets(self) -> Iterator[tuple[str, str]]:
        yield "next", self.next


class HangupStep(_Step):
    kind: Literal["hangup"]
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "hangup"


Step = PlayStep | CollectStep | BranchStep | SetStep | TransferStep | RecordStep | HangupStep
WAITING_KINDS = frozenset({"play", "collect", "record"})
"""Steps that wait for the caller or the media; the others run through at once."""


class ScriptHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=_ID, max_length=64)]
    start: StepId
    resume_from_offset: bool = False
    description: str = ""


class ScriptFile(BaseModel):
    """The document as written (pydantic checks the shapes; `_check` the references)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    script: ScriptHeader
    steps: list[Annotated[Step, Field(discriminator="kind")]] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Script:
    """A validated script, ready for `Interpreter`. `steps` is by id, in file order;
    `prompt_files` maps every prompt name the steps use to the file it resolved to."""

    name: str
    start: str
    steps: Mapping[str, Step]
    prompt_files: Mapping[str, str]
    resume_from_offset: bool = False
    source: str = "<script>"
    warnings: tuple[str, ...] = field(default=())

    def step(self, step_id: str) -> Step:
        return self.steps[step_id]


def shipped_prompt(name: str) -> Path | None:
    """The file of a prompt shipped with callkeeper (`media/prompts/<name>.wav`), if any."""
    if name not in PROMPT_NAMES:
        return None
    return Path(str(resources.files("callkeeper.media").joinpath("prompts", f"{name}.wav")))


def prompt_candidates(ref: str, base: Path) -> list[Path]:
    """Where a prompt reference may live, in the order they are tried."""
    if ref.endswith(".wav") or "/" in ref:
        return [base / ref]
    candidates = [base / "prompts" / f"{ref}.wav"]
    shipped = shipped_prompt(ref)
    if shipped is not None:
        candidates.append(shipped)
    return candidates


def is_script_text(text: str) -> bool:
    """True for an IVR script (it has a ``[script]`` table), False for a callkeeper config."""
    return TomlLines(text).has_table("script")


def load_script(path: Path) -> Script:
    """Read and validate the script at `path`; prompts resolve relative to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(str(path), None, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ScriptError(str(path), None, f"cannot read: {reason}") from None
    return parse_script(text, source=str(path), base_dir=path.parent)


def parse_script(
    text: str,
    *,
    source: str = "<script>",
    base_dir: Path = Path(),
    file_exists: Callable[[Path], bool] = Path.is_file,
) -> Script:
    """Validate script `text`; `source` names it in errors, `base_dir` anchors prompt files.

    Raises `ScriptError` for the problem on the lowest line (and counts the others)."""
    lines = TomlLines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        raise ScriptError(source, toml_error_line(message), f"not valid TOML: {message}") from None
    try:
        document = ScriptFile.model_validate(data)
    except ValidationError as error:
        problems = [_describe(item, data, lines) for item in error.errors()]
        raise _first_error(source, problems) from None
    checker = _Checker(document, lines, base_dir, file_exists)
    checker.run()
    if checker.errors:
        raise _first_error(source, checker.errors)
    return Script(
        name=document.script.name,
        start=document.script.start,
        steps={step.id: step for step in document.steps},
        prompt_files=checker.prompt_files,
        resume_from_offset=document.script.resume_from_offset,
        source=source,
        warnings=tuple(f"{source}:{line}: {reason}" for line, reason in sorted(checker.warnings)),
    )


Problem = tuple[int, str]  # (line, reason)


def _first_error(source: str, problems: list[Problem]) -> ScriptError:
    """The problem on the lowest line, counting the others."""
    line, reason = min(problems, key=lambda problem: problem[0])
    return ScriptError(source, line, reason, more=len(problems) - 1)


def _describe(item: Any, data: dict[str, Any], lines: TomlLines) -> Problem:
    """One pydantic error as (line, reason), worded for someone editing the TOML."""
    loc: list[str | int] = list(item["loc"])
    is_step = len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int)
    if is_step and len(loc) >= 3 and loc[2] in STEP_KINDS:
        del loc[2]  # the discriminated union's tag: not a key in the file
    kind = item["type"]
    line = lines.locate([*loc, "kind"] if kind == "union_tag_invalid" else loc)
    last = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        message = f"unknown key '{last}'"
    elif kind == "missing":
        message = f"missing table [{last}]" if loc == ["script"] else f"missing key '{last}'"
    elif kind == "union_tag_invalid":
        message = (
            f"unknown step kind {item['ctx']['tag']!r} (expected one of: {', '.join(STEP_KINDS)})"
        )
    elif kind == "union_tag_not_found":
        message = "missing key 'kind'"
    else:
        key = ".".join(str(part) for part in (loc[2:] if is_step else loc))
        text = str(item["msg"]).removeprefix("Value error, ")
        message = f"{key}: {text}" if key else text
    if is_step:
        message = f"{_step_label(data, int(loc[1]))}: {message}"
    return line, message


def _step_label(data: dict[str, Any], index: int) -> str:
    steps = data.get("steps")
    raw = steps[index] if isinstance(steps, list) and index < len(steps) else None
    step_id = raw.get("id") if isinstance(raw, dict) else None
    return f"step {step_id!r}" if isinstance(step_id, str) else f"step #{index + 1}"


class _Checker:
    """The checks that need the whole script: references, prompt files, reachability."""

    def __init__(
        self,
        document: ScriptFile,
        lines: TomlLines,
        base: Path,
        file_exists: Callable[[Path], bool],
    ) -> None:
        self.document = document
        self.lines = lines
        self.base = base
        self.file_exists = file_exists
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.prompt_files: dict[str, str] = {}
        self.index = {step.id: i for i, step in enumerate(document.steps)}

    def line(self, index: int, key: str) -> int:
        return self.lines.key_line(("steps", index), key)

    def run(self) -> None:
        steps = self.document.steps
        seen: set[str] = set()
        for index, step in enumerate(steps):
            if step.id in seen:
                self.errors.append((self.line(index, "id"), f"duplicate step id {step.id!r}"))
            seen.add(step.id)
        start = self.document.script.start
        if start not in self.index:
            line = self.lines.key_line(("script",), "start")
            self.errors.append((line, f"script: start is unknown step {start!r}"))
        for index, step in enumerate(steps):
            self._check_step(index, step)
        if not self.errors:
            self._check_loops()
            self._check_reachable(start)
            self._check_variables()

    def _check_step(self, index: int, step: Step) -> None:
        label = f"step {step.id!r}"
        for key, target in step.targets():
            if target not in self.index:
                what = "branch" if isinstance(step, BranchStep) else key
                self.errors.append(
                    (self.line(index, key), f"{label}: {what} to unknown step {target!r}")
                )
        if isinstance(step, CollectStep):
            if step.min_digits > step.max_digits:
                self.errors.append(
                    (
                        self.line(index, "min"),
                        f"{label}: min ({step.min_digits}) is greater than max ({step.max_digits})",
                    )
                )
            for choice in step.choices or ():
                if not step.min_digits <= len(choice) <= step.max_digits:
                    self.errors.append(
                        (
                            self.line(index, "choices"),
                            f"{label}: choice {choice!r} does not have "
                            f"{step.min_digits}..{step.max_digits} digits",
                        )
                    )
        for key in ("prompt", "retry_prompt"):
            ref = getattr(step, key, None)
            if ref is not None:
                self._resolve_prompt(index, label, key, ref)

    def _resolve_prompt(self, index: int, label: str, key: str, ref: str) -> None:
        if ref in self.prompt_files:
            return
        candidates = prompt_candidates(ref, self.base)
        found = next((path for path in candidates if self.file_exists(path)), None)
        if found is None:
            tried = " or ".join(str(path) for path in candidates)
            self.errors.append((self.line(index, key), f"{label}: prompt file {tried} not found"))
        else:
            self.prompt_files[ref] = str(found)

    def _check_loops(self) -> None:
        """A cycle of branch/set steps would run forever without waiting for the caller."""
        steps = {step.id: step for step in self.document.steps}
        done: set[str] = set()
        for first in steps:
            path: list[str] = []
            self._walk(first, steps, path, done)

    def _walk(
        self, step_id: str, steps: Mapping[str, Step], path: list[str], done: set[str]
    ) -> None:
        step = steps[step_id]
        if step_id in done or step.kind in WAITING_KINDS:
            return
        if step_id in path:
            loop = [*path[path.index(step_id) :], step_id]
            self.errors.append(
                (
                    self.line(self.index[step_id], "id"),
                    f"step {step_id!r}: steps {' -> '.join(loop)} loop without waiting "
                    "for the caller (put a play or collect step in the loop)",
                )
            )
            done.update(loop)
            return
        path.append(step_id)
        for _, target in step.targets():
            self._walk(target, steps, path, done)
        path.pop()
        done.add(step_id)

    def _check_reachable(self, start: str) -> None:
        reached = {start}
        pending = [start]
        steps = {step.id: step for step in self.document.steps}
        while pending:
            for _, target in steps[pending.pop()].targets():
                if target not in reached:
                    reached.add(target)
                    pending.append(target)
        for index, step in enumerate(self.document.steps):
            if step.id not in reached:
                self.warnings.append(
                    (self.line(index, "id"), f"step {step.id!r} is never reached from {start!r}")
                )

    def _check_variables(self) -> None:
        assigned: set[str] = set()
        for step in self.document.steps:
            if isinstance(step, CollectStep | RecordStep) and step.into is not None:
                assigned.add(step.into)
            elif isinstance(step, SetStep):
                assigned.update(step.values)
        for index, step in enumerate(self.document.steps):
            if isinstance(step, BranchStep) and step.on not in assigned:
                self.warnings.append(
                    (
                        self.line(index, "on"),
                        f"step {step.id!r}: branch on variable {step.on!r} that no step sets",
                    )
                )
