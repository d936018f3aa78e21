"""The one error type that the CLI turns into a single line and exit code 1."""

from __future__ import annotations


class EdgekitError(Exception):
    """A problem with the user's input or environment, with the fix for it.

    `problem` says what is wrong, `fix` what to do about it. The CLI prints
    `error: <problem>; <fix>` on one line and exits 1, without a traceback.
    """

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        one_line = " ".join(self.problem.split())
        if self.fix:
            return f"{one_line}; {' '.join(self.fix.split())}"
        return one_line
