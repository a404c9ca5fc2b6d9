"""benchmark.validation: the one converter, rule form and "did you mean" of suites and profiles."""
from __future__ import annotations

from dataclasses import fields

import pytest

from benchmark.config import OptimConfig, ScheduleConfig
from benchmark.runner.profile import RunnerProfile, SlurmOptions
from benchmark.suite_types import Published
from benchmark.validation import convert, did_you_mean, field_hints, is_int


@pytest.mark.parametrize("cls", [OptimConfig, ScheduleConfig, Published, RunnerProfile, SlurmOptions])
def test_every_rule_names_a_field(cls: type) -> None:
    names = {f.name for f in fields(cls)}
    assert set(cls.RULES) <= names  # a misspelt rule would silently check nothing
    assert list(field_hints(cls)) == [f.name for f in fields(cls)]  # RULES itself is no settable key


def test_helpers() -> None:
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert did_you_mean("resnet21", ["resnet20", "plain20"]) == "did you mean 'resnet20'?"
    assert did_you_mean("zzz", ["resnet20"]) == ""
    assert convert([1, 2], tuple[float, ...]) == (True, (1.0, 2.0), "")
    assert convert(True, int) == (False, True, "an integer")
    table = field_hints(SlurmOptions)["extra"]  # Mapping[str, Any]: extra sbatch options
    assert convert({"a": 1}, table)[0] and not convert(3, table)[0]
