"""Mistakes found in rules and test files, each with the place it was found.

A rules directory is checked whole: every problem is collected first and raised together in one
`RulesError`, so an author fixes them all in one round instead of one per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from brokerguard.errors import BrokerGuardError


@dataclass(frozen=True, slots=True)
class Problem:
    file: str  # the path as given (a directory for problems with the directory itself)
    line: int  # 1-based; 0 when the problem concerns the whole file or directory
    col: int  # 1-based; 0 with line 0
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}: {self.message}"
        return f"{self.file}: {self.message}"


class RulesError(BrokerGuardError):
    """Rules or tests that cannot be used; `problems` says where and why, one line each."""

    def __init__(self, problems: Iterable[Problem], warnings: Iterable[Problem] = ()) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.warnings: tuple[Problem, ...] = tuple(warnings)  # found alongside; not the reason it failed
        super().__init__("\n".join(str(problem) for problem in self.problems))
