"""The one exception a user ever sees: a sentence saying what went wrong and what to do next."""

from __future__ import annotations

from typing import IO

import click


class PixseekError(click.ClickException):
    """A failure the user can act on. The CLI prints `error: {err}` as one line and exits with `exit_code`;
    the page shows `str(err)`."""

    exit_code = 1

    def __init__(self, problem: str, hint: str | None = None) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}: {hint}" if hint else problem)

    def show(self, file: IO[str] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


def first_line(exc: BaseException) -> str:
    """An exception's message for a one-line error: its first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Interrupted(PixseekError):
    """Ctrl-C during an index run: what was embedded so far is kept."""

    exit_code = 130


class NotInLibrary(PixseekError):
    """An image named by id or path that the library has not indexed (the API answers 404)."""


class UnreadableImage(PixseekError):
    """A query image that the decoder cannot read (the API answers 415)."""
