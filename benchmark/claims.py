"""Qualitative claims as small, safe expressions: never Python ``eval``.

A claim is one boolean expression over the results of a suite, for example::

    selected("plain-56", "train_error") > selected("plain-20", "train_error")
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
    RESULT     := selected | best | std | last | epoch_reaching | final (deprecated: = selected)

Result functions (all in the metric's unit; errors in percent), each over the cell's seeds:
- ``selected(label, metric="test_error")``: the value at the suite's selected epoch (``select``:
  final, best_val or best_test). ``final`` is its old name, kept only because databases registered
  before the rename store suite texts that use it; new suites write ``selected``.
- ``best(label, metric="test_error")``: the minimum over epochs
- ``std(label, metric="test_error")``: standard deviation over seeds at the selected epoch (a
  constant in the test: its own uncertainty is not propagated)
- ``last(label, metric="test_error")``: the value at the last epoch (final α, τ)
- ``epoch_reaching(label, metric, threshold)``: the first epoch where metric <= threshold
  (infinite when a seed never gets there)

Verdicts: every comparison ``L op R`` is a one-sided Welch test at 0.05 on ``d = L - R``, with the
seed samples of the cells it reads (arithmetic is linearised: the delta method), and Welch-
Satterthwaite degrees of freedom: *holds* when d's 95 % bound on the claimed side is past 0,
*fails* when the bound on the other side is (the data contradict the claim), *inconclusive*
otherwise. A margin is part of the claim's text: ``selected("a") < selected("b") - 0.3`` claims
"a beats b by more than 0.3"; ``>= selected("b") - max(0.3, 2 * std("b"))`` claims "a is at most
that much better". The claim table prints each comparison's difference with its 90 % CI.

String constants are only allowed as the label and metric arguments of result functions.

Lives beside ``benchmark.suite`` (it was ``benchmark.report.claims``): a suite's claims are part of
its meaning, so the parser validates them with this module and the reporter (``benchmark.report``)
evaluates them with it; the dependency points down. Metric names come from ``benchmark.vocabulary``.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from benchmark.errors import UserError
from benchmark.validation import did_you_mean, is_number
from benchmark.vocabulary import KNOWN_METRICS, TEST_ERROR, is_known_metric

__all__ = [
    "ClaimError",
    "ClaimPending",
    "ClaimResult",
    "Lookup",
    "RESULT_FUNCTIONS",
    "evaluate_claim",
    "validate_claim",
]


class ClaimError(UserError, ValueError):
    """A claim that cannot be parsed or refers to something that does not exist."""


class ClaimPending(Exception):
    """Raised by a lookup when a cell the claim needs has not finished."""


# name -> (parameter names, defaults for trailing parameters)
RESULT_FUNCTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "selected": (("label", "metric"), {"metric": TEST_ERROR}),
    "final": (("label", "metric"), {"metric": TEST_ERROR}),  # deprecated name of selected
    "best": (("label", "metric"), {"metric": TEST_ERROR}),
    "std": (("label", "metric"), {"metric": TEST_ERROR}),
    "last": (("label", "metric"), {"metric": TEST_ERROR}),
    "epoch_reaching": (("label", "metric", "threshold"), {}),
}
MATH_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}

_COMPARE = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class Lookup(Protocol):
    """What a claim reads: per-seed values of a cell (one per finished job, in job order), or the
    spread over seeds for ``std``. Each method raises ClaimPending when the cell is not finished.
    A lookup may return a plain number instead of a sample: it is then a value without spread."""

    def selected(self, label: str, metric: str) -> np.ndarray: ...
    def best(self, label: str, metric: str) -> np.ndarray: ...
    def std(self, label: str, metric: str) -> float: ...
    def last(self, label: str, metric: str) -> np.ndarray: ...
    def epoch_reaching(self, label: str, metric: str, threshold: float) -> np.ndarray: ...


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
    close = did_you_mean(name, choices)
    return f" ({close})" if close else ""


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
    if is_known_metric(metric):
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
        if not is_number(node.value):
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
# Evaluation: every comparison is a one-sided Welch test on the seed samples


@dataclass(frozen=True)
class _Est:
    """A number computed from seed samples: its value and, per cell, each seed's linearised
    contribution (delta method), so that Var(value) ~ sum over cells of var(z) / n."""

    value: float
    terms: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def of(label: str, sample: Any) -> "_Est":
        if np.ndim(sample) == 0:  # a lookup that knows one number only: no spread
            return _Est(float(sample))
        x = np.asarray(sample, dtype=float)
        return _Est(float(np.mean(x)) if len(x) else math.nan, {label: x})


def _combine(value: float, *parts: tuple[float, _Est]) -> _Est:
    """``value`` with the terms of sum(coef * est): the linearisation of an arithmetic step."""
    terms: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for coef, e in parts:
            for label, z in e.terms.items():
                terms[label] = terms[label] + coef * z if label in terms else coef * z
    return _Est(value, terms)


@dataclass(frozen=True)
class ClaimTest:
    """One comparison of a claim: the difference left - right, its 90 % CI and its verdict."""

    text: str
    diff: float
    low: float
    high: float
    df: float
    verdict: str  # holds | fails | inconclusive
    note: str = ""


@dataclass
class ClaimResult:
    verdict: str  # "holds" | "fails" | "inconclusive" | "pending" | "plumbing"
    value: Any = None  # the boolean the expression gives on the seed means (None when pending)
    numbers: dict[str, float] = field(default_factory=dict)  # call text -> value (mean over seeds)
    reason: str = ""  # why pending / why it could not be decided
    tests: list[ClaimTest] = field(default_factory=list)


class _NaNOperand(Exception):
    """A comparison met NaN: the claim fails, however the comparison is negated or combined."""


_FLIP = {"holds": "fails", "fails": "holds", "inconclusive": "inconclusive"}


def _and(verdicts: list[str]) -> str:  # Kleene's three-valued logic
    return "fails" if "fails" in verdicts else "inconclusive" if "inconclusive" in verdicts else "holds"


def _or(verdicts: list[str]) -> str:
    return "holds" if "holds" in verdicts else "inconclusive" if "inconclusive" in verdicts else "fails"


def _test(op: type, left: _Est, right: _Est, text: str) -> ClaimTest:
    """left op right as a one-sided Welch test at ALPHA on d = left - right.

    ``<``/``<=`` holds when the 95 % upper bound of d is below 0 and fails when the lower bound is
    above 0 (``>`` mirrored); ``==`` can only fail (a significant difference), ``!=`` only hold.
    Without spread (constants, a lookup of plain numbers, a seed that never reaches a threshold)
    the comparison is decided on the values."""
    from benchmark.report.stats import ALPHA, t_quantile, welch_df  # scipy: only when a claim is tested

    d = _combine(left.value - right.value, (1.0, left), (-1.0, right))
    point = _COMPARE[op](left.value, right.value)
    exact = "holds" if point else "fails"
    if not math.isfinite(d.value) or not d.terms:
        note = "decided on the values (no seed spread)" if math.isfinite(d.value) else "an infinite value: decided without a test"
        return ClaimTest(text, d.value, d.value, d.value, math.inf, exact, note)
    small = [label for label, z in d.terms.items() if len(z) < 2]
    if small:
        return ClaimTest(text, d.value, -math.inf, math.inf, math.nan, "inconclusive",
                         f"needs ≥ 2 seeds of {', '.join(small)}")
    comps = [(float(np.var(z, ddof=1)) / len(z), len(z) - 1) for z in d.terms.values()]
    se = math.sqrt(sum(v for v, _ in comps))
    if se == 0:
        return ClaimTest(text, d.value, d.value, d.value, math.inf, exact, "no seed spread: decided on the values")
    df = welch_df(comps)
    t90 = t_quantile(1 - ALPHA, df)
    low, high = d.value - t90 * se, d.value + t90 * se
    if op in (ast.Lt, ast.LtE):
        verdict = "holds" if high < 0 else "fails" if low > 0 else "inconclusive"
    elif op in (ast.Gt, ast.GtE):
        verdict = "holds" if low > 0 else "fails" if high < 0 else "inconclusive"
    else:
        significant = abs(d.value) > t_quantile(1 - ALPHA / 2, df) * se
        verdict = ("fails" if significant else "inconclusive") if op is ast.Eq else ("holds" if significant else "inconclusive")
    return ClaimTest(text, d.value, low, high, df, verdict)


def _num(node: ast.AST, lookup: Lookup, numbers: dict[str, float], src: str) -> _Est:
    if isinstance(node, ast.Constant):
        return _Est(float(node.value))
    if isinstance(node, ast.UnaryOp):
        v = _num(node.operand, lookup, numbers, src)
        return v if isinstance(node.op, ast.UAdd) else _combine(-v.value, (-1.0, v))
    if isinstance(node, ast.BinOp):
        a, b = _num(node.left, lookup, numbers, src), _num(node.right, lookup, numbers, src)
        with np.errstate(all="ignore"):
            if isinstance(node.op, ast.Add):
                return _combine(a.value + b.value, (1.0, a), (1.0, b))
            if isinstance(node.op, ast.Sub):
                return _combine(a.value - b.value, (1.0, a), (-1.0, b))
            if isinstance(node.op, ast.Mult):
                return _combine(a.value * b.value, (b.value, a), (a.value, b))
            if b.value == 0:
                return _Est(math.nan)
            return _combine(a.value / b.value, (1 / b.value, a), (-a.value / b.value**2, b))
    if isinstance(node, ast.Call):
        name = node.func.id  # type: ignore[attr-defined]
        if name in MATH_FUNCTIONS:
            vals = [_num(a, lookup, numbers, src) for a in node.args]
            if any(math.isnan(v.value) for v in vals):
                return _Est(math.nan)  # max(0.3, nan) is 0.3 in Python: a NaN must not vanish
            if name == "abs":
                return _combine(abs(vals[0].value), (1.0 if vals[0].value >= 0 else -1.0, vals[0]))
            pick = min if name == "min" else max
            return pick(vals, key=lambda v: v.value)  # the chosen operand's spread goes with it
        bound = _bind(node, name)
        params, defaults = RESULT_FUNCTIONS[name]
        args = []
        for p in params:
            if p not in bound:
                args.append(defaults[p])
            elif p == "threshold":
                args.append(_num(bound[p], lookup, numbers, src).value)
            else:
                args.append(bound[p].value)  # type: ignore[attr-defined]
        method = "selected" if name == "final" else name  # final: the old name of selected
        sample = getattr(lookup, method)(*args)
        est = _Est(float(sample)) if name == "std" else _Est.of(args[0], sample)
        numbers[ast.get_source_segment(src, node) or ast.unparse(node)] = est.value
        return est
    raise ClaimError(f"syntax not allowed in a claim: {ast.unparse(node)!r}")  # validated before


def _bool(node: ast.AST, lookup: Lookup, numbers: dict[str, float], src: str,
          tests: list[ClaimTest]) -> tuple[str, bool]:
    """(verdict, the boolean on the values) of a boolean node."""
    if isinstance(node, ast.BoolOp):
        # Evaluate every operand (no short-circuit) so that all numbers are reported.
        parts = [_bool(v, lookup, numbers, src, tests) for v in node.values]
        if isinstance(node.op, ast.And):
            return _and([v for v, _ in parts]), all(b for _, b in parts)
        return _or([v for v, _ in parts]), any(b for _, b in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        v, b = _bool(node.operand, lookup, numbers, src, tests)
        return _FLIP[v], not b
    assert isinstance(node, ast.Compare)  # the grammar was validated
    vals = [_num(v, lookup, numbers, src) for v in [node.left, *node.comparators]]
    if any(math.isnan(v.value) for v in vals):
        # Decided here, not by Python's NaN semantics: `not (nan < 5)` and `nan != 5` are True.
        raise _NaNOperand(ast.get_source_segment(src, node) or ast.unparse(node))
    sides = [node.left, *node.comparators]
    verdicts, point = [], True
    for op, a, b, na, nb in zip(node.ops, vals, vals[1:], sides, sides[1:]):
        text = f"{ast.get_source_segment(src, na) or ast.unparse(na)} {_OP_TEXT[type(op)]} " \
               f"{ast.get_source_segment(src, nb) or ast.unparse(nb)}"
        t = _test(type(op), a, b, text)
        tests.append(t)
        verdicts.append(t.verdict)
        point = point and _COMPARE[type(op)](a.value, b.value)
    return _and(verdicts), point


_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


def evaluate_claim(expr: str, lookup: Lookup, labels: Iterable[str] | None = None) -> ClaimResult:
    """Evaluate a validated claim: holds, fails or inconclusive; pending when a cell it needs is
    unfinished.

    Each comparison is a one-sided Welch test on the seed samples (``_test``); ``and``, ``or`` and
    ``not`` combine the verdicts in three-valued logic (an ``and`` of tests at 0.05 is a test at
    0.05, the intersection-union principle; an ``or`` is not corrected for multiplicity). A NaN
    operand (a diverged run, a division by zero) in any comparison makes the claim fail, whatever
    surrounds it (``not``, ``!=``, ``or``).
    """
    tree = _parse(expr)
    _walk(tree.body, set(labels) if labels is not None else None, boolean=True)
    numbers: dict[str, float] = {}
    tests: list[ClaimTest] = []
    try:
        verdict, value = _bool(tree.body, lookup, numbers, expr.strip(), tests)
    except ClaimPending as e:
        return ClaimResult("pending", None, numbers, str(e))
    except _NaNOperand as e:
        return ClaimResult("fails", False, numbers, f"not a number in {e}", tests)
    return ClaimResult(verdict, value, numbers, "", tests)
