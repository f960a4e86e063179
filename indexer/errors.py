"""The one exception a user ever sees: a sentence saying what went wrong and what to do next."""

from __future__ import annotations


class PixseekError(Exception):
    """A failure the user can act on. The CLI and the page print `str(err)` as one line."""

    def __init__(self, problem: str, hint: str | None = None) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}: {hint}" if hint else problem)


class Interrupted(PixseekError):
    """Ctrl-C during an index run: what was embedded so far is kept."""
