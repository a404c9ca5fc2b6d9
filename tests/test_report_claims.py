"""The claim language: what it accepts, what it refuses (and how it says so), how it evaluates."""
from __future__ import annotations

import math

import pytest

from benchmark.claims import ClaimError, ClaimPending, evaluate_claim, validate_claim

LABELS = ["plain-20", "plain-56", "resnet-20", "resnet-56", "resnet-110", "tau-resnet-110",
          "tau-resnet-110-nobn", "rezero-56"]

SUITE_EXAMPLES = [
    'final("plain-56", "train_error") > final("plain-20", "train_error")',
    'final("resnet-56") < final("resnet-20")',
    'final("tau-resnet-110") < final("resnet-110")',
    'final("tau-resnet-110-nobn") < 20',
    'epoch_reaching("rezero-56", "test_error", 15) < epoch_reaching("resnet-56", "test_error", 15)',
    'abs(final("resnet-20") - best("resnet-20")) <= 2 * std("resnet-20") + 0.5',
    'not (final("plain-56") < final("plain-20")) and last("rezero-56", "alpha.stage3.block2") > -8',
    '0 < final("resnet-56") <= max(final("resnet-20"), 10) or min(1, 2) == 1',
    'epoch_reaching("rezero-56", metric="test_error", threshold=100 - 85) < 10',
]


@pytest.mark.parametrize("expr", SUITE_EXAMPLES)
def test_valid_claims(expr):
    validate_claim(expr, LABELS)


@pytest.mark.parametrize(
    "expr, message",
    [
        ('finale("resnet-20") < 5', "unknown function 'finale' (did you mean 'final'?)"),
        ('final("resnet-21") < 5', "unknown label 'resnet-21' (did you mean 'resnet-20'?)"),
        ('final("resnet-20", "test_eror") < 5', "unknown metric 'test_eror' (did you mean 'test_error'?)"),
        ('__import__("os").system("true")', "a claim must be a comparison"),
        ('__import__("os") == 1', "unknown function '__import__'"),
        ('final("resnet-20").real < 1', "syntax not allowed"),
        ('(lambda: 1)() < 2', "only plain function calls"),
        ('[1][0] < 2', "syntax not allowed"),
        ('final("resnet-20") ** 2 < 2', "operator Pow is not allowed"),
        ('"resnet-20" < "resnet-56"', "is not a number"),
        ('final("resnet-20")', "a claim must be a comparison"),
        ('final("resnet-20") in (1, 2)', "only <, <=, >, >=, ==, != comparisons"),
        ('final(label) < 2', "label must be a string constant"),
        ('epoch_reaching("resnet-20", "test_error") < 2', "missing argument(s): threshold"),
        ('final("resnet-20", "test_error", 3) < 2', "takes at most 2 arguments"),
        ('final("resnet-20", bogus=1) < 2', "has no argument 'bogus'"),
        ('final("resnet-20") < ', "cannot parse claim"),
        ('', "empty claim"),
        ('True == final("resnet-20")', "is not a number"),
    ],
)
def test_invalid_claims_name_the_problem(expr, message):
    with pytest.raises(ClaimError) as e:
        validate_claim(expr, LABELS)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)


class FakeLookup:
    """label -> {metric: value}; labels in ``pending`` raise ClaimPending."""

    def __init__(self, values, pending=()):
        self.values, self.pending, self.calls = values, set(pending), []

    def _get(self, fn, label, metric, *extra):
        self.calls.append((fn, label, metric, *extra))
        if label in self.pending:
            raise ClaimPending(f"{label}: running")
        return self.values[label][(fn, metric)]

    def selected(self, label, metric):
        return self._get("final", label, metric)

    def best(self, label, metric):
        return self._get("best", label, metric)

    def std(self, label, metric):
        return self._get("std", label, metric)

    def last(self, label, metric):
        return self._get("last", label, metric)

    def epoch_reaching(self, label, metric, threshold):
        return self._get("epoch_reaching", label, metric, threshold)


def test_evaluate_holds_fails_and_numbers():
    lk = FakeLookup({"plain-20": {("final", "train_error"): 3.0}, "plain-56": {("final", "train_error"): 6.5}})
    expr = 'final("plain-56", "train_error") > final("plain-20", "train_error")'
    r = evaluate_claim(expr, lk, LABELS)
    assert r.verdict == "holds" and r.value is True
    assert r.numbers == {'final("plain-56", "train_error")': 6.5, 'final("plain-20", "train_error")': 3.0}
    r = evaluate_claim(expr.replace(">", "<"), lk, LABELS)
    assert r.verdict == "fails" and r.value is False


def test_default_metric_and_chained_comparison():
    lk = FakeLookup({"resnet-20": {("final", "test_error"): 8.5}})
    assert evaluate_claim('8 < final("resnet-20") < 9', lk).verdict == "holds"
    assert evaluate_claim('8 < final("resnet-20") < 8.4', lk).verdict == "fails"
    assert lk.calls[0] == ("final", "resnet-20", "test_error")


def test_keywords_threshold_expression_and_arithmetic():
    lk = FakeLookup({"rezero-56": {("epoch_reaching", "test_error"): 12.0},
                     "resnet-56": {("epoch_reaching", "test_error"): 18.0}})
    expr = ('epoch_reaching("rezero-56", metric="test_error", threshold=100 - 85) '
            '<= 0.68 * epoch_reaching("resnet-56", "test_error", 15)')
    assert evaluate_claim(expr, lk).verdict == "holds"
    assert ("epoch_reaching", "rezero-56", "test_error", 15.0) in lk.calls


def test_pending_when_a_cell_is_unfinished():
    lk = FakeLookup({"resnet-20": {("final", "test_error"): 8.0}}, pending={"resnet-56"})
    r = evaluate_claim('final("resnet-56") < final("resnet-20")', lk)
    assert r.verdict == "pending" and r.value is None and "resnet-56" in r.reason


def test_nan_and_division_by_zero_fail_rather_than_hold():
    lk = FakeLookup({"plain-56": {("final", "test_error"): math.nan}, "resnet-20": {("std", "test_error"): 0.0}})
    assert evaluate_claim('final("plain-56") > 60', lk).verdict == "fails"
    assert evaluate_claim('final("plain-56") <= 60', lk).verdict == "fails"
    assert evaluate_claim('1 / std("resnet-20") > 0', lk).verdict == "fails"
    # Negation, inequality, min/max and `or` must not turn a NaN into "holds".
    for expr in ('not (final("plain-56") < 5)', 'final("plain-56") != 5', 'max(0.3, final("plain-56")) < 1',
                 'final("plain-56") > 60 or not (final("plain-56") > 60)'):
        assert evaluate_claim(expr, lk).verdict == "fails", expr


def test_never_reaching_is_infinite():
    lk = FakeLookup({"a": {("epoch_reaching", "test_error"): math.inf}, "b": {("epoch_reaching", "test_error"): 30.0}})
    assert evaluate_claim('epoch_reaching("b", "test_error", 15) < epoch_reaching("a", "test_error", 15)', lk).verdict == "holds"
    assert evaluate_claim('epoch_reaching("a", "test_error", 15) < epoch_reaching("b", "test_error", 15)', lk).verdict == "fails"


def test_evaluate_never_executes_python():
    with pytest.raises(ClaimError):
        evaluate_claim('__import__("os").getcwd() == 1', FakeLookup({}))
