"""Every output format from hand-made results; escaping; the HTML in headless Chromium."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.report.aggregate import summarize
from benchmark.report.api import write_reports
from benchmark.report.render import md_escape, render_markdown, tex_escape
from benchmark.report.style import VECTOR_FORMATS, FigureStyle
from benchmark.report.synthetic import fake_jobs, fake_metrics, make_suite
from benchmark.suite_types import Claim, Published

EVIL_TITLE = '<script>alert("x")</script> a | b & c_d *e* `f`'
EVIL_LABEL = "res|net<b>-20"


def evil_results():
    suite = make_suite(
        depths=(20,), seeds=(0, 1), epochs=6, title=EVIL_TITLE,
        published=[Published("resnet-20", 8.5, kind="best_of", runs=5, mean=8.7, std=0.2,
                             source="He <2016> | Table 6", note="a & b"),
                   Published("plain-20", 9.5, kind="chart_reading", approx=True, source="Fig. 6")],
        claims=[Claim("deg|<i>", "plain <worse> | really", 'final("plain-20") > final("resnet-20")')],
    )
    suite = replace(suite, description="line one\n| not a row |", protocol="pad 4 | flip <h>",
                    jobs=tuple(replace(j, label=EVIL_LABEL) if j.label == "plain-20" else j for j in suite.jobs),
                    published=tuple(replace(p, label=EVIL_LABEL) if p.label == "plain-20" else p
                                    for p in suite.published),
                    claims=(Claim("deg|<i>", "plain <worse> | really",
                                  f'final("{EVIL_LABEL}") > final("resnet-20")'),))
    jobs = fake_jobs(suite)
    jobs.loc[jobs.index[-1], "state"] = "running"  # resnet-20 seed 1 still running
    return summarize(suite, jobs, fake_metrics(suite, with_alpha=True))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    paths = write_reports([evil_results()], out, ["markdown", "html", "csv", "latex", "json"],
                          style=FigureStyle(vector=VECTOR_FORMATS))
    return out, paths


def test_every_format_is_written(written):
    out, paths = written
    names = {p.relative_to(out).as_posix() for p in paths}
    assert {"toy.md", "toy.html", "toy.csv", "toy.tex", "toy.json"} <= names
    assert {f"figures/toy-{name}.{ext}" for name in ("errors", "table", "scales") for ext in ("png", "svg", "pdf")} <= names
    for p in paths:
        assert p.stat().st_size > 0
    assert (out / "figures/toy-errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "figures/toy-errors.svg").read_text()


def test_markdown_escapes_and_links_figures(written):
    out, _ = written
    md = (out / "toy.md").read_text()
    assert "<script>" not in md and "<b>" not in md and "<i>" not in md
    assert "&lt;script&gt;" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header_cols = table[0].count(" | ")
    for line in table[:3]:  # comparison table: unescaped pipes would add columns
        assert len(re.findall(r"(?<!\\)\|", line)) == header_cols + 2, line
    assert "res\\|net&lt;b&gt;-20" in md
    assert "running" in md  # resnet-20 has a running seed: a state, not a number
    assert "![" in md and "(figures/toy-errors.png)" in md and "(figures/toy-errors.svg)" in md
    assert "[PDF](figures/toy-table.pdf)" in md
    assert "Reported epoch: final epoch" in md
    assert "≈ 9.5 (chart reading)" in md and "8.5 (best of 5; 8.7±0.2)" in md
    assert md_escape("a|b\nc") == "a\\|b c"


EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def test_html_escapes_and_is_self_contained(written):
    out, _ = written
    doc = (out / "toy.html").read_text()
    assert doc.count("<script") == 1  # ours, the sorter and the zoom; the suite's "<script>" is text
    assert "<b>-20" not in doc and "<i>" not in doc
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in doc
    assert not EXTERNAL.search(doc), EXTERNAL.search(doc)  # opens offline: nothing fetched
    assert "<!DOCTYPE svg" not in doc  # the SVG's external DTD is dropped with its prolog
    assert doc.count("<svg") == 3 and "<title>resnet-20, test error, epoch 6:" in doc  # tooltips
    assert "figures/" not in doc  # nothing linked: one file
    assert doc.count('<table id="comparison" class="sortable"') == 1 and doc.count('class="seeds"') == 3
    assert 'aria-sort="none"' in doc


def test_csv_json_latex(written):
    out, _ = written
    rows = list(csv.DictReader(io.StringIO((out / "toy.csv").read_text())))
    cells = [r for r in rows if r["row"] == "cell"]
    # best of 5 and, because the source prints it too, the mean ± std of 5: two rows for resnet-20
    assert [(r["label"], r["published_kind"]) for r in cells] == \
        [(EVIL_LABEL, "chart_reading"), ("resnet-20", "best_of"), ("resnet-20", "mean_std")]
    assert cells[1]["state"] == "running" and cells[1]["mean"] == ""
    # Per-seed rows under each cell: its 2 seeds, with values where the job is done.
    seeds = [r for r in rows if r["row"] == "seed" and r["label"] == EVIL_LABEL]
    assert [r["seed"] for r in seeds] == ["0", "1"] and all(float(r["value"]) > 0 for r in seeds)
    assert cells[0]["verdict"] in ("reproduces", "differs", "inconclusive") and float(cells[0]["low"]) < float(cells[0]["high"])
    assert [r["row"] for r in rows].count("claim") == 1
    doc = json.loads((out / "toy.json").read_text())
    assert doc["title"] == EVIL_TITLE and doc["select"] == "final"
    r0 = doc["rows"][0]
    assert r0["label"] == EVIL_LABEL and r0["state"] == "done" and r0["n"] == 2
    assert isinstance(r0["mean"], float) and r0["published"] == 9.5
    assert r0["verdict"] in ("reproduces", "differs", "inconclusive") and r0["low"] < r0["estimate"] < r0["high"]
    assert sum(s["value"] for s in r0["seeds"]) / 2 == pytest.approx(r0["mean"])
    assert doc["rows"][1]["mean"] is None and doc["rows"][1]["verdict"] == "pending"
    assert [s["state"] for s in doc["rows"][1]["seeds"]] == ["done", "running"]
    assert doc["claims"][0]["verdict"] == "pending"
    tex = (out / "toy.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}" in tex and "90" in tex
    assert r"res\textbar{}net\textless{}b\textgreater{}-20" in tex
    assert r"\label{tab:toy}" in tex and r"\caption{\textless{}script\textgreater{}alert" in tex
    assert tex_escape("50% & $x_1$ #2 {a} ~^\\") == \
        r"50\% \& \$x\_1\$ \#2 \{a\} \textasciitilde{}\textasciicircum{}\textbackslash{}"


def test_markdown_without_figures_has_no_curves_section():
    md = render_markdown(evil_results(), [], Path("."))
    assert "## Curves" not in md and "## Claims" in md


CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed "
                                    "(/usr/bin/chromium; apt-get install -y chromium)")


def in_chromium(doc: str, probe: str, tmp_path: Path) -> dict:
    """Open ``doc`` in headless Chromium, run ``probe`` (JavaScript: an expression whose value is
    JSON-able) once the page has loaded, and return that value. The probe is our script, added
    after the page's own; what it returns is read back from the DOM Chromium dumps."""
    page = tmp_path / "page.html"
    script = ("<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='probe';"
              f"p.textContent=JSON.stringify(({probe})());document.body.appendChild(p);}});</script>")
    page.write_text(doc.replace("</body>", script + "</body>"))
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, f"no probe output in the DOM Chromium dumped:\n{dom[:2000]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


