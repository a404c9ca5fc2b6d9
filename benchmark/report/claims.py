"""Qualitative claims as small, safe expressions: never Python ``eval``.

A claim is one boolean expression over the results of a suite, for example::

    final("plain-56", "train_error") > final("plain-20", "train_error")
    epoch_reaching("rezero-56", "test_error", 15) < epoch_reaching("resnet-56", "test_error", 15)

Grammar (a subset of Python expression syntax, parsed with ``ast.parse(mode="eval")`` and then
walked against a whitelist, so nothing is ever executed)::

    claim      := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := arith (("<" | "<=" | ">" | ">=" | "==" | "!=") arith)*     # chains allowed
    arith      := arith ("+" | "-" | "*" | "/") arith | ("-" | "+") arith | atom
    atom       := NUMBER | call | "(" claim ")"
    call       := RESULT "(" STRING ["," STRING] ["," NUMBER] ")"           # keywords allowed too
                | ("abs" | "min" | "max") "(" arith ("," arith)* ")"
    RESULT     := final | best | std | last | epoch_reaching

Result functions (all in the metric's unit; errors in percent):
- ``final(label, metric="test_error")``: mean over seeds of the value at the suite's selected epoch
- ``best(label, metric="test_error")``: mean over seeds of the minimum over epochs
- ``std(label, metric="test_error")``: standard deviation over seeds at the selected epoch
- ``last(label, metric="test_error")``: mean over seeds of the value at the last epoch (final α, τ)
- ``epoch_reaching(label, metric, threshold)``: mean over seeds of the first epoch where
  metric <= threshold (infinite when a seed never gets there)

String constants are only allowed as the label and metric arguments of result functions.
"""
from __future__ import annotations

import ast
import difflib
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from benchmark.errors import UserError

__all__ = [
    "ClaimError",
    "ClaimPending",
    "ClaimResult",
    "Lookup",
    "RESULT_FUNCTIONS",
    "KNOWN_METRICS",
    "evaluate_claim",
    "validate_claim",
]


class ClaimError(UserError, ValueError):
    """A claim that cannot be parsed or refers to something that does not exist."""


class ClaimPending(Exception):
    """Raised by a lookup when a cell the claim needs has not finished."""


# name -> (parameter names, defaults for trailing parameters)
RESULT_FUNCTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "final": (("label", "metric"), {"metric": "test_error"}),
    "best": (("label", "metric"), {"metric": "test_error"}),
    "std": (("label", "metric"), {"metric": "test_error"}),
    "last": (("label", "metric"), {"metric": "test_error"}),
    "epoch_reaching": (("label", "metric", "threshold"), {}),
}
MATH_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}
KNOWN_METRICS = (
    "train_loss", "train_error", "test_loss", "test_error", "val_loss", "val_error",
    "lr", "seconds", "images_per_second", "iterations", "tau",
)  # plus "alpha.<block name>"

_COMPARE = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class Lookup(Protocol):
    """What a claim reads. Each method raises ClaimPending when the cell is not finished."""

    def final(self, label: str, metric: str) -> float: ...
    def best(self, label: str, metric: str) -> float: ...
    def std(self, label: str, metric: str) -> float: ...
    def last(self, label: str, metric: str) -> float: ...
    def epoch_reaching(self, label: str, metric: str, threshold: float) -> float: ...


@dataclass
class ClaimResult:
    verdict: str  # "holds" | "fails" | "pending"
    value: Any = None  # the boolean the expression gave (None when pending)
    numbers: dict[str, float] = field(default_factory=dict)  # call text -> value
    reason: str = ""  # why pending / why it could not be decided


# ----------------------------------------------------------------------------------------------
# Parsing and validation


def _parse(expr: str) -> ast.Expression:
    if not isinstance(expr, str) or not expr.strip():
        raise ClaimError("empty claim expression")
    try:
        return ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ClaimError(f"cannot parse claim {expr!r}: {e.msg} at column {e.offset}") from None


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _bind(call: ast.Call, name: str) -> dict[str, ast.expr]:
    """Match positional and keyword arguments of a result function to its parameters."""
    params, defaults = RESULT_FUNCTIONS[name]
    if len(call.args) > len(params):
        raise ClaimError(f"{name}() takes at most {len(params)} arguments, got {len(call.args)}")
    bound: dict[str, ast.expr] = dict(zip(params, call.args))
    for kw in call.keywords:
        if kw.arg is None or kw.arg not in params:
            raise ClaimError(f"{name}() has no argument {kw.arg!r}; arguments are {', '.join(params)}")
        if kw.arg in bound:
            raise ClaimError(f"{name}() got argument {kw.arg!r} twice")
        bound[kw.arg] = kw.value
    missing = [p for p in params if p not in bound and p not in defaults]
    if missing:
        raise ClaimError(f"{name}() is missing argument(s): {', '.join(missing)}")
    return bound


def _check_metric(metric: str) -> None:
    if metric in KNOWN_METRICS or (metric.startswith("alpha.") and len(metric) > 6):
        return
    raise ClaimError(f"unknown metric {metric!r}{_suggest(metric, KNOWN_METRICS)}")


