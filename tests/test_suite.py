"""Suite files: expansion, merging and the errors a user sees for a bad file."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.config import RuntimeConfig
from benchmark.suite import SuiteError, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
[suite]
name = "t"
seeds = [0, 1]
[defaults.data]
dataset = "synthetic"
[defaults.schedule]
unit = "epoch"
length = 2
milestones = [1]
[[entry]]
label = "{model.shortcut}-{depth}"
grid = { model.depth = [8, 14, 20], model.shortcut = ["A", "none"] }
"""


def parse(text: str) -> object:
    return parse_suite(textwrap.dedent(text), "suites/test.toml")


def problems_of(text: str) -> str:
    with pytest.raises(SuiteError) as e:
        parse(text)
    return str(e.value)


def test_grid_expands_every_combination_times_seeds():
    suite = parse(MINIMAL)
    assert len(suite.jobs) == 3 * 2 * 2
    assert set(suite.labels) == {f"{s}-{d}" for s in ("A", "none") for d in (8, 14, 20)}
    assert {j.seed for j in suite.jobs} == {0, 1}
    assert len({j.key for j in suite.jobs}) == len(suite.jobs)
    # seeds share a cell
    by_label = {}
    for j in suite.jobs:
        by_label.setdefault(j.label, set()).add(j.spec.cell_key)
    assert all(len(cells) == 1 for cells in by_label.values())


def test_keys_are_equal_across_parses():
    assert [j.key for j in parse(MINIMAL).jobs] == [j.key for j in parse(MINIMAL).jobs]


def test_merge_order_defaults_entry_grid():
    suite = parse("""
        [suite]
        name = "t"
        [defaults.optim]
        lr = 0.05
        batch_size = 64
        [defaults.schedule]
        unit = "epoch"
        length = 3
        milestones = [2]
        [[entry]]
        label = "x-{lr}"
        optim = { lr = 0.2 }
        grid = { optim.lr = [0.3, 0.4] }
    """)
    assert sorted(j.spec.optim.lr for j in suite.jobs) == [0.3, 0.4]
    assert {j.spec.optim.batch_size for j in suite.jobs} == {64}


def test_num_classes_follows_dataset_and_tau_rule_resolves():
    suite = parse("""
        [suite]
        name = "t"
        [defaults.data]
        dataset = "cifar100"
        [[entry]]
        label = "tau-{depth}"
        model = { depth = 110, residual_scale = "tau", tau = "1/sqrt(L)" }
    """)
    model = suite.jobs[0].spec.model
    assert model.num_classes == 100
    assert math.isclose(model.tau, 1 / math.sqrt(54))  # tau-ResNet README: L = 54 for ResNet-110


def test_preset_is_a_base_that_explicit_keys_override():
    suite = parse("""
        [suite]
        name = "t"
        [defaults.data]
        dataset = "cifar100"
        [[entry]]
        label = "rezero-18"
        model = { preset = "preact_resnet18", residual_scale = "rezero" }
    """)
    m = suite.jobs[0].spec.model
    assert m.widths == (64, 128, 256, 512) and m.order == "pre" and m.residual_scale == "rezero"


@pytest.mark.parametrize(
    "fragment, expected",
    [
        ('model = { shortcutt = "A" }', "did you mean 'shortcut'"),
        ('model = { shortcut = "C" }', "expected one of 'A', 'B', 'none'"),
        ('model = { depth = 21 }', "6n+2"),
        ('model = { depth = "20" }', "expected an integer"),
        ('optim = { lr = true }', "expected a finite number"),
        ('data = { mean = [0.5, 0.5] }', "3 values"),
        ('schedule = { milestones = [9] }', "milestones"),
        ('model = { preset = "resnet21" }', "resnet20"),
        ('modle = { depth = 20 }', "did you mean 'model'"),
    ],
)
def test_bad_values_name_file_key_and_what_is_allowed(fragment, expected):
    text = f"""
[suite]
name = "t"
[defaults.schedule]
unit = "epoch"
length = 2
milestones = [1]
[[entry]]
label = "x-{{depth}}"
{fragment}
"""
    message = problems_of(text)
    assert "suites/test.toml" in message and "entry[0]" in message
    assert expected in message


def test_every_problem_is_reported_at_once():
    message = problems_of("""
        [suite]
        name = "t"
        tolerence = 1
        [[entry]]
        label = "a"
        model = { shortcut = "C", block = "wide" }
    """)
    assert "did you mean 'tolerance'" in message
    assert "'C'" in message and "'wide'" in message


def test_label_collision_is_an_error():
    message = problems_of("""
        [suite]
        name = "t"
        [[entry]]
        label = "same"
        grid = { model.depth = [8, 14] }
    """)
    assert "label 'same'" in message


def test_invalid_toml_and_missing_file():
    assert "not valid TOML" in problems_of("[suite\nname=1")
    with pytest.raises(SuiteError, match="file not found"):
        load_suite("suites/does-not-exist.toml")


def test_published_label_must_exist():
    message = problems_of("""
        [suite]
        name = "t"
        [[entry]]
        label = "resnet-{depth}"
        [[published]]
        label = "resnet-2O"
        value = 8.75
        source = "He 2016 Table 6"
        kind = "single"
    """)
    assert "did you mean 'resnet-20'" in message


def test_cli_validate_reports_counts_and_errors_without_traceback(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(ROOT / "suites" / "smoke.toml")])
    assert ok.exit_code == 0, ok.output
    assert "8 jobs" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[suite]\nname = "b"\n[[entry]]\nlabel = "x"\nmodel = { order = "sideways" }\n')
    result = runner.invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "sideways" in result.output
    assert "Traceback" not in result.output


def test_smoke_suite_shape():
    suite = load_suite(ROOT / "suites" / "smoke.toml")
    assert set(suite.labels) == {"plain-8", "plain-14", "resnet-8", "resnet-14"}
    assert {j.seed for j in suite.jobs} == {0, 1}
    assert all(j.spec.data.dataset == "synthetic" for j in suite.jobs)
    # the runtime its expected values were made with: changing it means regenerating them
    assert {j.spec.runtime for j in suite.jobs} == {RuntimeConfig(channels_last=True, precision="bf16")}


def test_epoch_selections_come_from_one_place():
    """The [suite] select rule, the Suite field and `bench report/check --select` offer the same choices."""
    import typing

    from benchmark.report.cli import check, report
    from benchmark.suite_types import Suite
    from benchmark.vocabulary import SELECTIONS

    assert typing.get_args(typing.get_type_hints(Suite)["select"]) == SELECTIONS == ("final", "best_val", "best_test")
    for command in (report, check):
        option = next(p for p in command.params if p.name == "select")
        assert tuple(option.type.choices) == SELECTIONS
    with pytest.raises(SuiteError, match="expected one of 'final', 'best_val', 'best_test'"):
        parse_suite(MINIMAL.replace('name = "t"', 'name = "t"\nselect = "best"'), "t.toml")