@needs_chromium
def test_html_renders_in_headless_chromium(written, tmp_path):
    out, _ = written
    seen = in_chromium((out / "toy.html").read_text(), """() => ({
        svgs: document.querySelectorAll('figure.fig svg').length,
        drawn: [...document.querySelectorAll('figure.fig svg')].filter(x => x.getBBox().width > 100).length,
        tips: document.querySelectorAll('figure.fig svg .hover title').length,
        imgs: [...document.querySelectorAll('figure.fig image')].map(i => i.getBBox().width),
        tables: document.querySelectorAll('table:not(.seeds)').length,
        rows: document.querySelectorAll('#comparison > tbody > tr').length,
        scripts: document.scripts.length, title: document.title,
        h1: document.querySelector('h1').textContent})""", tmp_path)
    assert seen["tables"] == 2 and seen["rows"] == 3  # resnet-20 twice (best of 5, mean ± std) and one more cell
    assert seen["svgs"] == 3 and seen["drawn"] == 3  # error curves, the table as a figure, α / τ: drawn
    assert seen["tips"] > 10 and seen["imgs"] == []  # small figures: matplotlib's vector SVG, not the PNG
    assert seen["scripts"] == 2  # ours and the probe: the suite's "<script>" title stayed text
    assert seen["title"] == EVIL_TITLE and seen["h1"] == EVIL_TITLE


