"""The project's own error types: one line that says what, where and how to fix it."""

from __future__ import annotations


class TunewiseError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None):
        self.fix = fix
        super().__init__(f"{message} (fix: {fix})" if fix else message)


class DataError(TunewiseError):
    """A problem with a data file, pinned to file:line and field where known."""

    def __init__(self, path: str, reason: str, *, line: int | None = None,
                 field: str | None = None, fix: str | None = None):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path if line is None else f"{self.path}:{line}"
        if field:
            where += f" field '{field}'"
        super().__init__(f"{where}: {reason}", fix=fix)


class ConfigError(TunewiseError):
    """A bad flag or task-file key; the message names it."""


class AssetError(TunewiseError):
    """An embedded default (model, embedder, demo data) is not installed."""
