"""Errors a user can fix, and how the command line shows them."""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a suite or profile file, the database, the data folder, an option.

    The `bench` command prints the message and exits with code 2, never a traceback; every such error
    derives from this class, so a new one needs no change in the CLI.
    """


class ConfigFileError(UserError, ValueError):
    """The message names the file and lists each problem as ``key.path: what is wrong and what is allowed``."""

    what = "file"

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in {self.what}:\n{lines}")