# ----------------------------------------------------------------------------------------------
# A database of five synthetic seeds per cell, as a user's: sorting, drill-down, provenance


SCRIPT_LABEL = "<script>window.__pwned=1</script>"
SCRIPT_TITLE = "<img src=x onerror=\"window.__pwned=2\"> Five seeds"


@pytest.fixture(scope="module")
def five_seeds(tmp_path_factory):
    from benchmark.report.api import build_tables
    from benchmark.report.synthetic import fake_curves
    from benchmark.store import Store
    from benchmark.store.environment import Provenance

    tmp = tmp_path_factory.mktemp("five")
    suite = make_suite(depths=(20, 56, 110), seeds=range(5), epochs=6, title=SCRIPT_TITLE,
                       published=[Published("resnet-56", 6.97, kind="single", source="He 2016, Table 6")])
    suite = replace(suite, jobs=tuple(replace(j, label=SCRIPT_LABEL) if j.label == "plain-110" else j
                                      for j in suite.jobs))
    logs = tmp / "logs"
    logs.mkdir()
    url = f"sqlite:///{tmp / 'results.sqlite'}"
    with Store(url) as store:
        store.register_suite(suite)
        jobs = store.jobs_frame([suite.name])
        for r in jobs.itertuples():
            (logs / f"job{r.job_id}-{r.key}.log").write_text(
                "".join(f"epoch {e} of job {r.job_id} <b>\n" for e in range(1, 31)))
        env = {"torch": "2.13.0", "cuda": "12.4", "gpu": "NVIDIA H200", "device": "cuda:0", "host": "node7",
               "git_commit": None}
        for r in jobs.itertuples():
            assert store.claim_job("w", "cuda:0", job_id=r.job_id) is not None
            store.set_environment(r.job_id, {**env, "log": str(logs / f"job{r.job_id}-{r.key}.log")},
                                  Provenance("0.3.0", "ab12cd34ef56ab12cd34", False))
            curves = fake_curves(r.label, r.seed, 6)
            for e in range(6):
                store.record_epoch(r.job_id, e + 1, {k: float(v[e]) for k, v in curves.items()})
            store.finish(r.job_id, "done")
        (res,) = build_tables(store, [suite])
    out = tmp / "reports"
    write_reports([res], out, ["html"])
    return res, (out / "toy.html").read_text()


def test_html_header_names_database_code_and_environment(five_seeds):
    res, doc = five_seeds
    assert "results.sqlite" in res.database
    header = doc[doc.index('<ul id="header">'):doc.index("</ul>")]
    assert "<b>database</b>: sqlite:///" in header and "results.sqlite" in header
    assert "<b>code</b>: 0.3.0+gab12cd34ef56</li>" in header
    assert "<b>environment</b>: torch 2.13.0, CUDA 12.4, NVIDIA H200 (cuda:0), host node7" in header
    assert doc.count("<script") == 1 and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in doc
    assert not EXTERNAL.search(doc)


@needs_chromium
def test_html_sorts_opens_seeds_and_keeps_script_labels_text(five_seeds, tmp_path):
    res, doc = five_seeds
    seen = in_chromium(doc, """() => {
        const t = document.getElementById('comparison');
        const labels = () => [...t.tBodies[0].rows].map(r => r.cells[0].getAttribute('data-sort'));
        const means = () => [...t.tBodies[0].rows].map(r => Number(r.cells[1].getAttribute('data-sort')));
        const th = t.tHead.rows[0].cells[1];
        const before = labels();
        th.querySelector('button').click();
        const asc = {labels: labels(), means: means(), sort: th.getAttribute('aria-sort')};
        th.querySelector('button').click();
        const desc = {labels: labels(), means: means(), sort: th.getAttribute('aria-sort')};
        const row = [...t.tBodies[0].rows].find(r => r.cells[0].getAttribute('data-sort') === 'resnet-56');
        const d = row.querySelector('details');
        const closed = d.querySelector('table.seeds').checkVisibility();
        d.querySelector('summary').click();
        const seeds = [...d.querySelectorAll('table.seeds > tbody > tr')].map(r => [...r.cells].map(c => c.textContent));
        const log = d.querySelector('pre.log').textContent;
        return {before, asc, desc, closed, open: d.open, seeds, log,
                shown: d.querySelector('table.seeds').checkVisibility(),
                pwned: window.__pwned === undefined ? null : window.__pwned, scripts: document.scripts.length,
                h1: document.querySelector('h1').textContent};
    }""", tmp_path)
    by_table = [r["label"] for r in res.records]
    assert seen["before"] == by_table
    mean = {r["label"]: r["mean"] for r in res.records}
    assert seen["asc"]["labels"] == sorted(by_table, key=mean.get) != by_table  # the click sorted the rows
    assert seen["asc"]["means"] == sorted(seen["asc"]["means"]) and seen["asc"]["sort"] == "ascending"
    assert seen["desc"]["labels"] == seen["asc"]["labels"][::-1] and seen["desc"]["sort"] == "descending"
    assert not seen["closed"] and seen["open"] and seen["shown"]  # the drill-down opened on a click
    values = {s["seed"]: s["value"] for s in res.seed_rows("resnet-56", "test_error")}
    assert [int(row[0]) for row in seen["seeds"]] == [0, 1, 2, 3, 4]
    for row in seen["seeds"]:
        assert f"{values[int(row[0])]:.2f}" in row  # each seed's test error at the reported epoch
        assert row[2] == "done" and row[4] == "6" and "cuda:0 (NVIDIA H200)" in row and "0.3.0+gab12cd34ef56" in row
    assert seen["log"].splitlines()[-1].startswith("epoch 30 of job") and seen["log"].endswith("<b>")
    assert seen["pwned"] is None and seen["scripts"] == 2  # neither "<script>" nor onerror ran
    assert seen["h1"] == SCRIPT_TITLE


