"""Every output format from hand-made results; escaping; the HTML in headless Chromium."""
from __future__ import annotations

import csv
import io
import json
import re
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


def test_html_escapes_and_is_self_contained(written):
    out, _ = written
    doc = (out / "toy.html").read_text()
    assert "<script>" not in doc and "<b>-20" not in doc and "<i>" not in doc
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in doc
    assert 'src="data:image/png;base64,' in doc
    assert "figures/" not in doc  # nothing linked: one file
    assert doc.count("<table") == 2


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
    assert tex_escape("50% & $x_1$ #2 {a} ~^\\") == \
        r"50\% \& \$x\_1\$ \#2 \{a\} \textasciitilde{}\textasciicircum{}\textbackslash{}"


def test_markdown_without_figures_has_no_curves_section():
    md = render_markdown(evil_results(), [], Path("."))
    assert "## Curves" not in md and "## Claims" in md


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (/usr/bin/chromium; "
                    "apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(written, tmp_path):
    out, _ = written
    # Check the images decoded: a tiny script (ours, not the suite's) writes what the browser saw.
    page = tmp_path / "page.html"
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "const p=document.createElement('pre');p.id='probe';p.textContent="
             "JSON.stringify({imgs:i.length,decoded:i.filter(x=>x.complete&&x.naturalWidth>0).length,"
             "tables:document.querySelectorAll('table').length,rows:document.querySelectorAll('#comparison tbody tr').length,"
             "scripts:document.scripts.length,title:document.title});document.body.appendChild(p);});</script>")
    page.write_text((out / "toy.html").read_text().replace("</body>", probe + "</body>"))
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert m, f"no probe output in the DOM Chromium dumped:\n{dom[:2000]}"
    seen = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert seen["tables"] == 2 and seen["rows"] == 3  # resnet-20 twice (best of 5, mean ± std) and one more cell
    assert seen["imgs"] == 3 and seen["decoded"] == 3  # error curves, the table as a figure, α / τ
    assert seen["scripts"] == 1  # only the probe: the suite's "<script>" title stayed text
    assert seen["title"] == EVIL_TITLE
