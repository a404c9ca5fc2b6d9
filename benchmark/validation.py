"""How bench checks what a user wrote: one type converter, one value-rule form, one "did you mean".

Suite files (``benchmark.suite``) and runner profiles (``benchmark.runner.profile``) are both TOML
tables turned into frozen dataclasses. Both go through :func:`convert` (a field's type hint is its
schema: ``Literal[...]``, ``int``, ``tuple[float, ...]``, ...), then through the value rules kept
beside each dataclass (``RULES``, a field name -> :class:`Rule` table, and the ``check()`` methods of
``benchmark.config``). Torch-free.
"""
from __future__ import annotations

import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Literal


def is_int(v: Any) -> bool:
    """An integer, strictly: ``True`` is an ``int`` in Python, never in a config file."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An integer or a float, not a boolean."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """``"did you mean 'x'?"`` (``n`` close names, difflib's 0.6 cutoff), or "" when none is close;
    the caller puts it in its message's punctuation."""
    close = difflib.get_close_matches(name, list(choices), n=n)
    return f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@dataclass(frozen=True)
class Rule:
    """A rule on a field's (converted) value, and the words that say what is allowed."""

    allowed: str  # e.g. "> 0" (suites) or "an integer >= 1" (profiles)
    ok: Callable[[Any], bool]


def broken_rules(obj: Any, rules: Mapping[str, Rule]) -> list[tuple[str, Any, str]]:
    """(field, value, what is allowed) for each rule that ``obj``'s field breaks."""
    return [(name, getattr(obj, name), rule.allowed) for name, rule in rules.items()
            if not rule.ok(getattr(obj, name))]


@functools.cache  # get_type_hints evaluates every annotation: a third of parsing 1,000 stored jobs
def field_hints(cls: type) -> Mapping[str, Any]:
    """The type hint of each field of the dataclass ``cls``, in field order (its ClassVars are no fields)."""
    hints = typing.get_type_hints(cls)
    return types.MappingProxyType({f.name: hints[f.name] for f in fields(cls)})


def convert(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """Check a TOML value against a type hint; return (ok, value as the dataclass wants it, what was expected)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        return value in args, value, "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        expected = []
        for arg in args:
            if arg is type(None):
                continue  # TOML has no null: an Optional field is simply left out
            ok, v, e = convert(value, arg)
            if ok:
                return True, v, ""
            expected.append(e)
        return False, value, " or ".join(expected)
    if origin is tuple:
        item = args[0]
        if not isinstance(value, list):
            return False, value, f"a list of {_name(item)}"
        out = []
        for v in value:
            ok, cv, _ = convert(v, item)
            if not ok:
                return False, value, f"a list of {_name(item)}"
            out.append(cv)
        return True, tuple(out), ""
    if origin in (dict, Mapping):  # a free-form table, e.g. a runner profile's extra sbatch options
        return isinstance(value, dict), value, "a table"
    if hint is bool:
        return isinstance(value, bool), value, "true or false"
    if hint is int:
        return is_int(value), value, "an integer"
    if hint is float:  # TOML has nan and inf: no protocol number is either
        ok = is_number(value) and math.isfinite(value)
        return ok, float(value) if ok else value, "a finite number"
    if hint is str:  # PostgreSQL refuses NUL in text: refuse it here, not at `bench run`
        return isinstance(value, str) and "\0" not in value, value, "a string (without NUL characters)"
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in a config dataclass, not in the file


def _name(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, str(hint))