# ----------------------------------------------------------------------------------------------
# LaTeX a paper can include


def uneven_results():
    """Five seeds per cell but four for plain-56, one cell with a protocol difference."""
    suite = make_suite(depths=(20, 56), seeds=range(5), epochs=6,
                       published=[Published("resnet-20", 8.75, kind="single", source="He 2016, Table 6 & 50% off")])
    suite = replace(suite, jobs=tuple(j for j in suite.jobs if not (j.label == "plain-56" and j.seed == 4)))
    return summarize(suite, fake_jobs(suite), fake_metrics(suite))


def test_latex_table_for_a_paper():
    from benchmark.report.render import render_latex

    res = uneven_results()
    tex = render_latex(res)
    assert tex.startswith("% ") and r"\usepackage{booktabs,amssymb}" in tex.splitlines()[1]
    assert r"\begin{table}[htbp]" in tex and r"\caption{Toy suite toy. Measured against tests." in tex
    assert r"\label{tab:toy}" in tex and r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"seeds (mean $\pm$ std, $n=5$)" in tex  # n in the header ...
    assert "(n=" not in tex  # ... never inside a cell
    r20 = next(line for line in tex.splitlines() if line.startswith("resnet-20"))
    mean, std = res.records[2]["mean"], res.records[2]["std"]
    assert f"${mean:.2f} \\pm {std:.2f}$" in r20  # mean ± std in math mode
    assert r20.rstrip(r" \\").split(" & ")[-1].split(" ")[0] in (r"$\checkmark$", r"$\times$", "?")
    p56 = next(line for line in tex.splitlines() if line.startswith("plain-56"))
    mark = re.search(r"\\pm [0-9.]+\$\\textsuperscript\{(\w+)\}", p56).group(1)  # a row with another n
    assert re.search(r"\\textsuperscript\{" + mark + r"\}~\$n=4\$ seeds in this row\\par", tex)
    assert "protocol: shortcut=A" in tex and r"He 2016, Table 6 \& 50\% off" in tex  # footnotes
    assert r"Verdicts: $\checkmark$ reproduces" in tex  # the legend under the table


PDFLATEX = shutil.which("pdflatex")


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (apt-get install texlive-latex-base "
                    "texlive-latex-recommended)")
def test_latex_compiles_with_pdflatex(written, five_seeds, tmp_path):
    from benchmark.report.render import render_latex

    out, _ = written
    (tmp_path / "evil.tex").write_text((out / "toy.tex").read_text())  # <script>, |, &, %, _, claims
    (tmp_path / "uneven.tex").write_text(render_latex(uneven_results()))
    (tmp_path / "five.tex").write_text(render_latex(five_seeds[0]))  # from a database: header lines
    (tmp_path / "paper.tex").write_text("\n".join([
        r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs,amssymb}",
        r"\begin{document}", r"\input{evil}", r"\input{uneven}", r"\input{five}",
        r"Table~\ref{tab:toy} says it.", r"\end{document}", ""]))
    proc = subprocess.run([PDFLATEX, "-halt-on-error", "-interaction=nonstopmode", "paper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes()[:5] == b"%PDF-"
