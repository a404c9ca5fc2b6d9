"""Careless and hostile input: every mistake ends in one clear message (exit 2, no traceback),
nothing in a file bench reads runs code, text leaving bench is escaped, and exit codes mean what
scripts expect. The fuzz tests (hypothesis) check the same properties on random input."""
from __future__ import annotations

import io
import math
import pickle
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from benchmark import checkpoint
from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.escaping import spreadsheet_cell, spreadsheet_safe
from benchmark.runner.status import status_table
from benchmark.store import Store, StoreError
from benchmark.suite import MAX_JOBS, SuiteError, parse_suite
from conftest import ROOT

BASE = """
[suite]
name = "h"
{head}
[defaults.data]
dataset = "synthetic"
synthetic_train = 64
synthetic_test = 32
[defaults.schedule]
unit = "epoch"
length = 1
milestones = [1]
[[entry]]
label = {label}
{entry}
{tail}
"""


def suite_text(head: str = "", label: str = '"plain-{depth}"', entry: str = "", tail: str = "") -> str:
    return BASE.format(head=head, label=label, entry=entry, tail=tail)


def bench(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result


# ----------------------------------------------------------------------------------------------
# Nothing executable


def test_label_templates_name_fields_only(tmp_path):
    for template in ('"{model.__class__.__init__.__globals__}"', '"{depth.__class__}"', '"{widths[0]}"',
                     '"{depth:>{lr}}"', '"{depth!r}"', '"{"', '"}"'):
        with pytest.raises(SuiteError, match="label"):
            parse_suite(suite_text(label=template), "x.toml")
    jobs = parse_suite(suite_text(label='"{{x}}-{model.shortcut}-{depth}"'), "x.toml").jobs
    assert jobs[0].label == "{x}-A-20"


def test_no_file_bench_reads_runs_a_planted_pickle(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import torch

    from benchmark.data.cifar import DataError, _load_pickle

    torch.save({"version": 2, "owner": None, "history": [Payload()]}, tmp_path / "c.pt")
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.read(tmp_path / "c.pt")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(DataError):
        _load_pickle(tmp_path / "data_batch_1", "cifar10", tmp_path)
    assert not marker.exists()  # (suite and profile files are TOML, stored configs JSON: data only)


# ----------------------------------------------------------------------------------------------
# Accepted though wrong: now refused by `bench validate`, naming the key


@pytest.mark.parametrize("fragment,where,expected", [
    ("optim = { lr = nan }", "optim.lr", "finite"),
    ("optim = { lr = inf }", "optim.lr", "finite"),
    ("schedule = { gamma = -0.1 }", "schedule.gamma", "> 0"),
    ("optim = { momentum = -0.9 }", "optim.momentum", "[0, 1)"),
    ("optim = { weight_decay = -1e-4 }", "optim.weight_decay", ">= 0"),
    ("grid = { model.depth = [8, 14, 20, 26, 32, 38, 44, 50, 56, 62] }\nseeds = 2000", "grid", "at most"),
])
def test_bad_protocol_values_are_refused(fragment, where, expected):
    with pytest.raises(SuiteError) as e:
        parse_suite(suite_text(entry=fragment), "x.toml")
    assert where in str(e.value) and expected in str(e.value)


@pytest.mark.parametrize("head,tail,where", [
    ("tolerance = nan", "", "suite.tolerance"),
    ("tolerance = -1", "", "suite.tolerance"),
    ('select = "best_val"', "", "suite.select"),
    ("", '[[published]]\nlabel = "plain-20"\nvalue = nan\nsource = "s"', "published[0].value"),
    ("", '[[published]]\nlabel = "plain-20"\nvalue = 7.0\nruns = 0\nsource = "s"', "published[0].runs"),
    ("", '[[published]]\nlabel = "plain-20"\nvalue = 7.0\nstd = -1.0\nsource = "s"', "published[0].std"),
    ("", '[[published]]\nlabel = "plain-20"\nvalue = 7.0\nmetric = "test_eror"\nsource = "s"', "published[0].metric"),
    ("", '[[claim]]\nname = "c"\ntext = "t"\nexpr = ""', "claim[0].expr"),
    ("", '[[claim]]\nname = "c"\ntext = "t"\nexpr = "' + "(" * 500 + "1" + ")" * 500 + '"', "claim[0].expr"),
    ("", '[[claim]]\nname = "c"\ntext = "t"\nexpr = "' + " + ".join(["1"] * 2000) + '"', "claim[0].expr"),
    ('title = "a\\u0000b"', "", "title"),
])
def test_bad_suite_values_are_refused(head, tail, where):
    with pytest.raises(SuiteError) as e:
        parse_suite(suite_text(head=head, tail=tail), "x.toml")
    assert where in str(e.value)


def test_a_huge_grid_is_refused_with_its_count_at_once():
    grid = "grid = { " + ", ".join(f"optim.{k} = [{', '.join(str(i / 100) for i in range(1, 33))}]"
                                   for k in ("lr", "momentum", "weight_decay", "scalar_lr_scale")) + " }"
    t0 = time.perf_counter()
    with pytest.raises(SuiteError, match=f"expands to {32 ** 4} jobs .* at most {MAX_JOBS}"):
        parse_suite(suite_text(entry=grid), "x.toml")
    assert time.perf_counter() - t0 < 5


def test_labels_the_database_cannot_hold_are_refused_at_validate():
    with pytest.raises(SuiteError, match="1 to 200 characters"):
        parse_suite(suite_text(label='"' + "x" * 201 + '"'), "x.toml")
    with pytest.raises(SuiteError, match="suite.name"):
        parse_suite(suite_text().replace('name = "h"', f'name = "{"n" * 300}"'), "x.toml")


def test_validate_of_a_device_file_or_binary_is_a_message(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    for path in ("/dev/null", str(tmp_path / "bin.toml"), str(tmp_path)):
        result = bench("validate", path)
        assert result.exit_code == 2, (path, result.output)


# ----------------------------------------------------------------------------------------------
# URLs and read-only commands


@pytest.mark.parametrize("url,expected", [
    ("sqlite://", "not a SQLite file"),
    ("sqlite:///:memory:", "not a SQLite file"),
    ("sqlite:///x.sqlite?mode=ro", "URL options"),
    ("mysql://u@h/db", "SQLite or PostgreSQL"),
    ("::not a url::", "not a database URL"),
    ("postgresql+nosuchdriver://u@h/db", "PostgreSQL driver"),
])
def test_unusable_urls_are_refused_up_front(url, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bench("status", "--db", url)
    assert result.exit_code == 2 and expected in result.output, result.output
    with pytest.raises(StoreError, match=re.escape(expected)):
        Store(url)


@pytest.mark.parametrize("command", [["status"], ["report", "x"], ["check", "x"], ["export", "--format", "csv"],
                                     ["show", "1"], ["retry", "x"], ["prune", "x"]])
def test_read_only_commands_never_create_a_database(command, tmp_path):
    db = tmp_path / "none.sqlite"
    result = bench(*command, "--db", f"sqlite:///{db}")
    assert result.exit_code == 2 and "no bench database" in result.output, result.output
    assert not db.exists()


def test_status_of_an_unknown_suite_names_the_registered_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    with Store(url) as s:
        s.register_suite(parse_suite(suite_text(), "x.toml"))
    result = bench("status", "--db", url, "--suite", "nosuch")
    assert result.exit_code == 2 and "no suite named 'nosuch'" in result.output and "registered: h" in result.output


# ----------------------------------------------------------------------------------------------
# Suites own their names


def test_a_different_suite_under_a_registered_name_is_refused_then_replaced_with_orphans(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    one = tmp_path / "one.toml"
    one.write_text(suite_text(entry="grid = { model.depth = [8, 14] }"))
    two = tmp_path / "two.toml"
    two.write_text(suite_text(entry="grid = { model.depth = [8, 20] }"))
    with Store(url) as s:
        s.register_suite(parse_suite(one.read_text(), str(one)))
        s.register_suite(parse_suite(one.read_text() + "\n# a comment\n", str(one)))  # same jobs: fine
        with pytest.raises(UserError, match="not registered yet: plain-20.*no longer has: plain-14.*--replace"):
            s.register_suite(parse_suite(two.read_text(), str(two)))
        assert s.register_suite(parse_suite(two.read_text(), str(two)), replace=True) == (1, 1)
        assert s.claim_job("w:1", "cpu", job_id=2) is None  # plain-14 is an orphan: never trained
        assert [r[1] for r in s.prune_orphans("h", dry_run=True)] == ["plain-14"]
        counts = {x["name"]: x["jobs"] for x in s.suites()}
        assert counts == {"h": 2}
    result = bench("prune", "h", "--db", url)
    assert result.exit_code == 0 and "plain-14" in result.output and "--yes" in result.output
    assert "deleted 1" in bench("prune", "h", "--db", url, "--yes").output
    with Store(url) as s:
        assert sorted(s.jobs_frame().label) == ["plain-20", "plain-8"]


# ----------------------------------------------------------------------------------------------
# Escaping where text leaves bench


@pytest.mark.parametrize("cell", ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1",
                                  '=HYPERLINK("http://x")'])
def test_spreadsheet_formulas_are_neutralised(cell):
    assert spreadsheet_cell(cell) == "'" + cell
    assert spreadsheet_cell(-2.5) == -2.5 and spreadsheet_cell("plain-20") == "plain-20"


def test_csv_export_of_a_formula_label_is_text(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"label": pd.Categorical(["=SUM(1)", "ok"]), "value": [-1.0, 2.0]})
    out = spreadsheet_safe(frame)
    assert out.label.tolist() == ["'=SUM(1)", "ok"] and out.value.tolist() == [-1.0, 2.0]


def test_rich_markup_in_labels_is_shown_as_text():
    import pandas as pd

    frame = pd.DataFrame([dict(suite="[bold]s", label="[red]x[/red] [/]", seed=0, state="queued", epochs=2,
                               epochs_done=0, test_error=math.nan, eta_s=math.nan, attempts=0, worker=None,
                               device=None, orphaned_at=pd.NaT)])
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(status_table(frame))
    text = console.file.getvalue()
    assert "[red]x[/red] [/]" in text and "[bold]s" in text


# ----------------------------------------------------------------------------------------------
# Fuzz: a clear UserError or success, never another exception, never a hang

SHIPPED = sorted((ROOT / "suites").glob("*.toml"))


def _mutate(text: str, data) -> str:
    lines = text.splitlines()
    i = data.draw(st.integers(0, max(0, len(lines) - 1)))
    kind = data.draw(st.sampled_from(["value", "key", "drop", "dup", "unicode", "long"]))
    line = lines[i] if lines else ""
    if "=" in line and kind == "value":
        key = line.split("=", 1)[0]
        value = data.draw(st.sampled_from(["nan", "-1", "0", "1e308", "true", '"x"', "[]", "[1, \"a\"]", "{}",
                                           '"1/sqrt(L)"', "-inf", '"\\u0000"', "99999999999999999999"]))
        lines[i] = f"{key}= {value}"
    elif "=" in line and kind == "key":
        lines[i] = data.draw(st.sampled_from(["zz", "model.zz", "é", "grid"])) + " =" + line.split("=", 1)[1]
    elif kind == "drop" and lines:
        del lines[i]
    elif kind == "dup" and lines:
        lines.insert(i, line)
    elif kind == "unicode":
        lines.insert(i, 'label = "' + data.draw(st.text(max_size=20)).replace('"', "").replace("\\", "") + '"')
    else:
        lines.insert(i, f'title = "{"x" * 5000}"')
    return "\n".join(lines)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@given(data=st.data())
def test_fuzz_mutated_shipped_suites_parse_or_say_why(path, data):
    text = path.read_text()
    for _ in range(data.draw(st.integers(1, 3))):
        text = _mutate(text, data)
    try:
        parse_suite(text, str(path))
    except UserError:
        pass


@given(blob=st.binary(max_size=512), cut=st.integers(0, 4096))
def test_fuzz_random_and_truncated_files_through_every_reader(tmp_path_factory, blob, cut):
    from benchmark.data.cifar import DataError, _load_pickle

    folder = tmp_path_factory.mktemp("fuzz")
    real = pickle.dumps({b"data": b"\0" * 3072, b"labels": [1]})
    for content in (blob, real[:cut]):
        path = folder / "data_batch_1"
        path.write_bytes(content)
        try:
            _load_pickle(path, "cifar10", folder)
        except DataError:
            pass
        path.write_bytes(content)
        try:
            checkpoint.read(path)
        except checkpoint.CheckpointError:
            pass
        path.write_bytes(content)
        try:
            parse_suite(content.decode("utf-8", "replace"), "f.toml")
        except UserError:
            pass


@given(text=st.text(max_size=200))
def test_fuzz_strings_through_every_escaper(text):
    from benchmark.report.render import _h, md_escape, tex_escape

    for escape in (md_escape, tex_escape, _h):
        out = escape(text)
        assert isinstance(out, str)
    assert "<" not in _h(text) and "|" not in md_escape(text).replace("\\|", "")


def test_suite_text_is_escaped_in_html_latex_and_markdown():
    from benchmark.report.aggregate import summarize
    from benchmark.report.render import render_html, render_latex, render_markdown

    evil = "<script>alert(1)</script>"
    text = suite_text(head=f'title = "{evil}"\nsource = "{evil}"', label=f'"{evil}-{{depth}}"',
                      tail=f'[[published]]\nlabel = "{evil}-20"\nvalue = 7.0\nsource = "{evil} & 50% $x$"')
    res = summarize(parse_suite(text, "x.toml"), None, None)
    html = render_html(res, [])
    assert html.count("<script") == 1 and "&lt;script&gt;" in html  # one script: the report's own sorter
    tex = render_latex(res)
    assert "<script>" not in tex and r"\textless{}script" in tex
    md = render_markdown(res, [], Path("."))
    assert "<script>" not in md


def test_unusable_checkpoint_and_lock_folders_are_messages(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(suite_text())
    blocked = tmp_path / "afile"
    blocked.write_text("x")
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    result = bench("run", str(suite), "--db", url, "--checkpoint-dir", str(blocked / "ckpt"))
    assert result.exit_code == 2 and "cannot create the folder" in result.output, result.output
    (tmp_path / "p.toml").write_text(f'[runner]\nlock_dir = "{blocked / "locks"}"\n')
    result = bench("run", str(suite), "--db", url, "--runner", str(tmp_path / "p.toml"))
    assert result.exit_code == 2 and "lock folder" in result.output, result.output
