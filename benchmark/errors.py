"""Errors in files a user writes (suites, runner profiles): every problem at once, each with its key path."""
from __future__ import annotations


class ConfigFileError(ValueError):
    """The message names the file and lists each problem as ``key.path: what is wrong and what is allowed``."""

    what = "file"

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in {self.what}:\n{lines}")