def _walk(node: ast.AST, labels: set[str] | None, *, boolean: bool) -> None:
    """Raise ClaimError unless ``node`` is in the grammar. ``boolean``: a truth value is expected."""
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _walk(v, labels, boolean=True)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _walk(node.operand, labels, boolean=True)
        return
    if isinstance(node, ast.Compare):
        if not all(type(op) in _COMPARE for op in node.ops):
            raise ClaimError("only <, <=, >, >=, ==, != comparisons are allowed (no 'in', 'is')")
        for v in [node.left, *node.comparators]:
            _walk(v, labels, boolean=False)
        return
    if boolean:
        raise ClaimError(
            f"a claim must be a comparison (e.g. final(\"a\") < final(\"b\")), got {ast.unparse(node)!r}"
        )
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ClaimError(f"constant {node.value!r} is not a number (strings only name labels and metrics)")
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _walk(node.operand, labels, boolean=False)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ClaimError(f"operator {type(node.op).__name__} is not allowed; use + - * /")
        _walk(node.left, labels, boolean=False)
        _walk(node.right, labels, boolean=False)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ClaimError(f"only plain function calls are allowed, got {ast.unparse(node.func)!r}")
        name = node.func.id
        if name in MATH_FUNCTIONS:
            if node.keywords or not node.args or (name == "abs" and len(node.args) != 1):
                raise ClaimError(f"{name}() takes {'one' if name == 'abs' else 'one or more'} positional numbers")
            for a in node.args:
                _walk(a, labels, boolean=False)
            return
        if name not in RESULT_FUNCTIONS:
            known = [*RESULT_FUNCTIONS, *MATH_FUNCTIONS]
            raise ClaimError(f"unknown function {name!r}{_suggest(name, known)}; known: {', '.join(known)}")
        bound = _bind(node, name)
        for pname, arg in bound.items():
            if pname == "threshold":
                _walk(arg, labels, boolean=False)
                continue
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise ClaimError(f"{name}(): {pname} must be a string constant, got {ast.unparse(arg)!r}")
            if pname == "label" and labels is not None and arg.value not in labels:
                raise ClaimError(f"unknown label {arg.value!r}{_suggest(arg.value, labels)}")
            if pname == "metric":
                _check_metric(arg.value)
        return
    raise ClaimError(f"syntax not allowed in a claim: {ast.unparse(node)!r} ({type(node).__name__})")


def validate_claim(expr: str, labels: Iterable[str] | None = None) -> None:
    """Raise ClaimError naming the problem; ``labels`` are the suite's cell labels (None: skip)."""
    tree = _parse(expr)
    _walk(tree.body, set(labels) if labels is not None else None, boolean=True)


def claim_metrics(expr: str) -> set[str]:
    """The metric names a claim reads, so that the reporter loads only those. An invalid claim
    reads nothing here: evaluating it raises the proper ClaimError later."""
    try:
        tree = _parse(expr)
    except ClaimError:
        return set()
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RESULT_FUNCTIONS:
            try:
                bound = _bind(node, node.func.id)
            except ClaimError:
                continue
            arg = bound.get("metric")
            if arg is None:
                out.add(RESULT_FUNCTIONS[node.func.id][1]["metric"])
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.add(arg.value)
    return out


# ----------------------------------------------------------------------------------------------
# Evaluation


class _NaNOperand(Exception):
    """A comparison met NaN: the claim fails, however the comparison is negated or combined."""


def _eval(node: ast.AST, lookup: Lookup, numbers: dict[str, float], src: str = "") -> Any:
    if isinstance(node, ast.BoolOp):
        # Evaluate every operand (no short-circuit) so that all numbers are reported.
        vals = [_eval(v, lookup, numbers, src) for v in node.values]
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, lookup, numbers, src)
        if isinstance(node.op, ast.Not):
            return not v
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.Compare):
        vals = [_eval(v, lookup, numbers, src) for v in [node.left, *node.comparators]]
        if any(math.isnan(v) for v in vals):
            # Decided here, not by Python's NaN semantics: `not (nan < 5)` and `nan != 5` are True.
            raise _NaNOperand(ast.get_source_segment(src, node) or ast.unparse(node))
        return all(_COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, vals, vals[1:]))
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, lookup, numbers, src), _eval(node.right, lookup, numbers, src)
        if isinstance(node.op, ast.Div) and b == 0:
            return math.nan
        return _BINARY[type(node.op)](a, b)
    if isinstance(node, ast.Call):
        name = node.func.id  # type: ignore[attr-defined]
        if name in MATH_FUNCTIONS:
            vals = [_eval(a, lookup, numbers, src) for a in node.args]
            if any(math.isnan(v) for v in vals):
                return math.nan  # max(0.3, nan) is 0.3 in Python: a NaN must not vanish
            return float(MATH_FUNCTIONS[name](*vals))
        bound = _bind(node, name)
        params, defaults = RESULT_FUNCTIONS[name]
        args = []
        for p in params:
            if p in bound:
                arg = bound[p]
                args.append(_eval(arg, lookup, numbers, src) if p == "threshold" else arg.value)  # type: ignore[attr-defined]
            else:
                args.append(defaults[p])
        value = float(getattr(lookup, name)(*args))
        numbers[ast.get_source_segment(src, node) or ast.unparse(node)] = value
        return value
    raise ClaimError(f"syntax not allowed in a claim: {ast.unparse(node)!r}")  # validated before


def evaluate_claim(expr: str, lookup: Lookup, labels: Iterable[str] | None = None) -> ClaimResult:
    """Evaluate a validated claim. Pending when any cell it needs is unfinished.

    A NaN operand (a diverged run, a division by zero) in any comparison makes the claim fail,
    whatever surrounds it (``not``, ``!=``, ``or``).
    """
    tree = _parse(expr)
    _walk(tree.body, set(labels) if labels is not None else None, boolean=True)
    numbers: dict[str, float] = {}
    try:
        value = bool(_eval(tree.body, lookup, numbers, expr.strip()))
    except ClaimPending as e:
        return ClaimResult("pending", None, numbers, str(e))
    except _NaNOperand as e:
        return ClaimResult("fails", False, numbers, f"not a number in {e}")
    return ClaimResult("holds" if value else "fails", value, numbers)
