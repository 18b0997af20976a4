"""The IVR package's errors: one base, one subclass per thing that can be wrong."""

from __future__ import annotations


class IvrError(Exception):
    """Base of the IVR errors."""


class ScriptError(IvrError):
    """An IVR script that cannot be used. `str()` is one line: ``file:line: reason``.

    `line` is None when the problem has no line (the file is missing or unreadable); `more` counts
    further problems found in the same file, so fixing one does not hide the next by surprise.
    """

    def __init__(self, source: str, line: int | None, reason: str, more: int = 0) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        self.more = more
        where = source if line is None else f"{source}:{line}"
        tail = f" (and {more} more)" if more else ""
        super().__init__(f"{where}: {reason}{tail}")


class CheckpointError(IvrError):
    """A checkpoint that cannot be resumed: damaged bytes, or a session of another script."""


class InterpreterError(IvrError):
    """The interpreter was driven wrongly (started twice, resumed after starting): a bug in the
    caller, never something a caller on the phone can cause."""
